r"""How a removed neuron is taken out of the network: its removal value.

A removed unit's output is *replaced* (selected, never multiplied) by its
removal value, the ``fill`` of its layer, a number or a tensor of one
example's unit shape. Every engine reads the fills from the game, so a
removal strategy only has to say what they are:

* ``"mean"`` (the paper's choice): the unit's mean output over the
  evaluation examples (for a convolutional channel, its mean map), so the
  next layer still receives activations of the usual scale;
* ``"zero"``: zero, what zeroing a filter's weights and bias does to a
  convolution's output;
* ``"conv_bn"``: the rule of the paper's code for a convolution followed by
  a BatchNorm: the filter's weights are zeroed and so are the BatchNorm's
  scale and running mean of that channel, so after the BatchNorm the
  channel outputs the BatchNorm's shift :math:`\beta_c`. At a convolution
  player with a BatchNorm after it, the fill is that BatchNorm's running
  mean (:math:`\mathrm{BN}(\mu_c) = \beta_c` exactly); at a BatchNorm
  player, :math:`\beta_c`; at a convolution with no BatchNorm after it,
  zero.
"""

from typing import Any, Dict, List, Optional, Sequence, Type, Union

import torch
from torch import nn

__all__ = [
    "REMOVALS",
    "ConvBatchNormRemoval",
    "MeanRemoval",
    "Removal",
    "ZeroRemoval",
    "resolve_removal",
]

_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)

Fill = Union[float, torch.Tensor]


class Removal:
    """A removal strategy: the fill of each player layer.

    Attributes:
        name (str): the name results report.
    """

    name = "removal"

    def fills(
        self,
        model: Any,
        layers: Sequence[nn.Module],
        means: Sequence[torch.Tensor],
    ) -> List[Fill]:
        """One fill per player layer, given the model, the layers and the
        mean of each layer's output over the evaluation examples (float64,
        one example's unit shape)."""
        raise NotImplementedError


class MeanRemoval(Removal):
    """A removed unit outputs its mean over the evaluation examples."""

    name = "mean"

    def fills(self, model, layers, means):
        return [m.float() for m in means]


class ZeroRemoval(Removal):
    """A removed unit outputs zero."""

    name = "zero"

    def fills(self, model, layers, means):
        return [0.0 for _ in means]


class ConvBatchNormRemoval(Removal):
    """The paper's code: a removed filter's channel outputs the shift of the
    BatchNorm after it (see the module's docstring)."""

    name = "conv_bn"

    def fills(self, model, layers, means):
        following = _batchnorm_after(model, layers)
        fills: List[Fill] = []
        for i, (layer, mean) in enumerate(zip(layers, means)):
            bn = layer if isinstance(layer, _BATCHNORMS) else following.get(i)
            if bn is None:
                if not isinstance(layer, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                    raise ValueError(
                        "removal='conv_bn' applies to convolution and BatchNorm "
                        f"player layers, got {type(layer).__name__}"
                    )
                fills.append(0.0)
                continue
            if bn.running_mean is None:
                raise ValueError(
                    "removal='conv_bn' needs BatchNorm layers with running "
                    "statistics (track_running_stats=True)"
                )
            if bn is layer:
                per_channel = (
                    bn.bias.detach()
                    if bn.bias is not None
                    else torch.zeros_like(bn.running_mean)
                )
            else:
                per_channel = bn.running_mean.detach()
            shape = (-1,) + (1,) * (mean.dim() - 1)
            fills.append(per_channel.reshape(shape).expand(mean.shape).float().clone())
        return fills


def _batchnorm_after(model: Any, layers: Sequence[nn.Module]) -> Dict[int, nn.Module]:
    """Player layer index -> the BatchNorm module that alone reads its output."""
    from .engines.fx_split import _LeafTracer, _module_name

    if not isinstance(model, nn.Module):
        raise ValueError("removal='conv_bn' needs forward_func to be an nn.Module")
    try:
        graph = _LeafTracer(layers).trace(model)
    except Exception as err:  # noqa: BLE001
        raise ValueError(
            "removal='conv_bn' traces the model with torch.fx to find the "
            f"BatchNorm after each convolution, and tracing failed: {err}"
        ) from None
    names = {_module_name(model, layer): i for i, layer in enumerate(layers)}
    found: Dict[int, nn.Module] = {}
    for n in graph.nodes:
        if n.op != "call_module" or n.target not in names:
            continue
        users = list(n.users)
        if len(users) == 1 and users[0].op == "call_module":
            module: Optional[nn.Module] = model.get_submodule(str(users[0].target))
            if isinstance(module, _BATCHNORMS):
                found[names[n.target]] = module
    return found


REMOVALS: Dict[str, Type[Removal]] = {
    "mean": MeanRemoval,
    "zero": ZeroRemoval,
    "conv_bn": ConvBatchNormRemoval,
}


def resolve_removal(removal: Union[str, Removal]) -> Removal:
    """The strategy named ``removal`` (a key of :data:`REMOVALS`) or a
    :class:`Removal` instance."""
    if isinstance(removal, Removal):
        return removal
    if isinstance(removal, str) and removal in REMOVALS:
        return REMOVALS[removal]()
    names = " or ".join(repr(k) for k in REMOVALS)
    raise ValueError(f"removal must be {names}, got {removal!r}")
