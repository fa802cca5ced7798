r"""The sampling loop: batches of ``K`` codes optimised for spread inside the
bands.

One batch: start codes (random, the caller's, or the previous batch's
feasible codes plus noise), then Adam steps on
:math:`-w\,\text{spread}_i + \text{penalty}_i` (the spread from
:class:`~.spread.RunningSpread`, the penalty from a
:class:`~.solvers.ConstraintSolver`), with stuck samples restarted every
``restart_every`` steps, until every sample is inside the band (after
``min_steps``) or ``max_steps``. The loop knows nothing about how the
constraints are enforced or how the spread is computed.
"""

import inspect
import math
import time
import warnings
from typing import Any, Callable, List, Optional, Sequence

import torch
from torch import Tensor, nn

from ...._utils.graph_memory import graph_bytes_per_example, tensor_bytes
from ...._utils.memory import check_memory
from ...._utils.progress import progress
from .constraints import ConstraintSet
from .options import SamplerOptions, project_codes
from .result import BandUnreachableWarning, InverseSetResult
from .solvers import make_solver
from .spread import RunningSpread
from .starts import StartPool

__all__ = ["InverseSetLoop", "apply_transform", "check_batch_memory", "encode"]

# Safety factor of the reachability check's extrapolation.
SLACK = 3.0
# Starts that come spread apart (farthest-point picks of data or of screened
# prior draws).
POOL_SOURCES = ("data", "screen", "data+screen")


def apply_transform(transform: Callable, x: Tensor, gen: torch.Generator) -> Tensor:
    """``transform(x)``, passing ``generator=gen`` where it takes one."""
    forward = getattr(transform, "forward", transform)
    try:
        takes_gen = "generator" in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        takes_gen = False
    return transform(x, generator=gen) if takes_gen else transform(x)


def encode(x: Tensor, encoder: Callable) -> Tensor:
    """``(N, d)`` encodings; the encoder's own errors go up unchanged."""
    try:
        e = encoder(x)
    except Exception as err:
        if hasattr(err, "add_note"):  # Python >= 3.11
            err.add_note("(raised by the encoder)")
        raise
    n = (x[0] if isinstance(x, tuple) else x).shape[0]
    if not torch.is_tensor(e) or e.dim() < 1 or e.shape[0] != n:
        raise ValueError(
            "encoder must return one vector per input, got "
            f"{getattr(e, 'shape', type(e))} for {n} inputs"
        )
    if not bool(torch.isfinite(e).all()):
        raise ValueError(
            "encoder returned NaN or infinite encodings: the spread cannot be "
            "measured in them"
        )
    return e.reshape(e.shape[0], -1)


def _cpu(x: Any) -> Any:
    return tuple(t.cpu() for t in x) if isinstance(x, tuple) else x.cpu()


def _cat(parts: List[Any]) -> Any:
    """Concatenate batches of tensors, or of tuples of tensors part by part."""
    if isinstance(parts[0], tuple):
        return tuple(torch.cat(p) for p in zip(*parts))
    return torch.cat(parts)


def check_generated(x: Any, input_shape: Optional[Sequence[int]]) -> None:
    if isinstance(x, tuple) and all(torch.is_tensor(t) for t in x):
        return  # several inputs (attribute with a tuple): shapes are the user's
    if not torch.is_tensor(x):
        raise ValueError("generator must return a tensor")
    if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"generator output shape {tuple(x.shape[1:])} does not match "
            f"input_shape {tuple(input_shape)}"
        )


