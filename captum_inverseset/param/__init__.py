"""Parameterizations: codes -> valid model inputs.

Every parameterization is an ``nn.Module`` with ``forward(codes) -> inputs``,
a ``code_shape`` attribute and ``random_codes(n, generator=None, device=None)``.
"""

from .box import BoxParameterization
from .generator import GeneratorParameterization, as_parameterization
from .images import FFTImageParameterization, PixelImageParameterization
from .transforms import (
    Jitter,
    Pad,
    RandomRotate,
    RandomScale,
    TransformPipeline,
    standard_transforms,
)

__all__ = [
    "BoxParameterization",
    "FFTImageParameterization",
    "GeneratorParameterization",
    "Jitter",
    "Pad",
    "PixelImageParameterization",
    "RandomRotate",
    "RandomScale",
    "TransformPipeline",
    "as_parameterization",
    "standard_transforms",
]
