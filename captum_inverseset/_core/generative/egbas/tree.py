r"""Step 2 of E-GBAS: a boundary-constrained rapidly-exploring random tree in
the generative region of the query.

A candidate costs what the region test needs and nothing more: the
generator's forward up to the layer (its sign pattern) and a nearest-node
search. Each pass extends many tree nodes at once: one forward pass for all
candidates, one chunked ``torch.cdist`` for all nearest nodes, and the tree
kept on tensors. The generator's outputs are computed afterwards, for the
accepted latents only, in batches.
"""

import math
from dataclasses import dataclass
from typing import Callable, Optional, Tuple

import torch
from torch import Tensor

from ...._utils.progress import progress
from ...._utils.validation import check_positive_float, make_generator
from .region import LayerSplit, SignPattern

__all__ = [
    "FirstPass",
    "Proposal",
    "QueryAndFirstPass",
    "Tree",
    "TreeSettings",
    "first_pass",
    "grow_tree",
    "norm_bounds",
]

# A pass proposes about two candidates per tree node (about half are accepted,
# so the tree roughly doubles per pass and keeps several generations, which is
# what lets it spread) and at least this many (fewer for fewer than 64
# samples: half of them).
MIN_PASS = 32
GROWTH = 2.0
# Distances held at once by the nearest-node search (targets x nodes).
_CDIST_ELEMENTS = 2**22


@dataclass
class TreeSettings:
    """The tree's arguments, checked by :meth:`EGBAS.sample`."""

    n_samples: int
    step_size: float
    batch_size: int
    exploration_scale: float
    norm_bounds: Tuple[float, float]
    max_iterations: int
    n_step_halvings: int

    @classmethod
    def for_query(cls, z0: Tensor, latent_bound=None, **kwargs) -> "TreeSettings":
        """The settings of a tree rooted at the formatted query ``z0``
        (``latent_bound`` checked against it)."""
        bounds = norm_bounds(
            latent_bound, z0.flatten(1), z0[0].numel(), check_positive_float
        )
        return cls(norm_bounds=bounds, **kwargs)

    def largest_pass(self) -> int:
        """The most candidates one pass can hold."""
        return min(self.batch_size, max(MIN_PASS, self.n_samples + 1))


