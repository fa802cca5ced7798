r"""Estimators of the Shapley values of a :class:`~.game.ShapleyGame`.

* :class:`ExactEnumeration`: every coalition, the Shapley formula (at most
  :attr:`ExactEnumeration.max_players` players);
* :class:`PermutationSampling`: permutation walks, each removing the players
  one by one from the full network and recording every marginal
  contribution :math:`V(S_{k-1}) - V(S_k)`; optionally truncated (a walk
  stops once :math:`|V(S_k) - V(\emptyset)|` falls below a tolerance) and
  steered by a :class:`TopKBandit`, which stops sampling the players whose
  membership of the top ``k`` is decided.

An estimator returns the fields of a
:class:`~.result.NeuronShapleyResult`; it evaluates the game only through
:meth:`~.game.ShapleyGame.evaluate` and keeps its statistics in a
:class:`~.run_state.RunStatistics`.
"""

from typing import Any, Callable, Dict, List, Optional, Tuple

import torch

from ...._utils.progress import progress
from .game import ShapleyGame, shapley_weights
from .run_state import (
    RunCheckpoint,
    RunStatistics,
    all_reduce_round,
    check_ranks_agree,
    permutation_seed,
)

__all__ = ["ExactEnumeration", "PermutationSampling", "TopKBandit"]


