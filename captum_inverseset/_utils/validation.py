"""Argument checks that name the offending argument."""

import math
from typing import Any, Optional

import torch
from torch import nn


def check_positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_positive_float(name: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a positive number, got {value!r}") from None
    if not v > 0 or math.isinf(v) or math.isnan(v):
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return v


def check_finite(name: str, tensor: torch.Tensor) -> None:
    if not torch.isfinite(tensor).all():
        raise ValueError(f"{name} contains NaN or infinite values")


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
    """Device of a module's first parameter or buffer (CPU when it has none)."""
    if isinstance(model, nn.Module):
        for t in model.parameters():
            return t.device
        for t in model.buffers():
            return t.device
    return default or torch.device("cpu")


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
