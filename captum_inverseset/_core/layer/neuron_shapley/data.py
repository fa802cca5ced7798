"""Evaluation data of the Neuron Shapley game: batches and labels.

:func:`make_batches` turns the user's ``inputs`` (a tensor, a tuple of
tensors or a DataLoader), ``target`` and ``additional_forward_args`` into
the game's evaluation batches on the model's device, on top of
:mod:`captum_inverseset._utils.data` (which refuses non-finite inputs);
:func:`label_batches` checks the labels of the built-in metrics against the
model's classes and labels unlabelled batches with the model's predictions.
"""

from typing import Any, Callable, List, Optional, Tuple

import torch

from ...._utils.captum_compat import format_additional_forward_args, format_inputs
from ...._utils.data import (
    check_target_range,
    format_target,
    is_tensor_data,
    iter_batches,
)
from ...._utils.validation import check_finite_inputs
from .metrics import check_logits

__all__ = ["Batch", "call_model", "label_batches", "make_batches"]

# One evaluation batch: (inputs tuple, labels or None, additional args or None)
Batch = Tuple[Tuple[torch.Tensor, ...], Optional[torch.Tensor], Any]


def call_model(forward_func: Callable, inputs: tuple, extra: Any) -> torch.Tensor:
    if extra is None:
        return forward_func(*inputs)
    return forward_func(*inputs, *extra)


def _labels(target: Any, n: int, builtin: bool, name: str) -> Optional[torch.Tensor]:
    """Labels of ``n`` examples: class indices for the built-in metrics
    (:func:`format_target`); for a callable metric, whatever it takes, one
    entry per example (an int is repeated), finite."""
    if builtin or target is None:
        return format_target(target, n, name=name)
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((n,), target, dtype=torch.long)
    try:
        labels = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be a tensor, a list or an int, got {type(target).__name__}"
        ) from None
    if labels.dim() == 0:
        labels = labels.reshape(1).expand(n)
    if labels.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per input ({n}), got shape "
            f"{tuple(labels.shape)}"
        )
    check_finite_inputs(name, labels)
    return labels


def make_batches(
    inputs: Any,
    target: Any,
    additional_forward_args: Any,
    batch_size: Optional[int],
    device: torch.device,
    builtin_metric: bool,
) -> Tuple[List[Batch], int]:
    """The evaluation batches of a game, on ``device``, and their example count.

    ``inputs`` is a tensor or tuple of tensors (split in ``batch_size``
    chunks, ``target`` alongside) or an iterable of batches (a DataLoader)
    yielding ``x`` or ``(x, labels)``. ``target`` is then an int, labels for
    every example in the loader's order, or None; a loader that yields
    labels takes no ``target``. Non-finite inputs raise a ``ValueError``
    naming ``inputs`` (:func:`~captum_inverseset._utils.data.iter_batches`);
    labels are checked by :func:`_labels`.
    """
    extra = format_additional_forward_args(additional_forward_args)
    if isinstance(inputs, (str, bytes, dict)) or inputs is None:
        raise ValueError(
            "inputs must be a tensor, a tuple of tensors or a DataLoader, got "
            f"{type(inputs).__name__}"
        )
    if is_tensor_data(inputs):
        xs = format_inputs(inputs)
        if xs[0].dim() == 0 or xs[0].shape[0] == 0:
            raise ValueError("inputs is empty")
        n = xs[0].shape[0]
        labels = _labels(target, n, builtin_metric, "target")
        raw = list(iter_batches(inputs, labels, batch_size or n, "target"))
    else:
        raw = list(iter_batches(inputs, None, 1, "target"))
        n = sum(xb[0].shape[0] for xb, _ in raw)
        if n == 0:
            raise ValueError("inputs is empty")
        given = [y is not None for _, y in raw]
        if any(given):
            if target is not None:
                raise ValueError(
                    "target must be None when the DataLoader yields (inputs, "
                    "labels) batches: the labels come from the loader"
                )
            if not all(given):
                raise ValueError(
                    "the DataLoader yields labels with some batches but not others"
                )
            raw = [
                (xb, _labels(y, xb[0].shape[0], builtin_metric, "target"))
                for xb, y in raw
            ]
        elif target is not None:
            labels = _labels(target, n, builtin_metric, "target")
            sizes = [xb[0].shape[0] for xb, _ in raw]
            raw = [(xb, y) for (xb, _), y in zip(raw, labels.split(sizes))]
    batches: List[Batch] = []
    for xb, y in raw:
        if any(t.shape[0] != xb[0].shape[0] for t in xb):
            raise ValueError("inputs: all tensors must have the same first dimension")
        if xb[0].shape[0] == 0:
            continue
        batches.append(
            (
                tuple(t.to(device) for t in xb),
                None if y is None else y.to(device),
                extra,
            )
        )
    return batches, n


def label_batches(
    forward_func: Callable,
    batches: List[Batch],
    metric: str,
    metric_class: Optional[int],
) -> List[Batch]:
    """For the built-in metrics: the model must return logits ``(N,
    classes)``, and labels and ``metric_class`` must index one of its
    classes; batches without labels get the model's own predictions."""
    labeled = []
    n_classes = 0
    for i, (inputs, labels, extra) in enumerate(batches):
        if labels is None or i == 0:
            with torch.no_grad():
                out = call_model(forward_func, inputs, extra)
            check_logits(out, metric)
            n_classes = out.shape[1]
            if labels is None:
                labels = out.argmax(-1)
        check_target_range(labels, n_classes)
        labeled.append((inputs, labels, extra))
    if metric == "class_accuracy" and metric_class is not None:
        if metric_class >= n_classes:
            raise ValueError(
                f"metric_class={metric_class} is not a class of the model, which "
                f"has {n_classes} outputs (valid: 0 to {n_classes - 1})"
            )
    return labeled
