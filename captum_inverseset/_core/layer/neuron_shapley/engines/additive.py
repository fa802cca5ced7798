r"""Incremental evaluation of the linear layer that follows a player layer.

Removing neurons of a player layer replaces whole channels of its output by
their removal value ``f``. After the channel-wise head (activation, pooling;
see :func:`~.segments.split_channelwise_head`), the next module of the
segment is often linear: a convolution or, after a flatten, a linear layer.
For binary channel masks ``m`` and ``m'`` of the same head output ``h``,
linearity gives

.. math::

    L\big(m' \odot h + (1 - m') \odot f\big)
    = L\big(m \odot h + (1 - m) \odot f\big)
    + \sum_{c:\, m'_c \neq m_c} (m'_c - m_c)\, D_c,
    \qquad D_c = W_{:,c} \ast (h_c - f_c),

where ``W_{:,c}`` is the part of the weight that reads input channel ``c``.
Consecutive coalitions of a permutation walk differ by one player, so the
linear layer's output for the next coalition is the previous one plus one
channel's contribution ``D_c``: a convolution with one input channel (or a
``(n, S) @ (S, out)`` product) instead of the whole layer. For the first
player layer, whose input never changes, the full output and every ``D_c``
are computed once per evaluation batch. The results equal the direct
evaluation up to floating-point rounding.
"""

import math
from typing import List, NamedTuple, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import fx, nn

_CONV_FNS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


class LinearFront(NamedTuple):
    flatten: bool
    module: nn.Module
    tail: fx.GraphModule


def _is_flatten(node: fx.Node, segment: fx.GraphModule, source: fx.Node) -> bool:
    """``node`` flattens ``source`` from dimension 1 to the end."""
    if node.op == "call_module":
        mod = segment.get_submodule(str(node.target))
        return (
            isinstance(mod, nn.Flatten)
            and node.args == (source,)
            and not node.kwargs
            and mod.start_dim == 1
            and mod.end_dim == -1
        )
    if node.op == "call_function" and node.target is torch.flatten:
        args = node.args[1:] + tuple(node.kwargs.get(k) for k in ("start_dim",))
        return (
            node.args[:1] == (source,)
            and set(node.kwargs) <= {"start_dim"}
            and 1 in args
            and len(node.args) <= 2
        )
    if node.op == "call_method" and node.target == "flatten":
        return node.args == (source, 1) and not node.kwargs
    return False


def _linear_module(module: nn.Module) -> bool:
    if isinstance(module, nn.Linear):
        return True
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return (
            module.groups == 1
            and module.padding_mode == "zeros"
            and not isinstance(module.padding, str)
        )
    return False


