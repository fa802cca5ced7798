"""Box parameterization: unconstrained codes -> inputs inside ``[low, high]``."""

from typing import Optional, Sequence, Union

import torch
from torch import nn

__all__ = ["BoxParameterization"]


class BoxParameterization(nn.Module):
    r"""Keeps every input value in ``[low, high]`` by a scaled sigmoid.

    .. math::
        x = \text{low} + (\text{high} - \text{low})\,\sigma(c)

    ``forward(codes)`` maps codes of shape ``(N, *shape)`` to inputs of the
    same shape. :meth:`inverse` maps inputs back to codes (clamped a little
    inside the box so the logit stays finite), which is how given inputs
    become starting codes.

    Args:
        shape (sequence of int): the shape of one input, without batch.
        low (float or Tensor, optional): lower bound. Default: 0.0
        high (float or Tensor, optional): upper bound. Default: 1.0

    Examples::

        >>> box = BoxParameterization((1, 8, 8))
        >>> codes = box.random_codes(4, generator=torch.Generator().manual_seed(0))
        >>> box(codes).min() >= 0
    """

    def __init__(
        self,
        shape: Sequence[int],
        low: Union[float, torch.Tensor] = 0.0,
        high: Union[float, torch.Tensor] = 1.0,
    ) -> None:
        super().__init__()
        low_t = torch.as_tensor(low, dtype=torch.float32)
        high_t = torch.as_tensor(high, dtype=torch.float32)
        if bool((high_t <= low_t).any()):
            raise ValueError(f"high must be greater than low, got {low} and {high}")
        self.shape = tuple(int(s) for s in shape)
        self.register_buffer("low", low_t)
        self.register_buffer("high", high_t)

    @property
    def code_shape(self):
        return self.shape

    def _bounds(self, like: torch.Tensor):
        # The codes decide the device: a parameterization built on the CPU
        # works with a model (and codes) on a GPU without being moved.
        return self.low.to(like.device), self.high.to(like.device)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        low, high = self._bounds(codes)
        return low + (high - low) * torch.sigmoid(codes)

    def inverse(self, inputs: torch.Tensor, margin: float = 1e-4) -> torch.Tensor:
        low, high = self._bounds(inputs)
        unit = (inputs - low) / (high - low)
        unit = unit.clamp(margin, 1 - margin)
        return torch.logit(unit)

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
        scale: float = 1.0,
    ) -> torch.Tensor:
        """``n`` codes drawn from N(0, scale^2) (inputs spread around the middle)."""
        device = device or self.low.device
        c = torch.randn((n, *self.shape), generator=generator) * scale
        return c.to(device)
