"""The state of a sampling run: statistics, all-reduce across ranks and
checkpoints.

:class:`RunStatistics` holds the running sums of the marginal contributions
(and their range, for the confidence bounds); :func:`all_reduce_round` sums a
round's statistics over the ranks of ``torch.distributed``;
:func:`check_ranks_agree` refuses ranks that would mix different games or
states; :class:`RunCheckpoint` resumes and saves a run (the file format is
in :mod:`.checkpoint`).
"""

import hashlib
import math
from typing import Any, Dict, Optional, Tuple

import torch

from .checkpoint import load_checkpoint, save_checkpoint, state_digest

__all__ = [
    "RunCheckpoint",
    "RunStatistics",
    "all_reduce_round",
    "bernstein_radius",
    "broadcast_seed",
    "check_ranks_agree",
    "dist_info",
    "permutation_seed",
]


def permutation_seed(seed: int, index: int) -> int:
    """The seed of permutation ``index`` of a run: each permutation has its
    own, so which rank or which run (resumed or not) samples it does not
    change it."""
    return (seed * 1_000_003 + index * 7_919 + 12_345) % (2**62)


def bernstein_radius(
    variance: torch.Tensor,
    counts: torch.Tensor,
    value_range: torch.Tensor,
    delta: float,
) -> torch.Tensor:
    r"""Empirical Bernstein radius of Maurer & Pontil (2009, Theorem 4), the
    bound of the paper's code:
    :math:`\sqrt{2 \hat\sigma^2 \log(2/\delta) / n}
    + 7 R \log(2/\delta) / (3 (n - 1))`; infinite below two samples."""
    n = counts.clamp(min=2)
    log_term = math.log(2.0 / delta)
    radius = torch.sqrt(2 * variance * log_term / n) + 7 * value_range * log_term / (
        3 * (n - 1)
    )
    return torch.where(counts > 1, radius, torch.full_like(radius, math.inf))


