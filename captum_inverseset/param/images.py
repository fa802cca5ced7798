"""Lucent's image parameterization as an ``nn.Module``.

Lucent builds images from a scaled Fourier spectrum, decorrelates colours and
squashes with a sigmoid, but its functions keep their tensors on a global
``cuda:0``/``cpu`` device. Here the same construction is a module whose codes
are passed in and whose constant buffers follow ``.to(device)``; the frequency
grid and colour-correlation matrix come from Lucent itself.
"""

from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from lucent.optvis.param.color import color_correlation_normalized
from lucent.optvis.param.spatial import rfft2d_freqs
from torch import nn

__all__ = ["FFTImageParameterization", "PixelImageParameterization"]

# Lucid's constant: dividing the spectrum image by it reduces saturation.
_SPECTRUM_DIVISOR = 4.0


def _squash(image: torch.Tensor, matrix: Optional[torch.Tensor]) -> torch.Tensor:
    """Colour-decorrelate (when ``matrix`` is given) and squash into [0, 1].
    The matrix follows the image's device, so a parameterization built on
    the CPU also serves a model on a GPU."""
    if matrix is not None:
        image = torch.einsum("nchw,cd->ndhw", image, matrix.to(image.device))
    return torch.sigmoid(image)


def _unsquash(
    images: torch.Tensor, matrix: Optional[torch.Tensor], margin: float = 1e-4
) -> torch.Tensor:
    """The inverse of :func:`_squash`: logit, then the colour matrix undone
    (images are clamped a little inside (0, 1) so the logit stays finite)."""
    pre = torch.logit(images.clamp(margin, 1 - margin))
    if matrix is not None:
        inv = torch.linalg.inv(matrix.to(device=images.device, dtype=pre.dtype))
        pre = torch.einsum("nchw,cd->ndhw", pre, inv)
    return pre


def _gaussian_codes(
    shape: Tuple[int, ...],
    generator: Optional[torch.Generator],
    device: torch.device,
    scale: float,
) -> torch.Tensor:
    """N(0, scale^2) codes drawn on the CPU generator, then moved."""
    return (torch.randn(shape, generator=generator) * scale).to(device)


class FFTImageParameterization(nn.Module):
    r"""Fourier-space image codes -> images in [0, 1] (Lucent's ``param.image``).

    A code is the real and imaginary part of the image's 2-D spectrum, shape
    ``(C, H, W // 2 + 1 (+1 if W is odd), 2)``. The spectrum is scaled by
    :math:`1 / \max(f, 1/\max(H, W))^{d}` (``decay_power`` d), inverted with
    an orthonormal ``irfft``, colour-decorrelated when ``C == 3`` and
    ``decorrelate=True``, and passed through a sigmoid.

    Args:
        shape (sequence of int): image shape ``(C, H, W)``.
        decorrelate (bool, optional): apply Lucent's colour decorrelation
            (only used for 3 channels). Default: True
        decay_power (float, optional): spectrum decay. Default: 1.0
    """

    def __init__(
        self, shape: Sequence[int], decorrelate: bool = True, decay_power: float = 1.0
    ) -> None:
        super().__init__()
        if len(shape) != 3:
            raise ValueError(f"shape must be (C, H, W), got {tuple(shape)}")
        c, h, w = (int(s) for s in shape)
        self.shape = (c, h, w)
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / np.maximum(freqs, 1.0 / max(h, w)) ** decay_power
        self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32))
        self.decorrelate = bool(decorrelate and c == 3)
        self.register_buffer(
            "color_matrix",
            torch.tensor(color_correlation_normalized.T, dtype=torch.float32),
        )
        self.code_shape = (c, *freqs.shape, 2)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        c, h, w = self.shape
        # Buffers follow the codes, so a parameterization built on the CPU
        # also serves a model on a GPU.
        scale = self.scale.to(codes.device)
        spectrum = torch.view_as_complex(
            (codes * scale[None, None, ..., None]).contiguous()
        )
        image = torch.fft.irfftn(spectrum, s=(h, w), norm="ortho")
        image = image[:, :c, :h, :w] / _SPECTRUM_DIVISOR
        return _squash(image, self.color_matrix if self.decorrelate else None)

    def inverse(self, images: torch.Tensor) -> torch.Tensor:
        """Codes of ``images`` ``(N, C, H, W)`` in [0, 1] (the forward map of
        a code is then ``images``, up to the clamp that keeps the logit
        finite), so dataset examples can be starting points."""
        _, h, w = self.shape
        pre = _unsquash(images, self.color_matrix if self.decorrelate else None)
        spectrum = torch.fft.rfftn(pre * _SPECTRUM_DIVISOR, s=(h, w), norm="ortho")
        codes = torch.view_as_real(spectrum)
        extra = self.code_shape[2] - codes.shape[3]
        if extra > 0:  # Lucent's grid has one more column for odd widths
            codes = torch.nn.functional.pad(codes, (0, 0, 0, extra))
        scale = self.scale.to(images.device)
        return (codes / scale[None, None, ..., None]).contiguous()

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
        scale: float = 0.01,
    ) -> torch.Tensor:
        """Lucent's initialisation: small Gaussian spectrum (grey images)."""
        return _gaussian_codes(
            (n, *self.code_shape), generator, device or self.scale.device, scale
        )


class PixelImageParameterization(nn.Module):
    """Pixel codes -> images in [0, 1] by a sigmoid (Lucent with ``fft=False``)."""

    def __init__(self, shape: Sequence[int], decorrelate: bool = True) -> None:
        super().__init__()
        c = int(shape[0])
        self.shape = tuple(int(s) for s in shape)
        self.code_shape = self.shape
        self.decorrelate = bool(decorrelate and c == 3)
        self.register_buffer(
            "color_matrix",
            torch.tensor(color_correlation_normalized.T, dtype=torch.float32),
        )

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        return _squash(codes, self.color_matrix if self.decorrelate else None)

    def inverse(self, images: torch.Tensor) -> torch.Tensor:
        """Codes of ``images`` in [0, 1]."""
        return _unsquash(images, self.color_matrix if self.decorrelate else None)

    def random_codes(
        self,
        n: int,
        generator: Optional[torch.Generator] = None,
        device: Optional[torch.device] = None,
        scale: float = 0.01,
    ) -> torch.Tensor:
        return _gaussian_codes(
            (n, *self.code_shape), generator, device or self.color_matrix.device, scale
        )
