"""From the user's arguments to what the sampler optimises: the
parameterization (codes -> valid inputs), the random transforms, starting
codes and the ``"top"`` band request."""

from typing import Any, Callable, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...._utils.captum_compat import format_inputs, is_tuple
from ...._utils.data import is_tensor_data, iter_batches
from ...._utils.validation import check_finite_inputs, model_device
from ....param import (
    AffineRange,
    BoxParameterization,
    FFTImageParameterization,
    IdentityParameterization,
    PixelImageParameterization,
    TupleParameterization,
    standard_transforms,
)
from .options import check_shape, is_number

__all__ = [
    "box_parameterization",
    "build_parameterization",
    "check_init_codes",
    "make_transform",
    "parse_input_range",
    "starting_points",
    "top_fraction",
]


def top_fraction(activation_range: Any) -> Optional[float]:
    """The fraction of ``"top"`` / ``("top", fraction)``, else None."""
    if isinstance(activation_range, str):
        if activation_range != "top":
            raise ValueError(
                f"activation_range must be (z1, z2), 'top' or ('top', fraction), "
                f"got {activation_range!r}"
            )
        return 0.8
    if (
        isinstance(activation_range, (tuple, list))
        and len(activation_range) == 2
        and isinstance(activation_range[0], str)
        and activation_range[0] == "top"
    ):
        return activation_range[1]
    return None


def parse_input_range(input_range: Any) -> Tuple[float, float]:
    if (
        isinstance(input_range, (str, bytes))
        or not isinstance(input_range, Sequence)
        or len(input_range) != 2
        or not all(is_number(v) for v in input_range)
    ):
        raise ValueError(
            f"input_range must be (low, high) or None, got {input_range!r}"
        )
    low, high = (float(v) for v in input_range)
    if not (torch.isfinite(torch.tensor([low, high])).all() and low < high):
        raise ValueError(
            f"input_range must be finite with low < high, got {input_range!r}"
        )
    return low, high


def check_init_codes(init_codes: Any, param: nn.Module, n: int) -> Tensor:
    if not torch.is_tensor(init_codes):
        raise ValueError(
            f"init_codes must be a tensor, got {type(init_codes).__name__}"
        )
    check_finite_inputs("init_codes", init_codes)
    want = (n, *tuple(param.code_shape))
    if tuple(init_codes.shape) != want:
        raise ValueError(
            f"init_codes must have shape {want} (n_samples, *code_shape), got "
            f"{tuple(init_codes.shape)}"
        )
    return init_codes.detach().float()


def make_transform(transforms: Any, shape: Sequence[int]) -> Optional[Callable]:
    if transforms is None or transforms is False:
        return None
    if isinstance(transforms, str):
        if transforms != "auto":
            raise ValueError(
                f"transforms must be 'auto', None or a callable, got {transforms!r}"
            )
        if len(shape) == 3 and min(shape[1:]) >= 32:
            return standard_transforms(min(shape[1:]))
        return None
    if not callable(transforms):
        raise ValueError("transforms must be 'auto', None or a callable")
    return transforms


def build_parameterization(
    forward_func: Callable,
    generator_param: Optional[nn.Module],
    input_shape: Any,
    input_range: Any,
    image_parameterization: str,
    transforms: Any,
) -> Tuple[nn.Module, Optional[Callable]]:
    """The parameterization codes -> inputs and the optimisation transforms:
    the generator's when there is one, else one that keeps inputs valid."""
    if input_shape is not None:
        input_shape = check_shape("input_shape", input_shape)
    if generator_param is not None:
        if transforms == "auto":
            transforms = None
        return generator_param, make_transform(transforms, input_shape or ())
    if input_shape is None:
        raise ValueError("input_shape is required when there is no generator")
    if image_parameterization not in ("fft", "pixel", "box"):
        raise ValueError(
            "image_parameterization must be 'fft', 'pixel' or 'box', got "
            f"{image_parameterization!r}"
        )
    device = model_device(forward_func)
    if input_range is None:
        param: nn.Module = IdentityParameterization(input_shape)
        return param, make_transform(transforms, input_shape)
    low, high = parse_input_range(input_range)
    if len(input_shape) == 3 and image_parameterization != "box":
        cls = (
            FFTImageParameterization
            if image_parameterization == "fft"
            else PixelImageParameterization
        )
        param = cls(input_shape)
        if (low, high) != (0.0, 1.0):
            param = AffineRange(param, low, high)
    else:
        param = BoxParameterization(input_shape, low, high)
    return param.to(device), make_transform(transforms, input_shape)


def starting_points(inputs: Any) -> Tuple[bool, Tuple[Tensor, ...], Optional[int]]:
    """``attribute``'s inputs as ``(is_tuple, tensors, loader_batch_size)``.

    ``inputs`` is a tensor, a tuple of tensors (a model with several inputs)
    or an iterable of batches (a DataLoader of ``x`` or ``(x, ...)``), whose
    batches are joined (the samples are returned shaped like them).
    """
    if is_tensor_data(inputs):
        tuple_inputs, xs, loader_batch = is_tuple(inputs), format_inputs(inputs), None
    else:
        parts, loader_batch = [], None
        for batch, _ in iter_batches(inputs, None, 1, "inputs", check_finite=False):
            parts.append(batch)
            loader_batch = loader_batch or int(batch[0].shape[0])
        if not parts:
            raise ValueError("inputs holds no examples")
        xs = tuple(torch.cat(p) for p in zip(*parts))
        tuple_inputs = len(xs) > 1
    for i, x in enumerate(xs):
        name = "inputs" if len(xs) == 1 else f"inputs[{i}]"
        if not torch.is_tensor(x):
            raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
        check_finite_inputs(name, x)
        if not x.is_floating_point():
            raise ValueError(
                f"{name} must be a floating-point tensor (the samples are "
                f"optimised continuously), got {x.dtype}"
            )
        if x.dim() < 1 or x.shape[0] == 0 or x.shape[0] != xs[0].shape[0]:
            raise ValueError(
                "inputs must have a non-empty batch dimension, the same in every tensor"
            )
    return tuple_inputs, tuple(x.detach() for x in xs), loader_batch


def box_parameterization(xs: Tuple[Tensor, ...], input_range: Any):
    """``attribute``'s parameterization of its inputs ``xs``, their codes and
    the shape of one input (None for several): a box per input
    (``input_range``), or the identity when it is None."""
    bounds = None if input_range is None else parse_input_range(input_range)
    parts = [
        IdentityParameterization(x.shape[1:])
        if bounds is None
        else BoxParameterization(x.shape[1:], *bounds).to(x.device)
        for x in xs
    ]
    param = parts[0] if len(xs) == 1 else TupleParameterization(parts)
    starts = param.inverse(xs[0] if len(xs) == 1 else xs)
    shape = tuple(xs[0].shape[1:]) if len(xs) == 1 else None
    return param, starts, shape
