r"""Starting points: in-band examples first, spread apart; then the nearest.

A :class:`StartPool` holds candidate codes with their distance to the bands
and their encodings: dataset examples in the band (their codes from the
parameterization's ``inverse`` or, for a generator, a short inversion), or,
with a generator, a screen of prior draws evaluated in large no-grad batches.
Batches take their starting codes from it: in-band candidates in
farthest-point order (each the candidate farthest in E-space from every
start taken so far), then the candidates nearest the band.
"""

import math
from typing import Any, Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ...._utils.data import iter_batches
from ...._utils.distance import mean_pairwise_distance
from ...._utils.validation import check_finite_inputs
from .constraints import ConstraintSet
from .options import project_codes

__all__ = [
    "PoolChain",
    "StartPool",
    "build_pool",
    "data_baseline",
    "examine_data",
    "farthest_point_order",
    "invert",
    "screen_prior",
]

# In-band data examples kept for the baseline and the starts (the rest are
# counted): enough for farthest-point picks of any usual n_samples.
MAX_KEPT = 20000


def farthest_point_order(e: Tensor, k: int, taken: Optional[Tensor] = None) -> Tensor:
    """Indices of ``k`` rows of ``e``, each the farthest (Euclidean) from the
    rows picked before it and from ``taken``; the first is the row farthest
    from ``taken``, or from the mean of ``e`` when nothing is taken."""
    e = e.detach().double()
    n = e.shape[0]
    k = min(k, n)
    if k <= 0:
        return torch.empty(0, dtype=torch.long)
    if taken is not None and taken.shape[0] > 0:
        dist = torch.cdist(e, taken.detach().double().to(e.device)).min(1).values
    else:
        # The first pick is the row farthest from the mean (its distance set
        # to infinity so the loop takes it first).
        first = int((e - e.mean(0, keepdim=True)).norm(dim=1).argmax())
        dist = (e - e[first]).norm(dim=1)
        dist[first] = math.inf
    order = []
    for _ in range(k):
        i = int(dist.argmax())
        order.append(i)
        dist = torch.minimum(dist, (e - e[i]).norm(dim=1))
        dist[i] = -1.0
    return torch.tensor(order, dtype=torch.long)


def _spreads(inputs: Tensor, encodings: Tensor) -> dict:
    return {
        "encodings": mean_pairwise_distance(encodings),
        "inputs": mean_pairwise_distance(inputs),
    }


class InBandData:
    """What a pass over the user's data found: the in-band examples (up to
    ``MAX_KEPT``), their encodings and how many examples were looked at."""

    def __init__(
        self, inputs: Tensor, encodings: Tensor, n_examined: int, n_in_band: int
    ):
        self.inputs, self.encodings = inputs, encodings
        self.n_examined, self.n_in_band = n_examined, n_in_band


def examine_data(
    data: Any,
    constraints: ConstraintSet,
    encode: Callable[[Tensor], Tensor],
    batch_size: int,
    device: torch.device,
) -> InBandData:
    """Stream ``data`` (a tensor, a tuple whose first tensor is the inputs, or
    a DataLoader of ``x`` or ``(x, ...)`` batches) through the model and keep
    the examples inside every band."""
    kept_x: List[Tensor] = []
    kept_e: List[Tensor] = []
    n_examined = n_in_band = n_kept = 0
    if isinstance(data, tuple) and len(data) > 0 and torch.is_tensor(data[0]):
        data = data[0]
    for xs, _ in iter_batches(data, None, batch_size, "data", check_finite=False):
        check_finite_inputs("data", xs[0])
        x = xs[0].to(device)
        with torch.no_grad():
            ok = constraints.inside(constraints.values(x))
        n_examined += x.shape[0]
        n_in_band += int(ok.sum())
        room = MAX_KEPT - n_kept
        if room > 0 and bool(ok.any()):
            x_ok = x[ok][:room]
            with torch.no_grad():
                kept_e.append(encode(x_ok).double().cpu())
            kept_x.append(x_ok.detach().cpu())
            n_kept += x_ok.shape[0]
    if n_examined == 0:
        raise ValueError("data holds no examples")
    inputs = torch.cat(kept_x) if kept_x else torch.empty(0)
    encodings = torch.cat(kept_e) if kept_e else torch.empty(0, 0)
    return InBandData(inputs, encodings, n_examined, n_in_band)


