"""Argument checks shared by the methods of :class:`EGBAS`."""

from typing import Any, Dict, Iterator

import torch
from torch import Tensor

from ...._utils.memory import check_memory

__all__ = [
    "MASK_OPTIONS",
    "check_batch_memory",
    "check_bool",
    "check_mask_kwargs",
    "check_result_memory",
    "query_batches",
]

MASK_OPTIONS = (
    "sparsity",
    "n_steps",
    "threshold",
    "lr",
    "temperature",
    "init_keep",
    "show_progress",
)


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def check_mask_kwargs(mask_kwargs: Any) -> Dict[str, Any]:
    if mask_kwargs is None:
        return {}
    if not isinstance(mask_kwargs, dict):
        raise ValueError(
            f"mask_kwargs must be a dict of supporting_boundaries() arguments, "
            f"got {type(mask_kwargs).__name__}"
        )
    unknown = sorted(set(mask_kwargs) - set(MASK_OPTIONS))
    if unknown:
        raise TypeError(
            f"mask_kwargs has unknown argument(s) {unknown} of "
            f"supporting_boundaries(); valid: {list(MASK_OPTIONS)}"
        )
    return dict(mask_kwargs)


def query_batches(inputs: Any) -> Iterator[Tensor]:
    """The batches of query latents of ``attribute``: a tensor is one batch;
    an iterable (a DataLoader) yields tensors or ``(latents, ...)`` tuples."""
    if torch.is_tensor(inputs):
        yield inputs
        return
    if isinstance(inputs, (tuple, list)) or not hasattr(inputs, "__iter__"):
        raise ValueError(
            "inputs must be a tensor of query latents or an iterable of such "
            f"batches (e.g. a DataLoader), got {type(inputs).__name__}"
        )
    for batch in inputs:
        if isinstance(batch, (tuple, list)) and batch:
            batch = batch[0]
        yield batch


def check_result_memory(
    n_samples: int, z0: Tensor, out0: Tensor, extra_per_row: int = 0
) -> None:
    """The result holds ``n_samples`` latents and outputs at once."""
    per_row = (z0[0].numel() + out0[0].numel()) * z0.element_size()
    check_memory(
        "n_samples", n_samples, n_samples * (per_row + extra_per_row), z0.device
    )


def check_batch_memory(
    name: str, value: int, rows: int, z0: Tensor, pre0: Tensor, out0: Tensor
) -> None:
    """One forward pass holds ``rows`` latents, layer outputs and outputs
    (twice, for the generator's intermediate activations)."""
    per_row = z0[0].numel() + 2 * (pre0[0].numel() + out0[0].numel())
    check_memory(name, value, rows * per_row * z0.element_size(), z0.device)
