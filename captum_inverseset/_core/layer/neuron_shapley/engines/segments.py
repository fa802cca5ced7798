"""The segment engine: the model split at every player layer, breadth first.

When the model is a chain through the player layers (no connection skips one;
:func:`~.fx_split.split_chain`), the segment after player layer ``l``
depends only on the masks of the layers up to ``l``. Coalitions that share
those masks (consecutive coalitions of a permutation walk differ by one
player, so most of them do) share that segment's activations: within a pass,
each segment runs once per *distinct* upstream mask and the rows are
gathered back per coalition (:meth:`SegmentEngine.plan`).

The channel-wise modules right after a player layer (activations, pooling;
its *head*, :func:`split_channelwise_head`) commute with a channel mask, so
they run before it, once per distinct upstream mask. Inside a head, a max
pooling after a non-decreasing activation runs first (the same values on a
smaller tensor), and pooling modules run in the exact CPU forms of
:mod:`.cpu_kernels`.
"""

from typing import List, Optional, Sequence, Tuple

import torch
from torch import fx, nn

from ....._utils.hooks import mask_units
from .base import Engine, EngineUnavailable, Plan, PrefixActivations, examples_per_pass
from .cpu_kernels import fast_head_module
from .fx_split import replace_submodule, split_chain, verify_chain
from .prefix import check_splittable

__all__ = ["SegmentEngine", "split_channelwise_head"]


# Max poolings: a maximum over each window, so they commute with any
# non-decreasing elementwise function (see _pool_before_activation).
MAX_POOLS = (
    nn.MaxPool1d,
    nn.MaxPool2d,
    nn.MaxPool3d,
    nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d,
    nn.AdaptiveMaxPool3d,
)


# Modules whose output channel ``c`` depends only on input channel ``c``
# (elementwise activations, pooling): a per-channel mask commutes with them,
# ``f(where(m, h, fill)) == where(m, f(h), f(fill))`` exactly.
CHANNELWISE = (
    nn.Identity,
    nn.ReLU,
    nn.ReLU6,
    nn.LeakyReLU,
    nn.ELU,
    nn.GELU,
    nn.SiLU,
    nn.Sigmoid,
    nn.Tanh,
    nn.AvgPool1d,
    nn.AvgPool2d,
    nn.AvgPool3d,
    nn.AdaptiveAvgPool1d,
    nn.AdaptiveAvgPool2d,
    nn.AdaptiveAvgPool3d,
    *MAX_POOLS,
)


def _is_channelwise(module: nn.Module) -> bool:
    if not isinstance(module, CHANNELWISE):
        return False
    # With indices the output is a tuple, not a masked tensor.
    return not getattr(module, "return_indices", False)


