r"""The incremental engine: the segment engine depth first, with the linear
layer after each player layer updated one channel at a time.

Along a permutation walk, consecutive coalitions differ by one player. When
the module after a player layer's channel-wise head is linear (a
convolution with one group, or a flatten and a linear layer; see
:mod:`.additive`), the next coalition's output of that module is the
previous one plus one removed channel's contribution :math:`D_c`, instead of
a pass of the module. The tree of distinct coalitions of a pass (a row of
level ``k`` extends one row of level ``k - 1``) is walked depth first, so
the activations in flight are those of one path of the tree.

Engine choices (measured on the shipped digits classifier and on wide
MLPs, 80 to 4800 players, on a CPU; ``docs/benchmarks_neuron_shapley.rst``
has the measurements):

* ``engine="auto"`` picks this engine on a CPU when an evaluation batch has
  at least :attr:`IncrementalEngine.min_examples` examples, or when its
  examples times the players of the widest player layer reach
  :attr:`IncrementalEngine.min_row_work`. The depth-first walk pays a
  Python cost per row of the tree, which many examples per row amortise,
  and the breadth-first engine pays for every channel of the layer after a
  player layer on every row, which a wide layer makes dear; smaller
  batches of narrow layers, and every batch on an accelerator (which wants
  the large batches of the breadth-first engine), run breadth first. Named
  explicitly (``engine="incremental"``), it walks every batch depth first;
* a row is updated from the nearest of its candidate references when at
  most a quarter of the channels (half for the first player layer) differ,
  and computed directly otherwise;
* the tails after the last linear front run on groups of rows stacked to
  :attr:`IncrementalEngine.leaf_group_bytes` (:class:`Leaves`);
* several player layers give passes of 32768 examples (at most 256
  coalitions): a whole walk in one pass.

Before it is used, the engine checks on a few examples that it reproduces
the direct evaluation; if not, it does not apply. The values equal the
direct evaluation up to float rounding (dead neurons get exactly 0).
"""

from typing import Callable, List, Optional, Tuple, Union

import numpy as np
import torch

from ....._utils.hooks import mask_units
from .additive import AdditiveStage, split_linear_front
from .base import EngineUnavailable, Plan
from .segments import SegmentEngine, chain_stages

__all__ = ["IncrementalEngine", "Leaves"]


class Leaves:
    """The outputs of the last level of :meth:`IncrementalEngine.depth_first`,
    by distinct row.

    A row comes either finished or as the output of the last segment's
    linear front, with the rest of the segment (``tail``) still to run. The
    tails run on groups of rows stacked to about ``group_bytes``: one call
    per group instead of one per row, on tensors that stay small enough for
    the processor's cache (one call on every row of a walk would allocate
    megabytes at a time).
    """

    def __init__(self, n_rows: int, group_bytes: int = 2**20) -> None:
        self.outputs: List[Optional[torch.Tensor]] = [None] * n_rows
        self.group_bytes = group_bytes
        self._pending: List[Tuple[int, torch.Tensor]] = []
        self._tail: Optional[Callable] = None
        self._bytes = 0

    def add(self, row: int, out: torch.Tensor, tail: Optional[Callable] = None) -> None:
        if tail is None:
            self.outputs[row] = out
            return
        if self._pending and tail is not self._tail:
            self.flush()
        self._tail = tail
        self._pending.append((row, out))
        self._bytes += out.numel() * out.element_size()
        if self._bytes >= self.group_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        assert self._tail is not None
        rows = [r for r, _ in self._pending]
        fronts = [f for _, f in self._pending]
        done = self._tail(torch.cat(fronts))
        for r, piece in zip(rows, done.split([f.shape[0] for f in fronts])):
            self.outputs[r] = piece
        self._pending, self._bytes = [], 0

    def result(self) -> torch.Tensor:
        self.flush()
        return torch.cat(self.outputs)  # type: ignore[arg-type]