def check_batch_memory(
    param: nn.Module,
    constraints: ConstraintSet,
    encoder: Callable,
    device: torch.device,
    batch_name: str,
    batch_value: Any,
    batch: int,
    n_samples: int = 0,
    input_shape: Optional[Sequence[int]] = None,
) -> None:
    """Refuse a batch (or a result) that would not fit, before allocating it.

    The graph of one example is measured on a probe of two codes drawn from a
    generator of their own (the seeded draws are untouched).
    """
    probe = param.random_codes(
        2, generator=torch.Generator().manual_seed(0), device=device
    )
    with torch.no_grad():
        check_generated(param(probe), input_shape)

    def graph(codes: Tensor):
        x = param(codes)
        return constraints.values(x, grad=True), encode(x, encoder)

    per_example = graph_bytes_per_example(graph, probe)
    code_bytes = tensor_bytes(probe[:1])
    # Forward graph, its gradients in the backward pass, Adam's two moments
    # and the gradient of the codes.
    check_memory(
        batch_name, batch_value, batch * (2 * per_example + 4 * code_bytes), device
    )
    if n_samples:
        with torch.no_grad():
            x = param(probe[:1])
            e = encode(x, encoder)
        row = tensor_bytes(x) + code_bytes + tensor_bytes(e) + 8 * len(constraints)
        # Kept per batch on the CPU, then concatenated once (two copies).
        check_memory("n_samples", n_samples, 2 * n_samples * row)


