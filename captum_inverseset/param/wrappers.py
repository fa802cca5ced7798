"""Small parameterizations: unbounded inputs, and a [0, 1] one moved to a range."""

from typing import Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["AffineRange", "IdentityParameterization"]


class AffineRange(nn.Module):
    """Map a parameterization's [0, 1] outputs onto ``[low, high]``."""

    def __init__(self, param: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.param, self.low, self.high = param, float(low), float(high)
        self.code_shape = param.code_shape

    def forward(self, codes: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * self.param(codes)

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> Tensor:
        return self.param.random_codes(n, generator=generator, device=device)


class IdentityParameterization(nn.Module):
    """Unbounded inputs: the codes are the inputs (random codes ~ N(0, I))."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.code_shape = tuple(shape)

    def forward(self, codes: Tensor) -> Tensor:
        return codes

    def inverse(self, inputs: Tensor) -> Tensor:
        return inputs.clone()

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> Tensor:
        c = torch.randn((n, *self.code_shape), generator=generator)
        return c.to(device) if device is not None else c
