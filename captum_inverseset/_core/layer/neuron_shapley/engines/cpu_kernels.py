"""Exact replacements of pooling modules inside the segment engines' heads.

The segment engines run the channel-wise modules after a player layer (its
*head*: activations, pooling) once per distinct upstream mask, on their own
copies of the graph (the model's modules are never replaced). Two of those
modules have cheaper exact forms on a CPU, which the segment engines use in
their heads; they were tuned on the shipped digits classifier (see
``docs/benchmarks_neuron_shapley.rst`` for the measurements):

* :class:`SkipSameSizePool`: adaptive pooling whose output size equals its
  input size is the identity;
* :class:`TiledMaxPool2d`: non-overlapping 2-D max pooling (windows of at
  most :attr:`TiledMaxPool2d.max_window` elements) as elementwise maxima of
  strided views, without the argmax bookkeeping of PyTorch's CPU kernel.

Both return bit-identical values (a maximum or an identity is exact).
"""

from typing import Optional, Tuple

import torch
from torch import nn

__all__ = ["ADAPTIVE_DIMS", "SkipSameSizePool", "TiledMaxPool2d", "fast_head_module"]

ADAPTIVE_DIMS = {
    nn.AdaptiveAvgPool1d: 1,
    nn.AdaptiveAvgPool2d: 2,
    nn.AdaptiveAvgPool3d: 3,
    nn.AdaptiveMaxPool1d: 1,
    nn.AdaptiveMaxPool2d: 2,
    nn.AdaptiveMaxPool3d: 3,
}


class SkipSameSizePool(nn.Module):
    """Adaptive pooling that returns its input when the output size equals the
    input size: each window is then one element, so pooling is exactly the
    identity, but its kernel still costs a pass over the activations (the
    shipped digits classifier pools 4x4 to 4x4)."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool
        self.n_dims = ADAPTIVE_DIMS[type(pool)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = self.pool.output_size
        if not isinstance(size, (tuple, list)):
            size = (size,) * self.n_dims
        spatial = tuple(x.shape[x.dim() - self.n_dims :])
        target = tuple(d if s is None else s for s, d in zip(size, spatial))
        if x.dim() > self.n_dims + 1 and spatial == target:
            return x
        return self.pool(x)


class TiledMaxPool2d(nn.Module):
    """2-D max pooling over non-overlapping windows as elementwise maxima of
    strided views, over the window's rows and then its columns: the same
    values as ``nn.MaxPool2d`` (a maximum is exact), without the index
    bookkeeping of PyTorch's CPU kernel, which computes the argmax even when
    nobody asks for it. Used for windows of at most :attr:`max_window`
    elements (the passes grow with the window)."""

    max_window = 16

    def __init__(self, pool: nn.MaxPool2d, kernel: Tuple[int, int]) -> None:
        super().__init__()
        self.pool = pool
        self.kernel = kernel

    @classmethod
    def wrap(cls, module: nn.Module) -> Optional["TiledMaxPool2d"]:
        if type(module) is not nn.MaxPool2d:
            return None

        def pair(v):
            return tuple(v) if isinstance(v, (tuple, list)) else (v, v)

        kernel = pair(module.kernel_size)
        stride = pair(module.stride if module.stride is not None else kernel)
        if (
            kernel != stride
            or pair(module.padding) != (0, 0)
            or pair(module.dilation) != (1, 1)
            or module.ceil_mode
            or module.return_indices
            or kernel[0] * kernel[1] > cls.max_window
        ):
            return None
        return cls(module, kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 3:
            return self.pool(x)
        kh, kw = self.kernel
        oh, ow = x.shape[-2] // kh, x.shape[-1] // kw
        if oh == 0 or ow == 0:
            return self.pool(x)
        x = x[..., : oh * kh, : ow * kw]
        # Separable: the maximum over the window rows (whole rows at a time),
        # then over its columns; kh + kw - 2 passes instead of kh * kw - 1.
        rows = x[..., 0::kh, :]
        for i in range(1, kh):
            rows = torch.maximum(rows, x[..., i::kh, :])
        out = rows[..., 0::kw]
        for j in range(1, kw):
            out = torch.maximum(out, rows[..., j::kw])
        return out.contiguous()


def fast_head_module(module: nn.Module) -> Optional[nn.Module]:
    """The exact CPU replacement of a head module, or None to keep it."""
    if isinstance(module, tuple(ADAPTIVE_DIMS)):
        return SkipSameSizePool(module)
    return TiledMaxPool2d.wrap(module)
