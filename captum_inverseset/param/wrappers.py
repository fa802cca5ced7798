"""Small parameterizations: unbounded inputs, and a [0, 1] one moved to a range."""

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

__all__ = ["AffineRange", "IdentityParameterization", "TupleParameterization"]


class AffineRange(nn.Module):
    """Map a parameterization's [0, 1] outputs onto ``[low, high]``."""

    def __init__(self, param: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.param, self.low, self.high = param, float(low), float(high)
        self.code_shape = param.code_shape

    def forward(self, codes: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * self.param(codes)

    def inverse(self, inputs: Tensor) -> Tensor:
        return self.param.inverse((inputs - self.low) / (self.high - self.low))

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


class TupleParameterization(nn.Module):
    """Several inputs at once (a model taking a tuple): one flat code per
    example, split into each part's code and mapped by that part's
    parameterization.

    Args:
        params (sequence of nn.Module): one parameterization per input.
    """

    def __init__(self, params: Sequence[nn.Module]) -> None:
        super().__init__()
        self.params = nn.ModuleList(params)
        self.sizes = [math.prod(p.code_shape) for p in self.params]
        self.code_shape = (sum(self.sizes),)

    def forward(self, codes: Tensor) -> tuple:
        parts = torch.split(codes, self.sizes, dim=1)
        return tuple(
            p(c.reshape(c.shape[0], *p.code_shape)) for p, c in zip(self.params, parts)
        )

    def inverse(self, inputs: Sequence[Tensor]) -> Tensor:
        return torch.cat(
            [p.inverse(x).reshape(x.shape[0], -1) for p, x in zip(self.params, inputs)],
            dim=1,
        )

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
    ) -> Tensor:
        return torch.cat(
            [
                p.random_codes(n, generator=generator, device=device).reshape(n, -1)
                for p in self.params
            ],
            dim=1,
        )
