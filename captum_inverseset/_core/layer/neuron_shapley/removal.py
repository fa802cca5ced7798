"""How a removed neuron is taken out of the network: its removal value.

A removed unit's output is *replaced* (selected, never multiplied) by its
removal value, the ``fill`` of its layer, a number or a tensor of one
example's unit shape. Every engine reads the fills from the game, so a
removal strategy only has to say what they are:

* ``"mean"`` (the paper's choice): the unit's mean output over the
  evaluation examples (for a convolutional channel, its mean map), so the
  next layer still receives activations of the usual scale;
* ``"zero"``: zero, what zeroing a filter's weights and bias does to a
  convolution's output.
"""

from typing import Dict, List, Sequence, Type, Union

import torch
from torch import nn

__all__ = ["REMOVALS", "MeanRemoval", "Removal", "ZeroRemoval", "resolve_removal"]

Fill = Union[float, torch.Tensor]


class Removal:
    """A removal strategy: the fill of each player layer.

    Attributes:
        name (str): the name results report.
    """

    name = "removal"

    def fills(
        self, layers: Sequence[nn.Module], means: Sequence[torch.Tensor]
    ) -> List[Fill]:
        """One fill per player layer, given the layers and the mean of each
        layer's output over the evaluation examples (float64, one example's
        unit shape)."""
        raise NotImplementedError


class MeanRemoval(Removal):
    """A removed unit outputs its mean over the evaluation examples."""

    name = "mean"

    def fills(self, layers, means):
        return [m.float() for m in means]


class ZeroRemoval(Removal):
    """A removed unit outputs zero."""

    name = "zero"

    def fills(self, layers, means):
        return [0.0 for _ in means]


REMOVALS: Dict[str, Type[Removal]] = {"mean": MeanRemoval, "zero": ZeroRemoval}


def resolve_removal(removal: Union[str, Removal]) -> Removal:
    """The strategy named ``removal`` (a key of :data:`REMOVALS`) or a
    :class:`Removal` instance."""
    if isinstance(removal, Removal):
        return removal
    if isinstance(removal, str) and removal in REMOVALS:
        return REMOVALS[removal]()
    names = " or ".join(repr(k) for k in REMOVALS)
    raise ValueError(f"removal must be {names}, got {removal!r}")