def _nearest(targets: Tensor, nodes: Tensor, nodes_sq: Tensor) -> Tensor:
    r"""Index of each target's nearest node (L2), in chunks of targets:
    :math:`\arg\min_j \|n_j\|^2 - 2\, t \cdot n_j` (the squared distance
    less :math:`\|t\|^2`), one matrix product per chunk, as ``torch.cdist``
    computes it for large inputs."""
    chunk = max(1, _CDIST_ELEMENTS // max(1, nodes.shape[0]))
    nodes_t = nodes.T
    if targets.shape[0] <= chunk:
        return torch.addmm(nodes_sq, targets, nodes_t, alpha=-2).argmin(dim=1)
    return torch.cat(
        [
            torch.addmm(
                nodes_sq, targets[start : start + chunk], nodes_t, alpha=-2
            ).argmin(dim=1)
            for start in range(0, targets.shape[0], chunk)
        ]
    )


@dataclass
class Tree:
    """What :func:`grow_tree` found besides the root.

    ``latents`` ``(n, *latent_shape)`` (``n < n_samples`` when the tree could
    not grow), ``parents`` ``(n,)`` (``-1`` is the root), and ``outputs``
    ``(n, *output_shape)``: the generator's outputs of the latents whose
    candidate pass ran the whole generator (``has_output``); the others are
    computed afterwards.
    """

    latents: Tensor
    parents: Tensor
    outputs: Tensor
    has_output: Tensor
    n_proposed: int
    n_passes: int


@dataclass
class Proposal:
    """One pass's candidates: ``code`` (base node * halvings + retry level),
    the displacement ``disp`` from the base node, the ``candidates`` and, with
    norm bounds, the indices of those inside them (``tested``; None: all)."""

    code: Tensor
    disp: Tensor
    candidates: Tensor
    tested: Optional[Tensor]

    @property
    def batch(self) -> Tensor:
        """The candidates that go through the generator."""
        if self.tested is None:
            return self.candidates
        return self.candidates[self.tested]


@dataclass
class FirstPass:
    """The first pass's proposal, and the layer outputs ``pre`` and outputs
    ``out`` of its tested candidates (evaluated with the query)."""

    proposal: Proposal
    pre: Tensor
    out: Tensor


def _pass_size(s: TreeSettings, n_nodes: int, need: int, rate: float) -> int:
    # A small request gets smaller first passes, so that its tree still has a
    # few generations (a first pass of 32 would give 15 samples one parent).
    floor = min(MIN_PASS, max(4, math.ceil(s.n_samples / 2)))
    return min(
        s.batch_size,
        max(floor, math.ceil(GROWTH * n_nodes)),
        max(floor, math.ceil(1.25 * need / rate)),
    )


def _runs_whole(share: Optional[float], rate: float) -> bool:
    return share is not None and (1.0 - share) / rate < 1.0


def _extend(
    n: int, root: Tensor, nodes: Tensor, nodes_sq: Tensor, s: TreeSettings, gen
) -> Tuple[Tensor, Tensor, Tensor]:
    """``n`` new extensions of the tree ``nodes``: their codes (nearest node
    * halvings, retry level 0), steps and candidates."""
    noise = torch.randn(n, root.shape[1], generator=gen)
    targets = root + s.exploration_scale * noise.to(root.device, root.dtype)
    nearest = _nearest(targets, nodes, nodes_sq)
    start = nodes[nearest]
    direction = targets - start
    length = direction.norm(dim=1, keepdim=True)
    direction *= length.clamp(max=s.step_size).div_(length.clamp_min(1e-30))
    return nearest * s.n_step_halvings, direction, start + direction


def _within_bounds(candidates: Tensor, s: TreeSettings) -> Optional[Tensor]:
    low, high = s.norm_bounds
    if not (low > 0 or math.isfinite(high)):
        return None
    norms = candidates.norm(dim=1)
    return ((norms >= low) & (norms <= high)).nonzero().squeeze(1)


def first_pass(
    z0: Tensor, settings: TreeSettings, share: Optional[float], gen
) -> Optional[Proposal]:
    """The first pass's proposal when it runs the whole generator (see
    :func:`grow_tree`), so that its candidates can share the query's forward
    pass; None otherwise. Draws from ``gen`` what the first pass would."""
    if not _runs_whole(share, 0.5):
        return None
    root = z0.reshape(1, -1)
    size = _pass_size(settings, 1, settings.n_samples, 0.5)
    code, disp, candidates = _extend(
        size, root, root, root.pow(2).sum(dim=1), settings, gen
    )
    return Proposal(code, disp, candidates, _within_bounds(candidates, settings))


class QueryAndFirstPass:
    """The query's forward pass, ``z0 -> (h(z0), G(z0))``, for
    :meth:`EGBAS.sample`. It makes the tree's ``settings`` (from
    ``settings_of(z0)``) and random ``gen`` (from ``seed``), and when the
    first pass runs the whole generator (:func:`first_pass`) its candidates
    go through the generator in the same forward pass as the query
    (``first``, else None): one call of the generator less per tree."""

    def __init__(self, split: LayerSplit, settings_of: Callable, seed) -> None:
        self.split, self.settings_of, self.seed = split, settings_of, seed
        self.settings: Optional[TreeSettings] = None
        self.gen: Optional[torch.Generator] = None
        self.first: Optional[FirstPass] = None

    def __call__(self, z0: Tensor) -> Tuple[Tensor, Tensor]:
        self.settings = self.settings_of(z0)
        self.gen = make_generator(self.seed)
        share = self.split.measure_cost(z0)
        proposal = first_pass(z0, self.settings, share, self.gen)
        if proposal is None:
            return self.split.run(z0)
        rows = proposal.batch.reshape(-1, *z0.shape[1:])
        pre, out = self.split.run(torch.cat([z0, rows]))
        self.first = FirstPass(proposal, pre[1:], out[1:])
        return pre[:1], out[:1]


def grow_tree(
    split: LayerSplit,
    z0: Tensor,
    out0: Tensor,
    region: SignPattern,
    settings: TreeSettings,
    gen: torch.Generator,
    show_progress: bool,
    first: Optional[FirstPass] = None,
) -> Tree:
    r"""Grow the tree rooted at ``z0`` (whose output is ``out0``).

    Each pass:

    1. proposes about two candidates per node (``MIN_PASS``, or half of
       ``n_samples`` if that is less, to ``batch_size``), first the retries
       of the previous pass, then new ones:
       a target :math:`t \sim \mathcal{N}(z_0, s^2 I)`, its nearest node
       :math:`z_n`, and :math:`z_n + \min(\eta, \|t - z_n\|)\, u` with
       :math:`u = (t - z_n) / \|t - z_n\|`;
    2. evaluates every candidate inside ``norm_bounds`` in one forward pass
       stopped at the layer and adds those with the query's sign pattern;
    3. retries each rejected candidate at half its step in the next pass, up
       to ``n_step_halvings - 1`` times, so the tree still grows near a
       boundary (the longest in-region step is the one kept).

    Stopping at the layer saves the layers above it for every candidate, but
    each accepted latent then needs a second, whole forward pass for its
    output. When the layer is close to the output (``split.partial_share``,
    the FLOP share of the generator up to the layer) and few candidates are
    rejected, running the whole generator on the candidates and keeping the
    accepted ones' outputs is cheaper: with :math:`c` candidates per accepted
    sample (the acceptance so far, starting from 1/2) and FLOP share
    :math:`p`, a pass runs the whole generator when :math:`c (1 - p) < 1`.
    When the first pass does (:func:`first_pass`), its candidates go through
    the generator in the query's own forward pass (``first``).
    """
    s = settings
    latent_shape = z0.shape[1:]
    dim = z0[0].numel()
    root = z0.reshape(1, dim)
    device, dtype = root.device, root.dtype
    halvings = s.n_step_halvings
    nodes = torch.empty(s.n_samples + 1, dim, device=device, dtype=dtype)
    nodes[0] = root[0]
    nodes_sq = torch.empty(s.n_samples + 1, device=device, dtype=dtype)
    nodes_sq[0] = root.pow(2).sum()
    parents = torch.empty(s.n_samples, dtype=torch.long, device=device)
    outputs = out0.new_empty((s.n_samples, *out0.shape[1:]))
    has_output = torch.zeros(s.n_samples, dtype=torch.bool, device=device)
    share = split.partial_share
    # Retries of rejected candidates: code = base node * halvings + level,
    # and the displacement from the base node (halved at each retry).
    r_code = torch.empty(0, dtype=torch.long, device=device)
    r_disp = torch.empty(0, dim, device=device, dtype=dtype)
    n_nodes, n_proposed, n_passes, n_accepted = 1, 0, 0, 0
    with progress(s.n_samples, show_progress, "E-GBAS tree") as bar:
        while n_nodes - 1 < s.n_samples and n_passes < s.max_iterations:
            n_passes += 1
            need = s.n_samples - (n_nodes - 1)
            # The acceptance so far tells how many candidates the rest needs.
            rate = (n_accepted + 1) / (n_proposed + 2)
            # (the first pass, when given, is one that runs the whole generator)
            whole = _runs_whole(share, rate)
            n_retry, evaluated = 0, None
            if n_passes == 1 and first is not None:
                prop, evaluated = first.proposal, (first.pre, first.out)
            else:
                # The pending retries first, then new extensions.
                size = _pass_size(s, n_nodes, need, rate)
                n_retry = min(size, r_code.shape[0])
                parts = []
                if n_retry:
                    code, disp = r_code[:n_retry], r_disp[:n_retry]
                    r_code, r_disp = r_code[n_retry:], r_disp[n_retry:]
                    base = torch.div(code, halvings, rounding_mode="floor")
                    parts.append((code, disp, nodes[base] + disp))
                if size > n_retry:
                    tree_nodes = nodes[:n_nodes], nodes_sq[:n_nodes]
                    parts.append(_extend(size - n_retry, root, *tree_nodes, s, gen))
                if len(parts) == 1:
                    code, disp, candidates = parts[0]
                else:
                    code, disp, candidates = (torch.cat(t) for t in zip(*parts))
                prop = Proposal(code, disp, candidates, _within_bounds(candidates, s))
            code, disp, candidates, tested = (
                prop.code, prop.disp, prop.candidates, prop.tested
            )  # fmt: skip
            n_cand = candidates.shape[0]
            n_batch = n_cand if tested is None else tested.shape[0]
            if n_batch:
                if evaluated is not None:
                    pre, out = evaluated
                else:
                    latents = prop.batch.reshape(-1, *latent_shape)
                    if whole:
                        pre, out = split.run(latents)
                    else:
                        pre = split.pre_activations(latents)
                inside = region.contains(pre)
                n_proposed += n_batch
            if tested is None and n_batch:
                ok = inside
            else:
                ok = torch.zeros(n_cand, dtype=torch.bool, device=device)
                if n_batch:
                    ok[tested] = inside
            accepted = ok.nonzero().squeeze(1)
            n_ok = accepted.shape[0]
            n_accepted += n_ok
            if n_ok > need:
                accepted = accepted[:need]
            k = accepted.shape[0]
            if k:
                new = slice(n_nodes - 1, n_nodes - 1 + k)
                added = candidates[accepted]
                nodes[n_nodes : n_nodes + k] = added
                nodes_sq[n_nodes : n_nodes + k] = added.pow(2).sum(dim=1)
                base = torch.div(code[accepted], halvings, rounding_mode="floor")
                parents[new] = base - 1
                if whole:
                    rows = (
                        accepted
                        if tested is None
                        else torch.searchsorted(tested, accepted)
                    )
                    outputs[new] = out[rows]
                    has_output[new] = True
                n_nodes += k
                bar.update(k)
            if halvings > 1 and n_ok < n_cand:
                retry = ~ok
                if n_retry:  # a retry at the last level is not retried again
                    retry &= code % halvings < halvings - 1
                index = retry.nonzero().squeeze(1)
                more_code = code.index_select(0, index).add_(1)
                more_disp = disp.index_select(0, index).mul_(0.5)
                if r_code.shape[0]:
                    more_code = torch.cat([r_code, more_code])
                    more_disp = torch.cat([r_disp, more_disp])
                r_code, r_disp = more_code, more_disp
    n_found = n_nodes - 1
    return Tree(
        latents=nodes[1:n_nodes].reshape(n_found, *latent_shape),
        parents=parents[:n_found],
        outputs=outputs[:n_found],
        has_output=has_output[:n_found],
        n_proposed=n_proposed,
        n_passes=n_passes,
    )


def norm_bounds(latent_bound, root: Tensor, dim: int, check) -> Tuple[float, float]:
    """Allowed latent norms: ``(0, inf)``, ``(0, bound)`` or the typical shell
    of a standard normal prior, widened to contain the query."""
    z0_norm = float(root.norm())
    if latent_bound is None:
        return 0.0, math.inf
    if isinstance(latent_bound, str):
        if latent_bound != "typical":
            raise ValueError(
                "latent_bound must be None, a positive number or 'typical', "
                f"got {latent_bound!r}"
            )
        centre = math.sqrt(max(dim - 0.5, 0.0))
        half_width = 3.0 / math.sqrt(2.0)
        low = max(centre - half_width, 0.0)
        return min(low, z0_norm), max(centre + half_width, z0_norm)
    bound = check("latent_bound", latent_bound)
    if z0_norm > bound:
        raise ValueError(f"z0 has norm {z0_norm:.3g}, outside latent_bound={bound:.3g}")
    return 0.0, bound