class RunStatistics:
    """Running sums of the players' marginal contributions (float64, CPU).

    This is what a ``callback`` of :meth:`NeuronShapley.attribute` receives
    after every round: ``n_permutations`` and ``n_evaluations`` so far, per
    player ``counts`` (contributions recorded) and ``evaluated`` (those of
    them computed rather than set to 0 by truncation), :meth:`means`,
    :meth:`variances`, the empirical Bernstein :meth:`radius` of each mean
    and the players :meth:`settled` for a top ``k``.
    """

    def __init__(self, n_players: int) -> None:
        self.sums = torch.zeros(n_players, dtype=torch.float64)
        self.squares = torch.zeros(n_players, dtype=torch.float64)
        self.counts = torch.zeros(n_players, dtype=torch.float64)
        self.evaluated = torch.zeros(n_players, dtype=torch.float64)
        # Per-player observed range of the contributions (the range term of
        # the empirical Bernstein bound).
        self.min_marginal = torch.full((n_players,), math.inf, dtype=torch.float64)
        self.max_marginal = torch.full((n_players,), -math.inf, dtype=torch.float64)
        self.n_evaluations = 0
        self.n_permutations = 0

    def add(
        self,
        players: torch.Tensor,
        marginals: torch.Tensor,
        evaluated: Optional[torch.Tensor] = None,
    ) -> None:
        """Record ``marginals`` of ``players``; ``evaluated`` (bool) marks
        those computed (the others are the zeros a truncated walk gives)."""
        self.sums.index_add_(0, players, marginals)
        self.squares.index_add_(0, players, marginals**2)
        ones = torch.ones_like(marginals)
        self.counts.index_add_(0, players, ones)
        if evaluated is None:
            self.evaluated.index_add_(0, players, ones)
        else:
            self.evaluated.index_add_(0, players[evaluated], ones[evaluated])
        self.min_marginal.scatter_reduce_(0, players, marginals, reduce="amin")
        self.max_marginal.scatter_reduce_(0, players, marginals, reduce="amax")

    def merge(self, other: "RunStatistics") -> None:
        """Add the statistics of other permutations (a round's)."""
        self.sums += other.sums
        self.squares += other.squares
        self.counts += other.counts
        self.evaluated += other.evaluated
        self.min_marginal = torch.minimum(self.min_marginal, other.min_marginal)
        self.max_marginal = torch.maximum(self.max_marginal, other.max_marginal)
        self.n_evaluations += other.n_evaluations
        self.n_permutations += other.n_permutations

    def means(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1)

    def radius(self, delta: float, value_range: Optional[float] = None) -> torch.Tensor:
        """Empirical Bernstein radius of each player's mean at ``delta``.

        ``value_range`` is the width of the interval every marginal
        contribution lies in (for a metric with values in ``[lo, hi]``, a
        marginal lies in ``[lo - hi, hi - lo]``: width ``2 (hi - lo)``);
        None uses each player's observed range, which is not a bound (it is
        0 while all of a player's contributions were equal)."""
        if value_range is None:
            spread = (self.max_marginal - self.min_marginal).clamp(min=0)
        else:
            spread = torch.full_like(self.sums, float(value_range))
        return bernstein_radius(self.variances(), self.counts, spread, delta)

    def settled(
        self,
        top_k: int,
        delta: float,
        epsilon: float = 0.0,
        value_range: Optional[float] = None,
        min_samples: int = 0,
    ) -> torch.Tensor:
        """Players whose interval at ``delta`` lies above the (k+1)-th
        largest mean minus ``epsilon`` or below the k-th plus ``epsilon``
        (their membership of an epsilon-approximate top ``k`` is decided),
        among those with at least ``min_samples`` evaluated contributions."""
        means = self.means()
        radius = self.radius(delta, value_range)
        ranked = torch.sort(means, descending=True).values
        kth, next_ = ranked[top_k - 1], ranked[top_k]
        decided = (means - radius > next_ - epsilon) | (means + radius < kth + epsilon)
        return decided & (self.evaluated >= min_samples)

    def variances(self) -> torch.Tensor:
        n = self.counts
        mean = self.means()
        var = (self.squares - n * mean**2) / (n - 1).clamp(min=1)
        return var.clamp(min=0)

    def state(self) -> Dict[str, Any]:
        return {
            "sums": self.sums,
            "squares": self.squares,
            "counts": self.counts,
            "evaluated": self.evaluated,
            "min_marginal": self.min_marginal,
            "max_marginal": self.max_marginal,
            "n_evaluations": self.n_evaluations,
            "n_permutations": self.n_permutations,
        }

    def load(self, state: Dict[str, Any], n_permutations: int, where: str) -> None:
        """Restore a checkpoint's statistics, refusing any that cannot come
        from a run with these players and at most ``n_permutations``."""
        p = self.sums.numel()

        def bad(what: str) -> ValueError:
            return ValueError(f"checkpoint {where!r} is corrupt: {what}")

        tensors = {}
        names = ("sums", "squares", "counts", "evaluated", "min_marginal",
                 "max_marginal")  # fmt: skip
        for key in names:
            t = state.get(key)
            if not torch.is_tensor(t) or not t.is_floating_point():
                raise bad(f"{key} is not a float tensor")
            if tuple(t.shape) != (p,):
                raise bad(f"{key} has shape {tuple(t.shape)}, expected ({p},)")
            tensors[key] = t.double()
        for key in ("sums", "squares", "counts", "evaluated"):
            if not bool(torch.isfinite(tensors[key]).all()):
                raise bad(f"{key} holds NaN or infinite values")
        counts = tensors["counts"]
        for key in ("counts", "evaluated"):
            c = tensors[key]
            if bool((c < 0).any()) or not bool((c == c.round()).all()):
                raise bad(f"{key} are not non-negative integers")
        if bool((tensors["evaluated"] > counts).any()):
            raise bad("evaluated exceed counts")
        if bool((tensors["squares"] < 0).any()):
            raise bad("squares are negative")
        seen = counts > 0
        for key in ("min_marginal", "max_marginal"):
            if bool(torch.isnan(tensors[key]).any()) or not bool(
                torch.isfinite(tensors[key][seen]).all()
            ):
                raise bad(f"{key} is not finite where players were sampled")
        numbers = {}
        for key in ("n_evaluations", "n_permutations"):
            v = state.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise bad(f"{key} is {v!r}, not a non-negative integer")
            numbers[key] = v
        if numbers["n_permutations"] > n_permutations:
            raise bad(
                f"it holds {numbers['n_permutations']} permutations, more than "
                f"n_permutations={n_permutations}"
            )
        self.sums = tensors["sums"]
        self.squares = tensors["squares"]
        self.counts = counts
        self.evaluated = tensors["evaluated"]
        self.min_marginal = tensors["min_marginal"]
        self.max_marginal = tensors["max_marginal"]
        self.n_evaluations = numbers["n_evaluations"]
        self.n_permutations = numbers["n_permutations"]