def data_baseline(found: InBandData, n: int, gen: torch.Generator) -> dict:
    """The dataset baseline of a sample of ``n``: spreads of a random pick and
    of a farthest-point pick of ``n`` in-band examples (all of them when
    fewer), in the encodings and in input space."""
    out = {
        "n_examined": found.n_examined,
        "n_in_band": found.n_in_band,
        "covers_band": found.n_in_band >= n,
    }
    m = found.inputs.shape[0]
    if m == 0:
        return out
    pick = torch.randperm(m, generator=gen)[:n]
    out["random"] = _spreads(found.inputs[pick], found.encodings[pick])
    far = farthest_point_order(found.encodings, n)
    out["farthest"] = _spreads(found.inputs[far], found.encodings[far])
    return out


def invert(
    param: nn.Module,
    x: Tensor,
    gen: torch.Generator,
    code_bound: Optional[float],
    steps: int = 100,
    lr: float = 0.05,
) -> Tensor:
    """Codes whose image is ``x``: the parameterization's ``inverse`` where it
    has one, else a short least-squares inversion of the generator (Adam on
    :math:`\\|G(c) - x\\|^2` from prior draws, codes kept in the code ball)."""
    if hasattr(param, "inverse"):
        with torch.no_grad():
            return param.inverse(x)
    codes = param.random_codes(x.shape[0], generator=gen, device=x.device)
    codes = codes.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([codes], lr=lr)
    for _ in range(steps):
        loss = (param(codes) - x).pow(2).flatten(1).sum(1).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        project_codes(codes, code_bound)
    return codes.detach()


def screen_prior(
    param: nn.Module,
    constraints: ConstraintSet,
    encode: Callable[[Tensor], Tensor],
    n_screen: int,
    keep: int,
    chunk: int,
    gen: torch.Generator,
    device: torch.device,
    extra: Optional[tuple] = None,
):
    """Evaluate ``n_screen`` prior draws in no-grad chunks and keep the codes,
    distances to the bands and encodings of the in-band draws and of the
    ``keep`` nearest others (distance 0 means inside); ``extra`` candidates
    ``(codes, distances, encodings)`` compete with them."""
    best_codes, best_dist, best_enc = extra if extra is not None else (None,) * 3
    for start in range(0, n_screen, chunk):
        c = param.random_codes(
            min(chunk, n_screen - start), generator=gen, device=device
        )
        with torch.no_grad():
            x = param(c)
            d = constraints.distance(constraints.values(x))
            e = encode(x).double()
        if best_codes is not None:
            c = torch.cat([best_codes, c])
            d = torch.cat([best_dist, d])
            e = torch.cat([best_enc, e])
        best_codes, best_dist, best_enc = _nearest(c, d, e, keep)
    if n_screen == 0 and best_codes is not None:
        best_codes, best_dist, best_enc = _nearest(
            best_codes, best_dist, best_enc, keep
        )
    return best_codes, best_dist, best_enc


def _nearest(c: Tensor, d: Tensor, e: Tensor, keep: int):
    """The in-band candidates and the ``keep`` nearest others."""
    n_in = int((d <= 0).sum())
    order = torch.argsort(d, stable=True)[: max(keep, n_in)]
    return c[order], d[order], e[order]