def split_linear_front(rest: fx.GraphModule) -> Optional[LinearFront]:
    """Split ``rest`` into ``[flatten] -> linear module -> tail``, or None.

    ``rest`` is a segment after its channel-wise head: one placeholder (the
    masked activations). The split applies when its only use is a linear
    module (``nn.Linear``, or a convolution with one group and zero padding),
    possibly through a flatten from dimension 1.
    """
    nodes = list(rest.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1 or len(nodes) < 3:
        return None
    source = placeholders[0]
    if len(source.users) != 1:
        return None
    node = next(iter(source.users))
    flatten = False
    if _is_flatten(node, rest, source):
        if len(node.users) != 1:
            return None
        flatten = True
        source, node = node, next(iter(node.users))
    if not (node.op == "call_module" and node.args == (source,) and not node.kwargs):
        return None
    module = rest.get_submodule(str(node.target))
    if not _linear_module(module) or (flatten and not isinstance(module, nn.Linear)):
        return None
    tail_graph = fx.Graph()
    env = {node: tail_graph.placeholder("h")}
    after = nodes[nodes.index(node) + 1 :]
    for n in after:
        env[n] = tail_graph.node_copy(n, env.__getitem__)
    try:
        tail = fx.GraphModule(rest, tail_graph)
    except Exception:  # noqa: BLE001 - a node referring to earlier values
        return None
    return LinearFront(flatten, module, tail)


class AdditiveStage:
    """The linear front of one segment: direct and per-channel evaluation.

    Args:
        front: the split of the segment after its head.
        fill: the removal value after the head (``0.0`` or a tensor of one
            example's unit shape). Kept as ``self.fill``: None for a zero
            fill, otherwise a tensor of ``unit_shape`` on the weight's device.
        unit_shape: the shape of one example's head output ``(C, ...)``.
    """

    def __init__(
        self,
        front: LinearFront,
        fill: Union[float, torch.Tensor],
        unit_shape: Tuple[int, ...],
    ) -> None:
        self.front = front
        self.unit_shape = tuple(unit_shape)
        self.n_channels = unit_shape[0]
        module = front.module
        weight = module.weight
        self.fill: Optional[torch.Tensor] = None
        if isinstance(fill, torch.Tensor) or fill != 0.0:
            self.fill = (
                torch.as_tensor(fill, device=weight.device, dtype=weight.dtype)
                .expand(self.unit_shape)
                .clone()
            )
        if isinstance(module, nn.Linear) and not front.flatten:
            if len(unit_shape) != 1:
                raise ValueError("a linear layer reads the last dimension")
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            if module.in_channels != self.n_channels:
                raise ValueError("channel count mismatch")
        with torch.no_grad():
            f = torch.zeros(self.unit_shape, device=weight.device, dtype=weight.dtype)
            self.out_shape = tuple(self.direct(f.unsqueeze(0)).shape[1:])
        self.n_out = math.prod(self.out_shape)

    @property
    def bytes_per_example(self) -> int:
        """Memory of all ``D_c`` for one example (float32)."""
        return self.n_channels * self.n_out * 4

    def direct(self, x: torch.Tensor) -> torch.Tensor:
        """The linear module on masked activations (no decomposition)."""
        module = self.front.module
        return self._apply(x, module.weight, module.bias)

    def masked(self, h: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """:meth:`direct` on ``h`` with the channels where ``keep`` (``(C,)``,
        0 or 1) is 0 replaced by the fill, without masking ``h``: the mask
        goes on the weight instead (``W (m h) = (W m) h``), which is smaller
        than the activations, and the fill's part, the same for every
        example, is the module applied to one example."""
        module = self.front.module
        weight = module.weight
        keep = keep.to(device=weight.device, dtype=weight.dtype)
        c = self.n_channels
        if isinstance(module, nn.Linear):
            s = weight.shape[1] // c
            w = (weight.reshape(-1, c, s) * keep.reshape(1, c, 1)).reshape(weight.shape)
        else:
            w = weight * keep.reshape(1, c, *([1] * (weight.dim() - 2)))
        out = self._apply(h, w, module.bias)
        if self.fill is not None:
            f = self.fill.to(device=weight.device, dtype=weight.dtype)
            removed = (1 - keep).reshape(c, *([1] * (f.dim() - 1))) * f
            out = out + self._apply(removed.unsqueeze(0), weight, None)
        return out

    def live_channels(self, h: torch.Tensor) -> List[int]:
        """The channels whose contribution ``D_c`` to the output for ``h``
        can be nonzero: those whose input differs from the fill somewhere
        and whose weight is not all zero. Either being all zero makes
        ``D_c`` exactly zero (a dead neuron). Cheaper than reducing every
        ``D_c``: it reads the input and the weight, not the contributions."""
        x = h
        if self.fill is not None:
            x = h - self.fill.to(device=h.device, dtype=h.dtype)
        other = [d for d in range(x.dim()) if d != 1]
        moves = x.abs().amax(dim=other) if other else x.abs()
        weight = self.front.module.weight
        if isinstance(self.front.module, nn.Linear):
            weight = weight.reshape(weight.shape[0], self.n_channels, -1)
        reads = weight.abs().amax(dim=[d for d in range(weight.dim()) if d != 1])
        live = (moves != 0) & (reads != 0)
        return torch.nonzero(live).flatten().tolist()

    def _apply(
        self, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """The module with another weight and bias."""
        module = self.front.module
        if self.front.flatten:
            x = x.flatten(1)
        if isinstance(module, nn.Linear):
            return F.linear(x, weight, bias)
        fn = _CONV_FNS[weight.dim() - 2]
        return fn(x, weight, bias, module.stride, module.padding, module.dilation, 1)

    def channel_delta(self, h: torch.Tensor, c: int) -> torch.Tensor:
        """``D_c`` ``(n, *out_shape)``: what keeping channel ``c`` instead of
        removing it adds to the module's output (no bias)."""
        module = self.front.module
        hc = h[:, c : c + 1]
        if self.fill is not None:
            hc = hc - self.fill[c : c + 1].to(device=h.device, dtype=h.dtype)
        n = h.shape[0]
        if isinstance(module, nn.Linear):
            s = math.prod(self.unit_shape[1:])
            w = module.weight.reshape(module.out_features, self.n_channels, s)[:, c]
            return hc.reshape(n, s) @ w.t()
        weight = module.weight[:, c : c + 1]
        kernel = weight.shape[2:]
        if (
            len(kernel) == 2
            and isinstance(module.padding, tuple)
            and tuple(module.dilation) == (1, 1)
        ):
            # One input channel: the patches are a strided view of the padded
            # input, and one matrix product gives every output channel (an
            # engine choice for undilated 2-D kernels, faster on a CPU than
            # im2col or a one-channel convolution on the digits classifier's
            # maps; docs/benchmarks_neuron_shapley.rst has the timings).
            (ph, pw), (sh, sw), (kh, kw) = module.padding, module.stride, kernel
            hp = F.pad(hc[:, 0], (pw, pw, ph, ph))
            patches = hp.unfold(1, kh, sh).unfold(2, kw, sw)
            oh, ow = patches.shape[1], patches.shape[2]
            out = (
                patches.reshape(n, oh * ow, kh * kw)
                @ weight.reshape(weight.shape[0], kh * kw).t()
            )
            return out.transpose(1, 2).reshape(n, *self.out_shape)
        return _CONV_FNS[len(kernel)](
            hc, weight, None, module.stride, module.padding, module.dilation, 1
        )