def split_channelwise_head(
    segment: fx.GraphModule,
) -> Tuple[Optional[fx.GraphModule], fx.GraphModule]:
    """Split off the channel-wise modules at the start of a chain segment.

    A segment starts with the (masked) output of a player layer. When its
    first operations act on each channel separately (``relu``, pooling), the
    mask can be applied after them instead: they then run once per distinct
    *upstream* mask, not once per coalition. Returns ``(head, rest)`` with
    ``rest(mask(head(h))) == segment(mask(h))``, or ``(None, segment)``.

    Inside the head, a max pooling that follows a non-decreasing activation
    runs first (:func:`_pool_before_activation`): the same values, with the
    activation on the pooled, smaller tensor.
    """
    nodes = list(segment.graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    if len(placeholders) != 1:
        return None, segment
    previous = placeholders[0]
    head_nodes: List[fx.Node] = []
    for n in nodes[1:]:
        if not (
            n.op == "call_module"
            and len(previous.users) == 1
            and n.args == (previous,)
            and not n.kwargs
            and _is_channelwise(segment.get_submodule(str(n.target)))
        ):
            break
        head_nodes.append(n)
        previous = n
    if not head_nodes:
        return None, segment
    head_graph = fx.Graph()
    x = head_graph.placeholder("h")
    for n in _pool_before_activation(head_nodes, segment):
        x = head_graph.call_module(str(n.target), (x,))
    head_graph.output(x)
    rest_graph = fx.Graph()
    env2 = {head_nodes[-1]: rest_graph.placeholder("h")}
    for n in nodes[1 + len(head_nodes) :]:
        env2[n] = rest_graph.node_copy(n, lambda x: env2[x])
    try:
        head = fx.GraphModule(segment, head_graph)
        rest = fx.GraphModule(segment, rest_graph)
    except Exception:  # noqa: BLE001
        return None, segment
    for n in head_nodes:
        replacement = fast_head_module(head.get_submodule(str(n.target)))
        if replacement is not None:
            replace_submodule(head, str(n.target), replacement)
    return head, rest


def _non_decreasing(module: nn.Module) -> bool:
    """An elementwise activation ``f`` with ``a <= b => f(a) <= f(b)`` also
    in floating point (a clamp, or a product by a nonnegative constant)."""
    if type(module) in (nn.ReLU, nn.ReLU6):
        return True
    return type(module) is nn.LeakyReLU and module.negative_slope >= 0


def _pool_before_activation(
    nodes: Sequence[fx.Node], segment: fx.GraphModule
) -> List[fx.Node]:
    """``nodes`` (a chain of channel-wise modules) with every max pooling
    moved before the non-decreasing activations just ahead of it.

    For a non-decreasing ``f``, the maximum of ``f`` over a window is ``f``
    of the maximum, exactly (``f`` is applied to the same element either
    way), so ``relu -> maxpool`` equals ``maxpool -> relu``, and the second
    order runs the activation on the pooled tensor (a quarter of the
    elements for 2x2 windows).
    """
    order = list(nodes)
    moved = True
    while moved:
        moved = False
        for i in range(len(order) - 1):
            first = segment.get_submodule(str(order[i].target))
            second = segment.get_submodule(str(order[i + 1].target))
            if _non_decreasing(first) and isinstance(second, MAX_POOLS):
                order[i], order[i + 1] = order[i + 1], order[i]
                moved = True
    return order


def chain_stages(game) -> Tuple[List[fx.GraphModule], List[tuple]]:
    """The game's model split at every player layer, with the channel-wise
    head of each segment split off (shared by the segment engines, traced
    once per game); raises :class:`EngineUnavailable`."""

    def build():
        chain = split_chain(
            game.forward_func, [game.layers[i] for i in game.call_order]
        )
        if chain is None:
            return None
        stages = [split_channelwise_head(seg) for seg in chain[1:]]
        composed = [chain[0]] + [
            (lambda h, hd=hd, r=r: r(hd(h))) if hd is not None else r
            for hd, r in stages
        ]
        if not verify_chain(composed, game.forward_func, game.sample_inputs()):
            return False
        return chain, stages

    check_splittable(game)
    found = game.structure("chain", build)
    if found is None:
        raise EngineUnavailable(
            "the model is not a chain through the player layers (a connection "
            "such as a residual skips a player layer, or torch.fx cannot trace it)"
        )
    if found is False:
        raise EngineUnavailable("the split model does not reproduce the model")
    return found


class SegmentEngine(Engine):
    """Each segment once per distinct upstream mask, on all of them at once."""

    name = "segments"

    def __init__(self, game, chain, stages) -> None:
        super().__init__(game)
        self.chain = chain
        cols = [
            torch.arange(game.offsets[i], game.offsets[i + 1])
            for i in game.call_order
        ]
        self.layer_cols = cols
        self.upstream_cols = [torch.cat(cols[: k + 1]) for k in range(len(cols))]
        self.stages = []
        for layer, (head, rest) in zip(game.call_order, stages):
            fill = game.fills[layer]
            if head is not None:
                # The mask is applied after the head, so its fill is the
                # head's image of the removal value.
                if isinstance(fill, float):
                    fill = torch.full(game.unit_shapes[layer], fill)
                with torch.no_grad():
                    fill = head(fill.unsqueeze(0))[0]
                if not bool(fill.any()):
                    fill = 0.0
            self.stages.append((head, rest, fill))
        # The engines tried on one game share its prefix activations.
        self.prefix = game.structure("chain_prefix", self._prefix_activations)

    def _prefix_activations(self) -> PrefixActivations:
        chain, game = self.chain, self.game
        return PrefixActivations(
            lambda *x: (chain[0](*x),), game.batches, game.cache_bytes
        )

    def reset_batches(self) -> None:
        self.prefix = self._prefix_activations()

    @classmethod
    def build(cls, game, requested: bool) -> "SegmentEngine":
        chain, stages = chain_stages(game)
        return cls(game, chain, stages)

    def rows_per_pass(self, n_examples, device, bytes_per_example):
        """With several player layers, 8192 examples per pass on a CPU:
        larger chunks of a walk share more upstream segments, and most
        segments then run on far fewer rows. With one player layer nothing
        is shared, and the default applies."""
        if len(self.game.layers) > 1:
            return examples_per_pass(n_examples, device, bytes_per_example, 8192, 128)
        return super().rows_per_pass(n_examples, device, bytes_per_example)

    def plan(self, masks: torch.Tensor) -> Plan:
        """Per player layer (call order): which coalitions share its input.

        Level ``k`` lists the distinct masks of layers ``0..k`` among the rows
        of ``masks``: ``(inverse, parent, keep, first)`` where ``inverse[g]``
        is coalition ``g``'s distinct row, ``parent[u]`` the row of level
        ``k - 1`` that distinct row ``u`` extends, ``keep`` the masks of layer
        ``k`` per distinct row (None when all ones: nothing to mask) and
        ``first[u]`` one coalition with that row.
        """
        levels = []
        previous = torch.zeros(masks.shape[0], dtype=torch.long)
        positions = torch.arange(masks.shape[0])
        for cols, up in zip(self.layer_cols, self.upstream_cols):
            _, inverse = torch.unique(masks[:, up], dim=0, return_inverse=True)
            n_unique = int(inverse.max()) + 1
            # Any coalition of a distinct row will do: they share its masks.
            first = torch.empty(n_unique, dtype=torch.long).scatter_(
                0, inverse, positions
            )
            keep = masks[first][:, cols]
            if bool(keep.all()):
                keep = None
            levels.append((inverse, previous[first], keep, first))
            previous = inverse
        return Plan(masks, levels[-1][3].shape[0], levels[-1][0], levels)

    def first_output(self, batch_index: int) -> torch.Tensor:
        """The first player layer's output on evaluation batch ``batch_index``."""
        return self.prefix.get(batch_index)[0]

    def forward(self, batch_index: int, plan: Plan) -> torch.Tensor:
        return self.breadth_first(plan.detail, self.first_output(batch_index))

    def breadth_first(self, levels: List[tuple], h: torch.Tensor) -> torch.Tensor:
        """Each segment once on all the distinct rows of its level (``h``:
        the first player layer's output)."""
        block = h.shape[0]
        n_rows = 1
        for (_, parent, keep, _), (head, rest, fill) in zip(levels, self.stages):
            if head is not None:
                # Channel-wise ops (relu, pooling) commute with the mask: run
                # them before the rows multiply.
                h = head(h)
            if not (
                parent.shape[0] == n_rows and torch.equal(parent, torch.arange(n_rows))
            ):
                # Gather the activations of each distinct row's parent.
                h = h.reshape(n_rows, block, *h.shape[1:])[parent].flatten(0, 1)
                n_rows = parent.shape[0]
            if keep is not None:
                h = mask_units(h, keep, fill)
            h = rest(h)
        self.game.n_forward_passes += 1
        return h