class IncrementalEngine(SegmentEngine):
    """:class:`~.segments.SegmentEngine`, depth first with incremental
    linear fronts."""

    name = "incremental"
    walks_together = False
    min_examples = 96
    min_row_work = 2**15
    leaf_group_bytes = 2**20
    # Memory of the per-channel contributions of one evaluation batch's
    # segment, above which that segment is evaluated directly.
    additive_bytes = 2**28

    def __init__(self, game, chain, stages, additive, use_tree) -> None:
        super().__init__(game, chain, stages)
        self.additive: List[Optional[AdditiveStage]] = additive
        self.use_tree = use_tree
        self._contrib_cache: dict = {}
        # (batch, level) -> (upstream mask key, mask, linear front output) of
        # the last row evaluated: the next chunk of a walk starts from it.
        self._ref_cache: dict = {}

    @classmethod
    def build(cls, game, requested: bool) -> "IncrementalEngine":
        chain, stages = chain_stages(game)
        if game.exact and not requested:
            raise EngineUnavailable(
                "exact enumeration evaluates every coalition directly"
            )
        widest = max(game.layer_sizes)
        use_tree = [
            requested
            or (
                x[0].device.type == "cpu"
                and (
                    x[0].shape[0] >= cls.min_examples
                    or x[0].shape[0] * widest >= cls.min_row_work
                )
            )
            for x, _, _ in game.batches
        ]
        if not any(use_tree):
            raise EngineUnavailable(
                f"depth first pays off on a CPU with at least {cls.min_examples} "
                f"examples per evaluation batch, or {cls.min_row_work} examples "
                "times players of the widest player layer"
            )
        engine = cls(game, chain, stages, [], use_tree)
        additive = engine._linear_fronts()
        if not any(s is not None for s in additive):
            raise EngineUnavailable(
                "no segment continues with a linear module after its head"
            )
        if not engine._reproduces_direct(additive):
            raise EngineUnavailable(
                "the incremental evaluation does not reproduce the direct one"
            )
        engine.additive = additive
        return engine

    def rows_per_pass(self, n_examples, device, bytes_per_example):
        """32768 examples per pass on a CPU with several player layers (at
        most 256 coalitions): the depth-first walk holds one row of each
        segment at a time, not the whole pass, so a whole walk fits."""
        if len(self.game.layers) > 1 and device.type == "cpu":
            return max(1, min(256, 32768 // max(1, n_examples)))
        return super().rows_per_pass(n_examples, device, bytes_per_example)

    def start_walk(self) -> None:
        self._ref_cache = {}

    def reset_batches(self) -> None:
        super().reset_batches()
        self._contrib_cache = {}
        self._ref_cache = {}
        forced = all(self.use_tree)
        self.use_tree = [
            forced
            or (x[0].device.type == "cpu" and x[0].shape[0] >= self.min_examples)
            for x, _, _ in self.game.batches
        ]

    def forward(self, batch_index: int, plan: Plan) -> torch.Tensor:
        h = self.first_output(batch_index)
        if self.use_tree[batch_index]:
            return self.depth_first(batch_index, plan.detail, plan.masks, h)
        return self.breadth_first(plan.detail, h)

    def _linear_fronts(self) -> List[Optional[AdditiveStage]]:
        """The segments whose linear front can be evaluated additively."""
        game = self.game
        stages: List[Optional[AdditiveStage]] = []
        block = max(b[0][0].shape[0] for b in game.batches)
        with torch.no_grad():
            h = self.first_output(0)[:1]
            for head, rest, fill in self.stages:
                if head is not None:
                    h = head(h)
                stage = None
                front = split_linear_front(rest)
                if front is not None:
                    try:
                        stage = AdditiveStage(front, fill, tuple(h.shape[1:]))
                    except Exception:  # noqa: BLE001 - an unexpected layout
                        stage = None
                    if (
                        stage is not None
                        and stage.bytes_per_example * block > self.additive_bytes
                    ):
                        stage = None
                stages.append(stage)
                h = rest(h)
        return stages

    def _reproduces_direct(self, additive: List[Optional[AdditiveStage]]) -> bool:
        """A few coalitions of a random walk, both ways, on the first
        examples of a batch (the check is of the structure, which the
        number of examples does not change)."""
        game = self.game
        gen = torch.Generator().manual_seed(0)
        rank_of = torch.randperm(game.n_players, generator=gen)
        positions = torch.linspace(0, game.n_players, 7).round().long()
        masks = (rank_of.unsqueeze(0) >= positions.unsqueeze(1)).float()
        sample = game.sample_inputs(self.use_tree.index(True))
        passes = game.n_forward_passes
        with torch.no_grad():
            h = self.chain[0](*sample)
            levels = self.plan(masks).detail
            self.additive = additive
            try:
                fast = self.depth_first("check", levels, masks, h)
            finally:
                self.additive = []
                self._contrib_cache.pop("check", None)
                self._ref_cache = {}
            direct = self.breadth_first(levels, h)
        game.n_forward_passes = passes
        scale = float(direct.abs().max()) if direct.numel() else 0.0
        return fast.shape == direct.shape and torch.allclose(
            fast, direct, rtol=1e-4, atol=1e-5 * max(1.0, scale)
        )

    def depth_first(
        self,
        batch_index: Union[int, str],
        levels: List[tuple],
        masks: torch.Tensor,
        h: torch.Tensor,
    ) -> torch.Tensor:
        """The distinct rows of ``levels``, depth first with incremental
        fronts.

        The distinct rows of the plan form a tree (a row of level ``k``
        extends one row of level ``k - 1``). Each node is visited once, its
        children one after the other: the activations in flight are those of
        one path of the tree (they stay in the processor's cache), and each
        child's linear front is its previous sibling's plus the
        contributions of the few channels in which their masks differ (see
        :mod:`.additive`). ``batch_index`` keys the caches of
        evaluation batch ``batch_index`` (any other key: scratch entries) and
        ``h`` is the first player layer's output on it.

        The masks are compared as numpy bool arrays: a row costs a few
        numpy operations (microseconds, also for thousands of players)
        instead of tensor operations on 1-D masks, whose dispatch would cost
        more than their arithmetic. The rest of the
        last segment (after its linear front) runs on the leaves' fronts
        stacked in groups (:class:`Leaves`), not once per leaf.
        """
        tree = []
        for k, (parent, keep) in enumerate((p[1], p[2]) for p in levels):
            children: List[List[int]] = [[] for _ in range(int(parent.max()) + 1)]
            rows = keep.detach().cpu().numpy() != 0 if keep is not None else None
            order = range(parent.shape[0])
            if rows is not None:
                # Most kept first: along a walk, each row then removes a
                # few more channels than the previous one.
                sizes = rows.sum(axis=1).tolist()
                order = sorted(order, key=lambda u: -sizes[u])  # noqa: B023
            for u, pa in zip(order, parent[list(order)].tolist()):
                children[pa].append(u)
            # The upstream masks of each parent row identify its input.
            if k == 0:
                keys: List[bytes] = [b""]
            else:
                up = masks[levels[k - 1][3]][:, self.upstream_cols[k - 1]]
                keys = [bytes(row) for row in up.to(torch.uint8).numpy()]
            tree.append((children, keep, rows, keys))
        leaves = Leaves(levels[-1][1].shape[0], self.leaf_group_bytes)
        self._visit(batch_index, tree, 0, 0, h, leaves)
        self.game.n_forward_passes += 1
        return leaves.result()

    def _visit(
        self,
        batch_index: Union[int, str],
        levels: List[tuple],
        level: int,
        row: int,
        h: torch.Tensor,
        leaves: Leaves,
    ) -> None:
        """Run segment ``level`` for the children of ``row`` (``h``: the raw
        output of player layer ``level`` under ``row``'s masks); the last
        level hands its rows to ``leaves``."""
        head, rest, fill = self.stages[level]
        stage = self.additive[level]
        children, keep, rows, keys = levels[level]
        last = level == len(levels) - 1
        if head is not None:
            h = head(h)
        kids = children[row]
        if keep is None or stage is None:
            for u in kids:
                z = rest(h if keep is None else mask_units(h, keep[u : u + 1], fill))
                if last:
                    leaves.add(u, z)
                else:
                    self._visit(batch_index, levels, level + 1, u, z, leaves)
            return
        fixed = level == 0 and bool(self.prefix.cached)
        # Candidate starting points (mask, linear output): for the first
        # player layer, whose input never changes, its all-kept and
        # all-removed outputs (computed directly once per evaluation batch);
        # the last row of the previous chunk with the same input; the
        # previous sibling. Each row starts from the nearest, the fixed ones
        # first on ties, so a player whose contribution is exactly 0 (a dead
        # neuron) gets bit-identical values with and without it.
        fixed_refs: List[tuple] = []
        deltas: dict = {}
        # Channels that can differ: those whose contribution is exactly 0
        # (dead neurons) do not count, so rows that differ only there share
        # bits.
        channels: Optional[np.ndarray] = None  # None: every channel
        if fixed:
            deltas, fixed_refs, channels = self._fixed_level_cache(
                batch_index, stage, h
            )
        budget = max(1, stage.n_channels // (2 if fixed else 4))

        def restricted(mask: np.ndarray) -> np.ndarray:
            return mask if channels is None else mask[channels]

        # (mask on the channels that count, linear output)
        starts = [(restricted(mask), lin) for mask, lin in fixed_refs]
        previous: List[tuple] = []  # (mask, its counted part, linear output)
        cached = self._ref_cache.get((batch_index, level))
        if cached is not None and cached[0] == keys[row]:
            previous = [(cached[1], restricted(cached[1]), cached[2])]
        front_tail = stage.front.tail
        for u in kids:
            m = rows[u]
            m_counted = restricted(m)
            changed, ref, ref_mask, n_changed = None, None, None, -1
            for cand_counted, cand in starts + [p[1:] for p in previous]:
                n_diff = int(np.count_nonzero(m_counted != cand_counted))
                if ref is None or n_diff < n_changed:
                    n_changed, ref, ref_mask = n_diff, cand, cand_counted
            if ref is not None and n_changed <= budget:
                changed = np.flatnonzero(m_counted != ref_mask)
                if channels is not None:
                    changed = channels[changed]
            if changed is not None:
                # ``ref`` is never written to: the first contribution makes a
                # new tensor (no copy of ``ref`` first), the rest add into it.
                lin = ref
                for c, kept in zip(changed.tolist(), m[changed].tolist()):
                    d = deltas.get(c)
                    if d is None:
                        d = stage.channel_delta(h, c)
                        deltas[c] = d
                    sign = 1.0 if kept else -1.0  # the masks differ at c
                    if lin is ref:
                        lin = torch.add(ref, d, alpha=sign)
                    else:
                        lin.add_(d, alpha=sign)
            else:
                lin = stage.masked(h, keep[u])
            previous = [(m, m_counted, lin)]
            if last:
                leaves.add(u, lin, front_tail)
            else:
                z = front_tail(lin)
                self._visit(batch_index, levels, level + 1, u, z, leaves)
        if previous:
            mask, _, lin = previous[0]
            self._ref_cache[(batch_index, level)] = (keys[row], mask, lin)

    def _fixed_level_cache(
        self,
        batch_index: Union[int, str],
        stage: AdditiveStage,
        h: torch.Tensor,
    ) -> Tuple[dict, List[tuple], np.ndarray]:
        """Channel contributions, all-kept and all-removed outputs (with
        their masks as numpy bool arrays) of the first player layer's linear front for
        one batch, and the channels that can contribute at all
        (:meth:`AdditiveStage.live_channels`). Kept when they fit the cache
        budget; otherwise the contributions are computed as needed."""
        entry = self._contrib_cache.get(batch_index)
        if entry is not None:
            return entry
        n_channels = stage.n_channels
        refs = [
            (np.ones(n_channels, dtype=bool), stage.direct(h)),
            (
                np.zeros(n_channels, dtype=bool),
                stage.masked(h, torch.zeros(n_channels)),
            ),
        ]
        live = np.asarray(stage.live_channels(h), dtype=np.int64)
        n_total = sum(b[0][0].shape[0] for b in self.game.batches)
        if stage.bytes_per_example * n_total > self.game.cache_bytes:
            return {}, refs, live
        deltas = {c: stage.channel_delta(h, c) for c in range(n_channels)}
        entry = (deltas, refs, live)
        self._contrib_cache[batch_index] = entry
        return entry