def dist_info(distributed: Optional[bool]) -> Tuple[int, int, bool]:
    import torch.distributed as dist

    active = dist.is_available() and dist.is_initialized()
    if distributed is None:
        distributed = active and dist.get_world_size() > 1
    if distributed and not active:
        raise ValueError(
            "distributed=True needs torch.distributed.init_process_group() first"
        )
    if not distributed:
        return 0, 1, False
    return dist.get_rank(), dist.get_world_size(), True


def all_reduce_round(stats_delta: RunStatistics) -> None:
    """Sum a round's statistics over ranks (min/max for the marginal range)."""
    import torch.distributed as dist

    device = _collective_device()
    packed = torch.cat(
        [
            stats_delta.sums,
            stats_delta.squares,
            stats_delta.counts,
            stats_delta.evaluated,
            torch.tensor(
                [float(stats_delta.n_evaluations), float(stats_delta.n_permutations)],
                dtype=torch.float64,
            ),
        ]
    ).to(device)
    dist.all_reduce(packed, op=dist.ReduceOp.SUM)
    packed = packed.cpu()
    p = stats_delta.sums.numel()
    stats_delta.sums = packed[:p]
    stats_delta.squares = packed[p : 2 * p]
    stats_delta.counts = packed[2 * p : 3 * p]
    stats_delta.evaluated = packed[3 * p : 4 * p]
    stats_delta.n_evaluations = int(packed[4 * p].item())
    stats_delta.n_permutations = int(packed[4 * p + 1].item())
    extremes = torch.cat([-stats_delta.min_marginal, stats_delta.max_marginal])
    extremes = extremes.to(device)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    extremes = extremes.cpu()
    stats_delta.min_marginal = -extremes[:p]
    stats_delta.max_marginal = extremes[p:]


def _collective_device() -> torch.device:
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_seed(seed: int) -> int:
    import torch.distributed as dist

    t = torch.tensor([seed], dtype=torch.int64, device=_collective_device())
    dist.broadcast(t, src=0)
    return int(t.item())


def _hash62(text: str) -> int:
    """A 62-bit integer digest of ``text`` (fits an int64 all-reduce)."""
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big") >> 2


def check_ranks_agree(seed: int, fp: str, resumed: str) -> None:
    """Every rank must run the same game from the same state: the seed, the
    fingerprint of the run (model, data, arguments) and the statistics it
    resumed from are compared across ranks (an all-reduce of their maxima
    and minima); any difference raises on every rank."""
    import torch.distributed as dist

    values = [seed, _hash62(fp), _hash62(resumed)]
    t = torch.tensor(values + [-v for v in values], dtype=torch.int64)
    t = t.to(_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    t = t.cpu().tolist()
    n = len(values)
    same = [t[i] == -t[n + i] for i in range(n)]
    if not same[0]:
        raise ValueError(
            f"seed differs between ranks (from {-t[n]} to {t[0]}): every rank must "
            "pass the same seed, or seed=None on every rank"
        )
    if not same[1]:
        raise ValueError(
            "the ranks run different games (model weights, inputs, target or "
            "arguments differ between ranks); every rank must evaluate the same "
            "game, only the permutations are split"
        )
    if not same[2]:
        raise ValueError(
            "the ranks resumed from different checkpoint states (a node-local "
            "checkpoint path?); put the checkpoint on a file system every rank "
            "shares, or give every rank the same file"
        )


class RunCheckpoint:
    """Resume a run from ``path`` and save it every ``every`` permutations
    (only rank 0 writes). ``fp`` is the run's fingerprint
    (:func:`~.checkpoint.run_fingerprint`)."""

    def __init__(self, path: Optional[str], every: int, fp: str, rank: int) -> None:
        self.path, self.every, self.fp, self.rank = path, every, fp, rank
        self.last_saved = 0

    def resume(self, stats: RunStatistics, n_permutations: int) -> None:
        if self.path is not None:
            state = load_checkpoint(self.path, self.fp)
            if state is not None:
                stats.load(state, n_permutations, self.path)
        self.last_saved = stats.n_permutations

    def resumed_digest(self, stats: RunStatistics) -> str:
        return state_digest(stats.state()) if stats.n_permutations else ""

    def after_round(self, stats: RunStatistics, finished: bool) -> None:
        if self.path is None:
            return
        done = stats.n_permutations
        if done - self.last_saved >= self.every or finished:
            if self.rank == 0:
                save_checkpoint(self.path, self.fp, stats.state())
            self.last_saved = done
