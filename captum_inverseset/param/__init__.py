"""Parameterizations: codes -> valid model inputs.

Every parameterization is an ``nn.Module`` with ``forward(codes) -> inputs``,
a ``code_shape`` attribute and ``random_codes(n, generator=None, device=None)``.
Encoders (:class:`PooledEncoder`) map inputs to the vectors that inverse-set
sampling measures spread in.
"""

from .box import BoxParameterization
from .encoders import PooledEncoder
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
from .wrappers import AffineRange, IdentityParameterization, TupleParameterization

__all__ = [
    "AffineRange",
    "BoxParameterization",
    "FFTImageParameterization",
    "GeneratorParameterization",
    "IdentityParameterization",
    "Jitter",
    "Pad",
    "PixelImageParameterization",
    "PooledEncoder",
    "RandomRotate",
    "RandomScale",
    "TransformPipeline",
    "TupleParameterization",
    "as_parameterization",
    "standard_transforms",
]
