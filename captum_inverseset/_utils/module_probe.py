"""Probes of a forward pass: which modules run in which order, and how many
bytes the leaf modules output.

Both are context managers around hooks (the package registers hooks only in
``_utils``), removed when the block ends, also when it raises.
"""

from contextlib import contextmanager
from typing import Iterator, List, Sequence

import torch
from torch import nn

__all__ = ["OutputBytes", "leaf_output_bytes", "record_call_order"]


@contextmanager
def record_call_order(modules: Sequence[nn.Module]) -> Iterator[List[int]]:
    """Inside the block, the yielded list receives the index (in
    ``modules``) of every module call, in call order (a module called twice
    appears twice)."""
    calls: List[int] = []
    handles = []
    try:
        for i, module in enumerate(modules):
            handles.append(
                module.register_forward_hook(
                    lambda m, a, o, i=i: calls.append(i)  # noqa: B023
                )
            )
        yield calls
    finally:
        for h in handles:
            h.remove()


class OutputBytes:
    """What :func:`leaf_output_bytes` counted: ``total`` bytes of the tensor
    outputs of every leaf module call, and ``largest``, the largest single
    output."""

    def __init__(self) -> None:
        self.total = 0
        self.largest = 0

    def add(self, output: object) -> None:
        items = output if isinstance(output, (tuple, list)) else (output,)
        for t in items:
            if torch.is_tensor(t):
                n = t.numel() * t.element_size()
                self.total += n
                self.largest = max(self.largest, n)


@contextmanager
def leaf_output_bytes(model: nn.Module) -> Iterator[OutputBytes]:
    """Count the bytes output by ``model``'s leaf modules inside the block (an
    upper bound on the activations one forward pass holds at once)."""
    record = OutputBytes()
    handles = []
    try:
        for m in model.modules():
            if next(m.children(), None) is None:
                handles.append(m.register_forward_hook(lambda m, a, o: record.add(o)))
        yield record
    finally:
        for h in handles:
            h.remove()
