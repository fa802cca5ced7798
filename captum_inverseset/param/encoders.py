"""Encoders: model inputs -> the low-dimensional vectors spread is measured in."""

import torch.nn.functional as F
from torch import Tensor, nn

from .._utils.validation import check_positive_int

__all__ = ["PooledEncoder"]


class PooledEncoder(nn.Module):
    r"""The default encoder :math:`E`: a fixed, parameter-free downsampling.

    Images ``(N, C, H, W)`` are average-pooled to a ``grid x grid`` map and
    flattened (``C * grid**2`` numbers), which ignores pixel noise and keeps
    the layout of the image; inputs of any other shape are flattened as they
    are, so for vectors the spread is measured in input space, as in the
    first formulation of the method.

    Args:
        grid (int, optional): side of the pooled map. Default: 4
    """

    def __init__(self, grid: int = 4) -> None:
        super().__init__()
        self.grid = check_positive_int("grid", grid)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            size = (min(self.grid, x.shape[2]), min(self.grid, x.shape[3]))
            x = F.adaptive_avg_pool2d(x, size)
        return x.reshape(x.shape[0], -1)
