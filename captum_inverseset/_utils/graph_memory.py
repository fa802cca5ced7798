"""How much memory one example's autograd graph holds, measured on a probe.

Optimising a batch of inputs through a model keeps every tensor that autograd
saves for the backward pass. How much that is depends on the model, so it is
measured rather than guessed: :func:`graph_bytes_per_example` runs the
computation on one and on two examples with
``torch.autograd.graph.saved_tensors_hooks`` counting the bytes of every saved
tensor (each storage once), and returns the difference, which leaves out what
does not grow with the batch (the weights). Callers multiply it by their batch
size and pass the product to :func:`~captum_inverseset._utils.memory.check_memory`
before allocating the batch.
"""

from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["graph_bytes_per_example", "tensor_bytes"]


def tensor_bytes(value: Any) -> int:
    """Bytes of the tensors in ``value`` (a tensor, or a tuple/list of them)."""
    if torch.is_tensor(value):
        return value.numel() * value.element_size()
    if isinstance(value, (tuple, list)):
        return sum(tensor_bytes(v) for v in value)
    return 0


def _saved_bytes(fn: Callable[[Tensor], Any], codes: Tensor) -> int:
    storages = {}

    def pack(t: Tensor) -> Tensor:
        storage = t.untyped_storage()
        storages[(t.device, storage.data_ptr())] = storage.nbytes()
        return t

    with (
        torch.enable_grad(),
        torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t),
    ):
        leaf = codes.detach().clone().requires_grad_(True)
        out = fn(leaf)
    return sum(storages.values()) + tensor_bytes(out)


def graph_bytes_per_example(fn: Callable[[Tensor], Any], codes: Tensor) -> float:
    """Bytes that ``fn``'s autograd graph holds per example.

    Args:
        fn: codes ``(n, ...)`` -> outputs, differentiable in the codes.
        codes: at least two example codes (only the first two are used).

    Returns:
        float: saved-tensor bytes for two examples minus those for one (at
        least the bytes of one code), i.e. what each further example adds.
    """
    if codes.shape[0] < 2:
        raise ValueError("graph_bytes_per_example needs at least two codes")
    one = _saved_bytes(fn, codes[:1])
    two = _saved_bytes(fn, codes[:2])
    return float(max(two - one, tensor_bytes(codes[:1])))
