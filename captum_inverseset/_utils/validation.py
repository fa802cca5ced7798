"""Argument checks that name the offending argument.

Every public method validates its arguments with these helpers, so that a
mistake ends in a ``ValueError`` (or ``TypeError``) whose message starts with
the argument's name, never in a number computed from bad input.
"""

import math
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

__all__ = [
    "check_finite",
    "check_finite_inputs",
    "check_module",
    "check_number",
    "check_positive_float",
    "check_positive_int",
    "check_submodule",
    "make_generator",
    "model_device",
]


def _is_number(value: Any) -> bool:
    """A real number that is not a bool (``True`` is an int in Python)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return True
    # numpy scalars and 0-d tensors behave like numbers
    return getattr(value, "ndim", None) == 0 and hasattr(value, "item")


def check_positive_int(name: str, value: Any) -> int:
    """``value`` as an int >= 1 (bools and floats are refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(name: str, value: Any) -> float:
    if not _is_number(value):
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    v = float(value)
    if not v > 0 or math.isinf(v):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_number(
    name: str,
    value: Any,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    strict_minimum: bool = False,
    strict_maximum: bool = False,
) -> float:
    """``value`` as a finite float inside the given bounds.

    Strings, bools, None, NaN and infinities are refused with a message that
    names ``name``.
    """
    if not _is_number(value):
        raise ValueError(f"{name} must be a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if minimum is not None and (v <= minimum if strict_minimum else v < minimum):
        op = ">" if strict_minimum else ">="
        raise ValueError(f"{name} must be {op} {minimum}, got {value!r}")
    if maximum is not None and (v >= maximum if strict_maximum else v > maximum):
        op = "<" if strict_maximum else "<="
        raise ValueError(f"{name} must be {op} {maximum}, got {value!r}")
    return v


def check_finite(name: str, tensor: torch.Tensor) -> None:
    """Raise unless ``tensor`` holds only finite values (and real data)."""
    check_finite_inputs(name, tensor)


def check_finite_inputs(name: str, tensors: Union[torch.Tensor, Sequence[Any]]) -> None:
    """Raise a ``ValueError`` naming ``name`` when a tensor holds NaN or an
    infinity, or lives on the ``meta`` device (no values to explain).

    ``tensors`` is one tensor or a sequence (non-tensor items are skipped, as
    Captum passes them through to the model); integer tensors are always
    finite.
    """
    single = torch.is_tensor(tensors)
    items = (tensors,) if single else tuple(tensors)
    for i, t in enumerate(items):
        if not torch.is_tensor(t):
            continue
        where = name if single or len(items) == 1 else f"{name}[{i}]"
        if t.device.type == "meta":
            raise ValueError(f"{where} is a meta tensor: it holds no values")
        if t.is_floating_point() or t.is_complex():
            bad = ~torch.isfinite(t)
            if bool(bad.any()):
                raise ValueError(
                    f"{where} contains {int(bad.sum())} NaN or infinite "
                    "value(s); remove or impute them first"
                )


def check_module(name: str, value: Any) -> nn.Module:
    """Raise unless ``value`` is an ``nn.Module``; return it."""
    if not isinstance(value, nn.Module):
        raise ValueError(
            f"{name} must be a torch.nn.Module, got {type(value).__name__}"
        )
    return value


def check_submodule(parent: Any, layer: nn.Module, parent_name: str, name: str) -> None:
    """Raise if ``layer`` is not a submodule of ``parent`` (when it is a Module)."""
    if not isinstance(parent, nn.Module):
        return
    if not any(m is layer for m in parent.modules()):
        raise ValueError(f"{name} is not a submodule of {parent_name}")


def model_device(model: Any, default: Optional[torch.device] = None) -> torch.device:
    """Device of a module's first parameter or buffer (CPU when it has none).

    A model on the ``meta`` device has no values to compute with: refused.
    """
    device = None
    if isinstance(model, nn.Module):
        for t in model.parameters():
            device = t.device
            break
        else:
            for t in model.buffers():
                device = t.device
                break
    device = device or default or torch.device("cpu")
    if device.type == "meta":
        raise ValueError(
            "the model is on the meta device (its parameters hold no values); "
            "load or initialise its weights first"
        )
    return device


def make_generator(seed: Optional[int], device: torch.device = None) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (random seed when None).

    Random numbers are drawn on the CPU and moved to the model's device, so a
    seed gives the same samples on every device.
    """
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        gen.manual_seed(seed)
    return gen