class ExactEnumeration:
    """All :math:`2^P` coalitions, then the Shapley formula."""

    max_players = 20

    def run(self, game: ShapleyGame, show_progress: bool = False) -> Dict[str, Any]:
        p = game.n_players
        if p > self.max_players:
            raise ValueError(
                f"exact=True enumerates 2^P coalitions and allows at most "
                f"{self.max_players} players, got {p}"
            )
        n_coalitions = 2**p
        codes = torch.arange(n_coalitions)
        bits = torch.arange(p)
        values = torch.empty(n_coalitions, dtype=torch.float64)
        step = max(game.rows_per_pass, 1) * 4
        with progress(n_coalitions, show_progress, "NeuronShapley exact") as bar:
            for start in range(0, n_coalitions, step):
                chunk = codes[start : start + step]
                masks = ((chunk.unsqueeze(1) >> bits) & 1).float()
                values[start : start + step] = game.evaluate(masks)
                bar.update(chunk.numel())
        sizes = ((codes.unsqueeze(1) >> bits) & 1).sum(1)
        weights = shapley_weights(p)
        phi = torch.empty(p, dtype=torch.float64)
        for i in range(p):
            without = codes[((codes >> i) & 1) == 0]
            gain = values[without | (1 << i)] - values[without]
            phi[i] = (weights[sizes[without]] * gain).sum()
        return dict(
            values=phi,
            standard_errors=torch.zeros(p, dtype=torch.float64),
            lower_bounds=phi.clone(),
            upper_bounds=phi.clone(),
            counts=torch.full((p,), float(n_coalitions // 2), dtype=torch.float64),
            n_permutations=0,
            n_evaluations=n_coalitions,
            exact=True,
        )


class TopKBandit:
    r"""Separate the top ``k`` players from the rest (the paper's bandit).

    After every round, each player's empirical Bernstein interval
    (:meth:`~.run_state.RunStatistics.radius`) is compared with the k-th and
    (k+1)-th largest estimates; a player whose interval lies above the
    (k+1)-th minus :math:`\epsilon` or below the k-th plus :math:`\epsilon`
    is settled, and later walks only evaluate the coalitions next to the
    unsettled players.

    Args:
        k: the top ``k``.
        delta: failure probability of the whole decision: with
            ``union_bound``, each of the :math:`P` intervals is at
            :math:`\delta / P` (a union bound over the players, which the
            paper's code lacks); otherwise each at :math:`\delta`.
        epsilon: the :math:`\epsilon` of an epsilon-approximate top ``k``.
        union_bound: see ``delta``.
        min_samples: a player is settled only after this many of its
            contributions were *evaluated* (not set to 0 by truncation), so
            a player every walk truncated before is never settled on zeros.
        value_range: the width of the interval the marginal contributions
            lie in (the range term of the bound; from the metric's known
            range when it has one); None uses each player's observed range.
    """

    def __init__(
        self,
        k: int,
        delta: float,
        epsilon: float = 0.0,
        union_bound: bool = True,
        min_samples: int = 10,
        value_range: Optional[float] = None,
    ) -> None:
        self.k, self.delta, self.epsilon = k, delta, epsilon
        self.union_bound = union_bound
        self.min_samples = min_samples
        self.value_range = value_range

    def player_delta(self, n_players: int) -> float:
        """The failure probability of each player's interval."""
        return self.delta / n_players if self.union_bound else self.delta

    def settled(self, stats: RunStatistics) -> torch.Tensor:
        delta = self.player_delta(stats.sums.numel())
        return stats.settled(
            self.k, delta, self.epsilon, self.value_range, self.min_samples
        )


def walk_plan(
    perm: torch.Tensor, active: torch.Tensor
) -> Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The positions a walk must evaluate: ``(active_pos, needed,
    rank_of)``, or None when no player of ``perm`` is active.

    ``active_pos`` (1..P) are the positions of the active players, ``needed``
    the coalitions either side of them other than the known ends (0: all
    kept, P: all removed), and ``rank_of[i]`` the position of player ``i``
    in ``perm``."""
    p = perm.numel()
    active_pos = torch.nonzero(active[perm]).flatten() + 1
    if active_pos.numel() == 0:
        return None
    needed = torch.unique(torch.cat([active_pos - 1, active_pos]))
    needed = needed[(needed > 0) & (needed < p)]
    rank_of = torch.empty(p, dtype=torch.long)
    rank_of[perm] = torch.arange(p)
    return active_pos, needed, rank_of


def coalitions(rank_of: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """Masks of the coalitions after ``positions`` removals (one row each)."""
    return (rank_of.unsqueeze(0) >= positions.unsqueeze(1)).float()


def record(
    stats: RunStatistics,
    perm: torch.Tensor,
    active_pos: torch.Tensor,
    value_at: Callable[[int], float],
    truncated_at: Optional[int] = None,
) -> None:
    """Add the marginal ``V(pos - 1) - V(pos)`` of each active player (those
    after ``truncated_at`` are zeros, not evaluations)."""
    marginals = torch.tensor(
        [value_at(i - 1) - value_at(i) for i in active_pos.tolist()],
        dtype=torch.float64,
    )
    evaluated = None if truncated_at is None else active_pos <= truncated_at
    stats.add(perm[active_pos - 1], marginals, evaluated)


class PermutationSampling:
    """Truncated Monte Carlo over permutations, in rounds.

    Args:
        n_permutations: permutations in total (over all ranks).
        truncation_tolerance: stop a walk once :math:`|V(S) - V(\\emptyset)|`
            is below this for ``truncation_patience`` consecutive evaluated
            coalitions (None: walk to the end).
        seed: the run's seed; permutation ``i`` is drawn from
            :func:`~.run_state.permutation_seed` ``(seed, i)``.
        per_round: permutations between two bandit decisions, all-reduces,
            checkpoints and callbacks.
        delta: failure probability of the reported confidence bounds (the
            bandit's per-player one when there is a bandit).
        truncation_patience: consecutive evaluations near
            :math:`V(\\emptyset)` that end a walk (1: the first; the paper's
            code: 6).
        value_range: the width of the marginals' interval for the reported
            bounds (see :class:`TopKBandit`).
        walk_game: with a fresh subset of the examples per permutation, the
            game of permutation ``i`` and its :math:`V(N)`,
            :math:`V(\\emptyset)` on that subset: ``walk_game(i) -> (game,
            value_full, value_empty)``; None walks every permutation on the
            game's own examples.
        bandit: a :class:`TopKBandit`, or None.
        callback: called after every round with the
            :class:`~.run_state.RunStatistics`; a true return value ends the
            run.
    """

    def __init__(
        self,
        n_permutations: int,
        truncation_tolerance: Optional[float],
        seed: int,
        per_round: int,
        delta: float = 0.05,
        bandit: Optional[TopKBandit] = None,
        callback: Optional[Callable[[RunStatistics], Any]] = None,
        truncation_patience: int = 1,
        value_range: Optional[float] = None,
        walk_game: Optional[Callable[[int], Tuple[Any, float, float]]] = None,
    ) -> None:
        self.walk_game = walk_game
        self.delta = delta
        self.patience = truncation_patience
        self.value_range = bandit.value_range if bandit is not None else value_range
        self.n_permutations = n_permutations
        self.tolerance = truncation_tolerance
        self.seed = seed
        self.per_round = per_round
        self.bandit = bandit
        self.callback = callback

    def run(
        self,
        game: ShapleyGame,
        value_full: float,
        value_empty: float,
        checkpoint: RunCheckpoint,
        rank: int = 0,
        world: int = 1,
        is_dist: bool = False,
        show_progress: bool = False,
    ) -> Dict[str, Any]:
        p = game.n_players
        stats = RunStatistics(p)
        checkpoint.resume(stats, self.n_permutations)
        if is_dist:
            resumed = checkpoint.resumed_digest(stats)
            check_ranks_agree(self.seed, checkpoint.fp, resumed)
        settled = torch.zeros(p, dtype=torch.bool)
        # Without truncation nothing depends on the order of evaluation, so
        # the walks of a round share forward passes, unless the engine reuses
        # each row of a walk for the next one.
        together = self.tolerance is None and game.engine.walks_together
        ends = (value_full, value_empty)
        with progress(self.n_permutations, show_progress, "NeuronShapley") as bar:
            bar.update(stats.n_permutations)
            while stats.n_permutations < self.n_permutations:
                if self.bandit is not None and stats.n_permutations > 0:
                    settled = self.bandit.settled(stats)
                    if bool(settled.all()):
                        break
                first = stats.n_permutations
                last = min(first + self.per_round, self.n_permutations)
                delta_stats = RunStatistics(p)
                perms = []
                for index in range(first, last):
                    if index % world != rank:
                        continue
                    gen = torch.Generator().manual_seed(
                        permutation_seed(self.seed, index)
                    )
                    perms.append(torch.randperm(p, generator=gen))
                    delta_stats.n_permutations += 1
                if self.walk_game is not None:
                    indices = [i for i in range(first, last) if i % world == rank]
                    for index, perm in zip(indices, perms):
                        self._walk_subset(game, index, perm, ~settled, delta_stats)
                elif together:
                    self._walk_many(game, perms, ~settled, ends, delta_stats)
                else:
                    for perm in perms:
                        self._walk(game, perm, ~settled, ends, delta_stats)
                if is_dist:
                    all_reduce_round(delta_stats)
                # Every permutation of the round, over all ranks once reduced.
                stats.merge(delta_stats)
                assert stats.n_permutations == last
                bar.update(last - first)
                checkpoint.after_round(stats, last == self.n_permutations)
                if self.callback is not None and self.callback(stats):
                    break
        if self.bandit is not None:
            settled = self.bandit.settled(stats)
        return self._fields(stats, settled)

    def _fields(self, stats: RunStatistics, settled: torch.Tensor) -> Dict[str, Any]:
        means = stats.means()
        delta = self.delta
        if self.bandit is not None:
            delta = self.bandit.player_delta(stats.sums.numel())
        radius = stats.radius(delta, self.value_range)
        return dict(
            evaluated_counts=stats.evaluated.clone(),
            settled=settled.clone() if self.bandit is not None else None,
            bound_delta=delta,
            values=means,
            standard_errors=torch.sqrt(stats.variances() / stats.counts.clamp(min=1)),
            lower_bounds=means - radius,
            upper_bounds=means + radius,
            counts=stats.counts.clone(),
            n_permutations=stats.n_permutations,
            n_evaluations=stats.n_evaluations,
            top_k_settled=bool(settled.all()) if self.bandit is not None else False,
            exact=False,
        )

    def _walk_subset(self, game, index, perm, active, stats) -> None:
        """Permutation ``index`` on its own subset of the examples."""
        sub, value_full, value_empty = self.walk_game(index)
        stats.n_evaluations += 2  # V(N) and V(empty) on the subset
        if self.tolerance is None and sub.engine.walks_together:
            self._walk_many(sub, [perm], active, (value_full, value_empty), stats)
        else:
            self._walk(sub, perm, active, (value_full, value_empty), stats)
        game.n_forward_passes += sub.n_forward_passes

    def _walk(
        self,
        game: ShapleyGame,
        perm: torch.Tensor,
        active: torch.Tensor,
        ends: Tuple[float, float],
        stats: RunStatistics,
    ) -> None:
        """One permutation: remove players in order, record marginals."""
        plan = walk_plan(perm, active)
        if plan is None:
            return
        active_pos, needed, rank_of = plan
        p = perm.numel()
        value_full, value_empty = ends
        tolerance = self.tolerance
        game.start_walk()
        known = {0: value_full, p: value_empty}
        truncated_at: Optional[int] = None
        streak = 0
        chunk = game.rows_per_pass
        if tolerance is not None:
            # Truncation can only skip what has not been evaluated yet: walk
            # in eighths (at least 8 positions), not in one pass.
            chunk = min(chunk, max(8, -(-p // 8)))
        for start in range(0, needed.numel(), chunk):
            positions = needed[start : start + chunk]
            vals = game.evaluate(coalitions(rank_of, positions))
            stats.n_evaluations += positions.numel()
            for pos, v in zip(positions.tolist(), vals.tolist()):
                known[pos] = v
                if tolerance is not None and truncated_at is None:
                    streak = streak + 1 if abs(v - value_empty) < tolerance else 0
                    if streak >= self.patience:
                        truncated_at = pos
            if truncated_at is not None:
                break

        def value_at(pos: int) -> float:
            if truncated_at is not None and pos > truncated_at:
                return known[truncated_at]
            return known[pos]

        record(stats, perm, active_pos, value_at, truncated_at)

    def _walk_many(
        self,
        game: ShapleyGame,
        perms: List[torch.Tensor],
        active: torch.Tensor,
        ends: Tuple[float, float],
        stats: RunStatistics,
    ) -> None:
        """Several untruncated permutations, their coalitions evaluated
        together (a round fills the large passes an accelerator needs)."""
        plans = []
        for perm in perms:
            plan = walk_plan(perm, active)
            if plan is not None:
                plans.append((perm, plan))
        # Whole walks per call of evaluate, as many as fit in one pass: the
        # coalitions of one walk share upstream segments, so a walk is not
        # split between passes unless it is larger than one.
        values: List[float] = []
        per_pass = game.rows_per_pass

        def evaluate(group: List[torch.Tensor]) -> None:
            game.start_walk()
            values.extend(game.evaluate(torch.cat(group)).tolist())

        group: List[torch.Tensor] = []
        rows = 0
        for _, (_, needed, rank_of) in plans:
            if needed.numel() > per_pass:
                # A walk larger than a pass, one pass at a time: its masks
                # are built per pass, never all P x P of them at once.
                if group:
                    evaluate(group)
                    group, rows = [], 0
                game.start_walk()
                for start in range(0, needed.numel(), per_pass):
                    chunk = coalitions(rank_of, needed[start : start + per_pass])
                    values.extend(game.evaluate(chunk).tolist())
                continue
            if group and rows + needed.numel() > per_pass:
                evaluate(group)
                group, rows = [], 0
            group.append(coalitions(rank_of, needed))
            rows += needed.numel()
        if group:
            evaluate(group)
        stats.n_evaluations += len(values)
        offset = 0
        p = game.n_players
        for perm, (active_pos, needed, _) in plans:
            known = {0: ends[0], p: ends[1]}
            for pos in needed.tolist():
                known[pos] = values[offset]
                offset += 1
            record(stats, perm, active_pos, known.__getitem__)