class StartPool:
    """Starting codes for the batches: in-band candidates in farthest-point
    order, then the rest by distance to the bands.

    Args:
        codes: ``(P, *code_shape)`` candidate codes, or None when they are
            made on demand by ``make_codes`` (data examples needing an
            inversion).
        distance: ``(P,)`` distance of each candidate to the bands.
        encodings: ``(P, d)`` their encodings.
        make_codes: ``indices -> codes`` for candidates without codes yet.
    """

    def __init__(
        self,
        distance: Tensor,
        encodings: Tensor,
        codes: Optional[Tensor] = None,
        make_codes: Optional[Callable[[Tensor], Tensor]] = None,
        source: str = "screen",
    ) -> None:
        inside = distance <= 0
        far = farthest_point_order(encodings[inside], int(inside.sum()))
        in_idx = torch.nonzero(inside).flatten()[far]
        out_idx = torch.nonzero(~inside).flatten()
        out_idx = out_idx[torch.argsort(distance[out_idx], stable=True)]
        self.order = torch.cat([in_idx, out_idx])
        self.codes, self.make_codes, self.source = codes, make_codes, source
        self.n_inside = int(inside.sum())
        self.used = 0

    def __len__(self) -> int:
        return self.order.shape[0] - self.used

    def take(self, k: int) -> Optional[Tensor]:
        """The next ``k`` starting codes (None when fewer than ``k`` are left)."""
        if len(self) < k:
            return None
        idx = self.order[self.used : self.used + k]
        self.used += k
        if self.codes is not None:
            return self.codes[idx.to(self.codes.device)]
        return self.make_codes(idx)


class PoolChain:
    """Several :class:`StartPool` s used one after the other (data first,
    then the prior screen); ``source`` names the pool of the latest take."""

    def __init__(self, pools: Sequence[StartPool]) -> None:
        self.pools = [p for p in pools if p is not None]
        self.n_inside = sum(p.n_inside for p in self.pools)
        self.source = self.pools[0].source if self.pools else "random"

    def take(self, k: int) -> Optional[Tensor]:
        for p in self.pools:
            codes = p.take(k)
            if codes is not None:
                self.source = p.source
                return codes
        return None


def build_pool(
    param: nn.Module,
    constraints: ConstraintSet,
    encode: Callable[[Tensor], Tensor],
    data: Any,
    n_screen: int,
    n_samples: int,
    batch_size: int,
    gen: torch.Generator,
    device: torch.device,
    code_bound: Optional[float],
):
    """The starting pool of a run and the dataset baseline.

    ``data``'s in-band examples come first (farthest-point order); a prior
    screen of ``n_screen`` draws tops them up when they are fewer than
    ``n_samples``. Returns ``(pool or None, baseline dict or None, notes)``.
    """
    pools: List[StartPool] = []
    baseline, notes = None, []
    extra = None  # inverted data examples, scored with the screen's draws
    if data is not None:
        found = examine_data(data, constraints, encode, max(batch_size, 256), device)
        baseline = data_baseline(found, n_samples, gen)
        inputs = found.inputs
        if inputs.shape[0] > 0 and hasattr(param, "inverse"):
            # Exact codes: the in-band examples themselves start.
            pools.append(
                StartPool(
                    torch.zeros(inputs.shape[0]),
                    found.encodings,
                    make_codes=lambda idx: invert(
                        param, inputs[idx].to(device), gen, code_bound
                    ),
                    source="data",
                )
            )
        elif inputs.shape[0] > 0:
            # A generator: its inversion of an example is only near it, so the
            # inverted examples are scored like prior draws and compete with
            # the screen for the starts.
            pick = farthest_point_order(found.encodings, 2 * n_samples)
            codes = invert(param, inputs[pick].to(device), gen, code_bound)
            with torch.no_grad():
                x = param(codes)
                dist = constraints.distance(constraints.values(x))
                extra = (codes, dist, encode(x).double())
        if baseline["covers_band"]:
            far = baseline["farthest"]["encodings"]
            notes.append(
                f"the data already covers the band: {found.n_in_band} of "
                f"{found.n_examined} examples are in it (n_samples={n_samples}); "
                f"a farthest-point pick of them has spread {far:.4g} in the "
                "encodings (data_baseline)"
            )
    n_inside = sum(p.n_inside for p in pools)
    if (n_screen > 0 and n_inside < n_samples) or extra is not None:
        codes, dist, enc = screen_prior(
            param,
            constraints,
            encode,
            n_screen,
            n_samples - n_inside,
            min(max(n_screen, 1), max(8 * batch_size, 256)),
            gen,
            device,
            extra,
        )
        source = "screen" if extra is None else ("data+screen" if n_screen else "data")
        pools.append(StartPool(dist, enc, codes=codes, source=source))
    return (PoolChain(pools) if pools else None), baseline, notes
