"""Encoders: model inputs -> the low-dimensional vectors spread is measured in."""

import torch
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
    first formulation of the method. A tuple of inputs is encoded part by
    part and the encodings concatenated.

    Args:
        grid (int, optional): side of the pooled map. Default: 4
    """

    def __init__(self, grid: int = 4) -> None:
        super().__init__()
        self.grid = check_positive_int("grid", grid)

    def forward(self, x: Tensor) -> Tensor:
        if isinstance(x, (tuple, list)):  # several inputs: their encodings side by side
            return torch.cat([self.forward(t) for t in x], dim=1)
        if x.dim() == 4:
            size = (min(self.grid, x.shape[2]), min(self.grid, x.shape[3]))
            x = F.adaptive_avg_pool2d(x, size)
        return x.reshape(x.shape[0], -1)
