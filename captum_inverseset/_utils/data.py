"""Evaluation data: batching of tensors and DataLoaders, and target labels.

Shared by ``_core/layer``, ``_core/neuron`` and :mod:`captum_inverseset.ablation`
(Captum's ``layer`` and ``neuron`` packages never import each other; what both
need lives here).
"""

import math
from typing import Any, Iterator, Optional, Tuple, Union

import torch
from torch import Tensor

from .captum_compat import format_inputs
from .validation import check_finite_inputs

__all__ = [
    "DatasetLike",
    "check_target_range",
    "count_batches",
    "format_target",
    "is_tensor_data",
    "iter_batches",
]

DatasetLike = Union[Tensor, Tuple[Tensor, ...], Any]


def is_tensor_data(inputs: Any) -> bool:
    """A tensor or a non-empty tuple of tensors (not an iterable of batches)."""
    return torch.is_tensor(inputs) or (
        isinstance(inputs, tuple) and len(inputs) > 0 and torch.is_tensor(inputs[0])
    )


def iter_batches(
    inputs: DatasetLike,
    extra: Optional[Tensor],
    batch_size: int,
    extra_name: str,
    check_finite: bool = True,
) -> Iterator[Tuple[Tuple[Tensor, ...], Optional[Tensor]]]:
    """Yield ``(inputs_tuple, extra_or_None)`` batches.

    ``inputs`` is a tensor or a tuple of tensors (chunked by ``batch_size``,
    ``extra`` chunked alongside), or an iterable of batches (a DataLoader) whose
    items are ``x`` or ``(x, extra)`` with ``x`` a tensor or tuple of tensors.
    With ``check_finite``, a batch holding NaN or an infinity raises a
    ``ValueError`` naming ``inputs``.
    """
    if is_tensor_data(inputs):
        tensors = format_inputs(inputs)
        n = tensors[0].shape[0] if tensors[0].dim() else 0
        if any(t.dim() == 0 or t.shape[0] != n for t in tensors):
            raise ValueError("inputs: all tensors must have the same first dimension")
        if check_finite:
            check_finite_inputs("inputs", tensors)
        if extra is not None and (not torch.is_tensor(extra) or extra.shape[0] != n):
            got = extra.shape[0] if torch.is_tensor(extra) and extra.dim() else extra
            raise ValueError(f"{extra_name} has {got} entries but inputs has {n}")
        for start in range(0, n, batch_size):
            sl = slice(start, start + batch_size)
            yield (
                tuple(t[sl] for t in tensors),
                None if extra is None else extra[sl],
            )
        return
    if extra is not None:
        raise ValueError(
            f"{extra_name} must be None when inputs is a DataLoader: yield "
            f"(inputs, {extra_name}) batches instead"
        )
    try:
        iterator = iter(inputs)
    except TypeError:
        raise ValueError(
            "inputs must be a tensor, a tuple of tensors or an iterable of batches "
            f"(e.g. a DataLoader), got {type(inputs).__name__}"
        ) from None
    for batch in iterator:
        if torch.is_tensor(batch):
            xs, y = (batch,), None
        elif isinstance(batch, (list, tuple)) and len(batch) >= 1:
            x = batch[0]
            if isinstance(x, list):
                x = tuple(x)
            if not is_tensor_data(x):
                raise ValueError(
                    "every batch of inputs must start with a tensor (or a tuple "
                    f"of tensors), got {type(x).__name__}"
                )
            xs, y = format_inputs(x), (batch[1] if len(batch) > 1 else None)
        else:
            raise ValueError(
                "every batch of inputs must be a tensor or an (inputs, "
                f"{extra_name}) pair, got {type(batch).__name__}"
            )
        if check_finite:
            check_finite_inputs("inputs", xs)
        yield xs, y


def count_batches(inputs: DatasetLike, batch_size: int) -> Optional[int]:
    """Number of batches :func:`iter_batches` yields, None when unknown."""
    if is_tensor_data(inputs):
        n = format_inputs(inputs)[0].shape[0]
        return -(-n // batch_size)
    try:
        return len(inputs)
    except TypeError:
        return None


def format_target(
    target: Any,
    n: int,
    device: Optional[torch.device] = None,
    name: str = "target",
) -> Optional[Tensor]:
    """Class labels as a ``(n,)`` long tensor (None stays None).

    Accepts what Captum accepts for a classification target: one int for
    every example, or one integer label per example (a tensor, list or
    tuple). Bools, fractional numbers (``3.7``), NaN, negative labels and a
    wrong number of labels raise a ``ValueError`` naming ``name``. Float
    tensors holding whole numbers (labels read from a float array) are
    accepted.
    """
    if target is None:
        return None
    if isinstance(target, bool):
        raise ValueError(f"{name} must be an int class index or labels, got {target!r}")
    if isinstance(target, int):
        labels = torch.full((n,), target, dtype=torch.long)
    elif isinstance(target, float):
        if not (math.isfinite(target) and target.is_integer()):
            raise ValueError(f"{name} must hold integer class indices, got {target!r}")
        labels = torch.full((n,), int(target), dtype=torch.long)
    else:
        try:
            labels = torch.as_tensor(target)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(
                f"{name} must be an int or one integer label per example, got "
                f"{type(target).__name__}"
            ) from None
        if labels.dtype == torch.bool:
            raise ValueError(f"{name} must hold integer class indices, not bools")
        if labels.is_floating_point() or labels.is_complex():
            if labels.device.type == "meta":
                raise ValueError(f"{name} is a meta tensor: it holds no values")
            whole = torch.isfinite(labels) & (labels == labels.round())
            if not bool(whole.all()):
                bad = labels[~whole].flatten()[0].item()
                raise ValueError(f"{name} must hold integer class indices, got {bad!r}")
        if labels.dim() == 0:
            labels = labels.reshape(1).expand(n)
        if tuple(labels.shape) != (n,):
            raise ValueError(
                f"{name} must be an int or have shape ({n},) (one label per "
                f"input), got shape {tuple(labels.shape)}"
            )
        labels = labels.long()
    if bool((labels < 0).any()):
        raise ValueError(
            f"{name} must hold non-negative class indices, got {int(labels.min())}"
        )
    return labels if device is None else labels.to(device)


def check_target_range(labels: Tensor, n_classes: int, name: str = "target") -> None:
    """Raise unless every label indexes one of the model's ``n_classes`` outputs."""
    if labels.numel() and int(labels.max()) >= n_classes:
        raise ValueError(
            f"{name} has class index {int(labels.max())}, but the model has "
            f"{n_classes} outputs (valid: 0 to {n_classes - 1})"
        )