class InverseSetLoop:
    """One run of the sampler (see the module docstring).

    Args:
        constraints: the bands, with the model.
        param: codes -> inputs (``code_shape``, ``random_codes``).
        transform: random input transforms while optimising, or None.
        encoder: inputs -> ``(N, d)`` encodings.
        options: checked :class:`~.options.SamplerOptions`.
        code_bound: radius of the code ball, or None.
        gen: the seeded generator every random draw comes from.
        device: where codes live (the model's device).
        show_progress: show a tqdm bar over optimisation steps.
    """

    def __init__(
        self,
        constraints: ConstraintSet,
        param: nn.Module,
        transform: Optional[Callable],
        encoder: Callable,
        options: SamplerOptions,
        code_bound: Optional[float],
        gen: torch.Generator,
        device: torch.device,
        show_progress: bool = False,
    ) -> None:
        self.constraints, self.param, self.transform = constraints, param, transform
        self.encoder, self.options, self.code_bound = encoder, options, code_bound
        self.gen, self.device, self.show_progress = gen, device, show_progress
        self.transform_gen = torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,), generator=gen))
        )
        self.solver = make_solver(options)
        self.spread = RunningSpread(options.repel_from)
        # Feasible codes of the latest batch that had any, and what the solver
        # keeps of them: later batches and restarts start from them.
        self.pool_codes: Optional[Tensor] = None
        self.pool_state: Any = None
        self.probe_message: Optional[str] = None
        self.bar: Any = None

    # ------------------------------------------------------------ the run

    def run(
        self,
        n_samples: int,
        batch_size: int,
        initial_codes: Optional[Tensor] = None,
        input_shape: Optional[Sequence[int]] = None,
        pool: Optional[StartPool] = None,
    ) -> InverseSetResult:
        """``n_samples`` samples, ``batch_size`` at a time. Batches start from
        ``initial_codes`` (sliced), else from ``pool`` while it lasts, else
        from the previous batch's feasible codes (random codes before any)."""
        o = self.options
        batch_size = min(batch_size, n_samples)
        start_time = time.perf_counter()
        parts: List[dict] = []
        n_batches = math.ceil(n_samples / batch_size)
        sources: List[str] = []
        with progress(
            n_batches * o.max_steps, self.show_progress, "NeuronInverseSet steps"
        ) as bar:
            self.bar = bar
            for b in range(n_batches):
                k = min(batch_size, n_samples - b * batch_size)
                given, source = (
                    None,
                    "warm" if self.pool_codes is not None else "random",
                )
                if initial_codes is not None:
                    given = initial_codes[b * batch_size : b * batch_size + k]
                    source = "given"
                elif pool is not None:
                    given = pool.take(k)
                    source = pool.source if given is not None else source
                sources.append(source)
                codes, state = self._start(k, given)
                if b == 0:
                    self._calibrate(codes, input_shape)
                # The reachability check watches a first batch that started
                # from the sampler's own draws; given starts (attribute's
                # inputs) may sit where gradients vanish for a while.
                probe = b == 0 and source != "given"
                # Reaching first only pays for starts already spread apart.
                reach_first = o.reach_first and source in POOL_SOURCES
                codes, steps, state = self._optimise(
                    codes, state, probe=probe, reach_first=reach_first
                )
                parts.append(self._finish(codes, steps, state))
                done = sum(int(p["feasible"].sum()) for p in parts)
                bar.set_postfix(
                    batch=f"{b + 1}/{n_batches}", in_band=f"{done}/{n_samples}"
                )
        acts = torch.cat([p["acts"] for p in parts])
        return InverseSetResult(
            inputs=_cat([p["inputs"] for p in parts]),
            codes=torch.cat([p["codes"] for p in parts]),
            activations=acts[:, 0].clone(),
            constraint_activations=acts,
            feasible=self.constraints.inside(acts),
            encodings=torch.cat([p["encodings"] for p in parts]),
            steps=torch.cat([p["steps"] for p in parts]),
            activation_ranges=self.constraints.ranges,
            constraint_method=o.constraint_method,
            batch_size=batch_size,
            elapsed_s=time.perf_counter() - start_time,
            starts=sorted(set(sources), key=sources.index),
            notes=[self.probe_message] if self.probe_message else [],
        )

    # ------------------------------------------------------- one batch

    def _start(self, k: int, given: Optional[Tensor]):
        """Starting codes and solver state of a batch of ``k``."""
        device, m = self.device, len(self.constraints)
        warm = given is None and self.pool_codes is not None
        if given is not None:
            init = given
        elif not warm:
            init = self.param.random_codes(k, generator=self.gen, device=device)
        else:
            noise = self.param.random_codes(k, generator=self.gen, device=device)
            src = torch.arange(k, device=device) % self.pool_codes.shape[0]
            init = self.pool_codes[src] + self.options.init_noise * noise
        codes = init.detach().clone().to(device).requires_grad_(True)
        inherit = self.solver.inherit(self.pool_state, src) if warm else None
        return codes, self.solver.start(k, m, device, inherit)

    def _calibrate(self, codes: Tensor, input_shape) -> None:
        with torch.no_grad():
            x = self.param(codes)
        check_generated(x, input_shape)
        self.spread.calibrate(encode(x, self.encoder))

    def _optimise(
        self, codes: Tensor, state: Any, probe: bool = False, reach_first=False
    ):
        o, cs = self.options, self.constraints
        opt = torch.optim.Adam([codes], lr=o.lr)
        last_ok = codes.detach().clone()
        # Samples that never reach the band are returned at their least
        # violating iterate, so the work done on them is never thrown away.
        best = codes.detach().clone()
        best_dist = torch.full((codes.shape[0],), math.inf, device=self.device)
        ever = torch.zeros(codes.shape[0], dtype=torch.bool, device=self.device)
        step, feasible_at, marks, all_in = 0, None, [], False
        for step in range(o.max_steps + 1):
            x = self.param(codes)
            if self.transform is not None:
                x_in = apply_transform(self.transform, x, self.transform_gen)
                acts = cs.values(x_in, grad=True)
                with torch.no_grad():
                    clean = cs.values(x.detach())
            else:
                acts = cs.values(x, grad=True)
                clean = acts.detach()
            inside = cs.inside(clean, target=True)
            last_ok[inside] = codes.detach()[inside]
            ever |= inside
            dist = cs.distance(clean)
            if probe and step in (0, o.probe_steps // 2):
                marks.append(float(torch.minimum(best_dist, dist).min()))
            elif probe and step == o.probe_steps and not bool(ever.any()):
                self._check_reachable(*marks, float(best_dist.min()), step)
            closer = dist < best_dist
            best[closer], best_dist[closer] = codes.detach()[closer], dist[closer]
            all_in = all_in or bool(inside.all())
            if feasible_at is None and step >= o.min_steps and bool(inside.all()):
                # Every sample is in the band: spend spread_steps more on the
                # spread, the constraint kept (the last feasible iterate of each
                # sample is what is returned).
                feasible_at = step
            if step == o.max_steps or (
                feasible_at is not None and step >= feasible_at + o.spread_steps
            ):
                break
            g = cs.violations(acts)
            spread = self.spread(encode(x, self.encoder))
            # With reach_first the spread term waits until every sample of the
            # batch is in the band (the starts are already spread apart).
            w = 0.0 if reach_first and not all_in else o.diversity_weight
            loss = (-w * spread + self.solver.penalty(state, g)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            project_codes(codes, self.code_bound)
            state = self.solver.update(state, g.detach(), step)
            if o.restart_every and (step + 1) % o.restart_every == 0:
                state = self._restart(codes, opt, state, ~ever, last_ok[ever])
            if self.bar is not None:
                self.bar.update(1)
        if self.bar is not None:
            self.bar.update(o.max_steps - step)  # the unused budget of the batch
        final = torch.where(ever.reshape(-1, *([1] * (codes.dim() - 1))), last_ok, best)
        return final, step, state

    def _check_reachable(
        self, d_start: float, d_half: float, d_now: float, steps: int
    ) -> None:
        """Warn at once when the first batch, ``steps`` steps in, has no sample
        in the band and its progress would not get one there by ``max_steps``:
        while more than one band width away, the decrease of the distance over
        the second half of the steps so far, extrapolated (geometrically when
        it slowed down from the first half, linearly otherwise) and times
        ``SLACK``, falls short of the distance left."""
        o = self.options
        first, second = d_start - d_half, d_half - d_now
        windows = (o.max_steps - steps) / max(steps - steps // 2, 1)
        if d_now <= 1.0:  # within a band width: the growing penalty gets there
            return
        if 0 <= second < first:  # slowing down: a geometric series of windows
            q = second / first
            future = second * min(q / (1 - q), windows)
        else:
            future = max(second, 0.0) * windows
        # The penalty keeps growing, so progress may speed up again: a safety
        # factor on the extrapolation.
        if d_now <= SLACK * future:
            return
        self.probe_message = (
            f"the band(s) may be unreachable: after {steps} steps no sample of the "
            f"first batch is inside, and the distance to the band(s) (in band "
            f"widths) went from {d_start:.3g} to {d_half:.3g} to {d_now:.3g}; "
            f"at that pace {o.max_steps} steps would not reach them (sampling "
            "goes on)"
        )
        warnings.warn(self.probe_message, BandUnreachableWarning, stacklevel=2)

    def _restart(self, codes, opt, state, stuck: Tensor, batch_ok: Tensor):
        """Move the ``stuck`` codes to new starting points (in place)."""
        sources = [
            t for t in (batch_ok, self.pool_codes) if t is not None and t.shape[0] > 0
        ]
        # Without a feasible sample to restart from, the samples keep climbing:
        # a restart from fresh random codes would throw their progress away.
        if not bool(stuck.any()) or not sources:
            return state
        k = codes.shape[0]
        noise = self.param.random_codes(k, generator=self.gen, device=codes.device)
        cands = torch.cat(sources)
        pick = torch.randint(cands.shape[0], (k,), generator=self.gen)
        new = cands[pick.to(codes.device)] + self.options.init_noise * noise
        mask = stuck.reshape(-1, *([1] * (codes.dim() - 1)))
        with torch.no_grad():
            codes.copy_(torch.where(mask, new, codes))
            adam = opt.state.get(codes, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in adam:
                    adam[key].masked_fill_(mask.expand_as(adam[key]), 0.0)
        return self.solver.reset(state, stuck)

    def _finish(self, codes: Tensor, steps: int, state: Any) -> dict:
        k = codes.shape[0]
        with torch.no_grad():
            x = self.param(codes)
            acts = self.constraints.values(x)
            e = encode(x, self.encoder).double()
        self.spread.add(e)
        ok = self.constraints.inside(acts)
        if bool(ok.any()):
            self.pool_codes, self.pool_state = codes[ok], self.solver.keep(state, ok)
        self.solver.finish(state)
        return {
            "feasible": ok.cpu(),
            "inputs": _cpu(x),
            "codes": codes.cpu(),
            "acts": acts.cpu(),
            "encodings": e.float().cpu(),
            "steps": torch.full((k,), steps, dtype=torch.long),
        }
