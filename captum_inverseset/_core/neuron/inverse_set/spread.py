r"""The spread term: each sample's mean squared distance to the others.

Earlier samples enter only through two running sums of their encodings,

.. math::
    \sum_{y} \|e_i - e_y\|^2 = M \|e_i\|^2 - 2\, e_i^\top \textstyle\sum_y e_y
    + \sum_y \|e_y\|^2 ,

which is exact for squared distances, so a step costs the same however many
samples exist and memory holds only the sums.
"""

from typing import Optional

import torch
from torch import Tensor

__all__ = ["RunningSpread", "mean_squared_distance"]


def mean_squared_distance(e: Tensor) -> float:
    """Mean squared Euclidean distance over pairs ``i != j`` (0 below two)."""
    n = e.shape[0]
    if n < 2:
        return 0.0
    e = e.detach().double()
    return float(torch.cdist(e, e).pow(2).sum() / (n * (n - 1)))


class RunningSpread:
    r"""Spread of a batch against itself and every earlier sample.

    Args:
        repel_from (str): ``"all"`` earlier samples or only the ``"seeds"``
            (the first batch, as in the paper).
    """

    def __init__(self, repel_from: str = "all") -> None:
        self.repel_from = repel_from
        self.sum_e: Optional[Tensor] = None
        self.sum_sq = torch.zeros((), dtype=torch.float64)
        self.n_earlier = 0
        self.n_batches = 0
        self.scale = 1.0

    def calibrate(self, e: Tensor) -> None:
        """Set the unit of the spread from the encodings of a first batch.

        A near-constant first batch (Lucent's grey start) must not inflate the
        spread term: the scale is floored at a tenth of the encodings' mean
        squared norm.
        """
        ms = mean_squared_distance(e)
        norm = float(e.detach().double().pow(2).sum(1).mean())
        self.scale = max(ms, 0.1 * norm, 1e-12)

    def __call__(self, e: Tensor) -> Tensor:
        """``(k,)`` scaled per-sample spread of the batch encodings ``e``."""
        return self.raw(e, self.sum_e, self.sum_sq, self.n_earlier) / self.scale

    @staticmethod
    def raw(
        e: Tensor, sum_e: Optional[Tensor], sum_sq: Tensor, n_earlier: int
    ) -> Tensor:
        r"""Per-sample mean squared distance to batch members and earlier
        samples, the latter given by ``sum_e`` (:math:`\sum_y e_y`) and
        ``sum_sq`` (:math:`\sum_y \|e_y\|^2`)."""
        k = e.shape[0]
        sq = e.pow(2).sum(1)
        total = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=0).sum(1)
        if n_earlier > 0 and sum_e is not None:
            earlier = (
                n_earlier * sq
                - 2 * e @ sum_e.to(e.dtype)
                + sum_sq.to(device=e.device, dtype=e.dtype)
            )
            total = total + earlier.clamp(min=0)
        return total / max((k - 1) + n_earlier, 1)

    def add(self, e: Tensor) -> None:
        """Record a finished batch's encodings (only the first batch when
        repelling from the seeds)."""
        if self.repel_from == "all" or self.n_batches == 0:
            s = e.sum(0)
            self.sum_e = s if self.sum_e is None else self.sum_e + s
            self.sum_sq = self.sum_sq + e.pow(2).sum().cpu()
            self.n_earlier += e.shape[0]
        self.n_batches += 1
