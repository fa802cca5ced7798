"""The package's one pairwise-distance helper (spread of a set of samples)."""

import torch
from torch import Tensor

__all__ = ["mean_pairwise_distance"]


def mean_pairwise_distance(x: Tensor, chunk_size: int = 256) -> float:
    """Mean Euclidean distance over pairs ``i != j`` of rows of ``x``.

    Rows are flattened; computed in float64 and in row chunks, so memory stays
    linear in the number of rows. Undefined (NaN) for fewer than two rows.
    """
    x = x.detach().reshape(x.shape[0], -1).double()
    n = x.shape[0]
    if n < 2:
        return float("nan")
    total = 0.0
    for start in range(0, n, chunk_size):
        total += float(torch.cdist(x[start : start + chunk_size], x).sum())
    return total / (n * (n - 1))
