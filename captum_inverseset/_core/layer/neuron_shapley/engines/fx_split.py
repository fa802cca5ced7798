"""Split a model with ``torch.fx`` at player layers (the fx engines' graph work).

A coalition of neurons only changes the network *after* the layer that holds
them, so the activations up to that layer are the same for every coalition.
:func:`split_at_layer` traces the model (the player layers are kept as leaves),
and builds two graph modules:

* ``prefix(*inputs)`` returns the *cut*: the layer's output and every other
  value computed before it that the rest of the network still needs (e.g. the
  skip branch of a residual block);
* ``suffix(*cut)`` computes the model output from the cut.

Both call the original submodules (no copies), so hooks registered on later
player layers still fire inside ``suffix``. When the model cannot be traced,
:func:`split_at_layer` returns None and the caller falls back to full forward
passes with hooks.

:func:`split_chain` cuts a model after *every* player layer (the segment
engines), when the model is a simple chain through them.
"""

import copy
import operator
from typing import List, NamedTuple, Optional, Sequence

import torch
from torch import fx, nn


class SplitModel(NamedTuple):
    prefix: fx.GraphModule
    suffix: fx.GraphModule
    # Position of the layer's output among the cut values.
    layer_index: int
    n_cut: int


class _LeafTracer(fx.Tracer):
    def __init__(self, leaves: Sequence[nn.Module]) -> None:
        super().__init__()
        self._leaves = {id(m) for m in leaves}

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        if id(m) in self._leaves:
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _module_name(model: nn.Module, layer: nn.Module) -> Optional[str]:
    for name, m in model.named_modules():
        if m is layer:
            return name
    return None


def split_at_layer(
    model: nn.Module, layer: nn.Module, leaves: Sequence[nn.Module] = ()
) -> Optional[SplitModel]:
    """Trace ``model`` and cut it just after ``layer``; None when impossible."""
    name = _module_name(model, layer)
    if not name:
        return None
    try:
        tracer = _LeafTracer([layer, *leaves])
        graph = tracer.trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "fall back"
        return None
    nodes = list(graph.nodes)
    layer_nodes = [n for n in nodes if n.op == "call_module" and n.target == name]
    if len(layer_nodes) != 1:
        # Absent, or a shared module called several times: a cut is ambiguous.
        return None
    layer_node = layer_nodes[0]
    position = {n: i for i, n in enumerate(nodes)}
    cut_at = position[layer_node]
    placeholders = [n for n in nodes if n.op == "placeholder"]
    # Values from before the cut that are used after it.
    cut: List[fx.Node] = [layer_node]
    for n in nodes[: cut_at + 1]:
        if n is layer_node:
            continue
        if any(position[u] > cut_at for u in n.users):
            if n.op == "placeholder":
                # The suffix would need the raw inputs: not a clean cut.
                return None
            cut.append(n)
    if any(n.op == "placeholder" and position[n] > cut_at for n in nodes):
        return None

    # Prefix graph: everything up to the cut, returning the cut values.
    prefix_graph = fx.Graph()
    env = {}
    for n in nodes[: cut_at + 1]:
        env[n] = prefix_graph.node_copy(n, lambda x: env[x])
    prefix_graph.output(tuple(env[c] for c in cut))

    # Suffix graph: placeholders for the cut values, then the rest.
    suffix_graph = fx.Graph()
    env2 = {}
    for i, c in enumerate(cut):
        env2[c] = suffix_graph.placeholder(f"cut_{i}")
    for n in nodes[cut_at + 1 :]:
        env2[n] = suffix_graph.node_copy(n, lambda x: env2[x])
    try:
        prefix = fx.GraphModule(model, prefix_graph)
        suffix = fx.GraphModule(model, suffix_graph)
    except Exception:  # noqa: BLE001
        return None
    del placeholders
    return SplitModel(prefix, suffix, 0, len(cut))


def verify_split(
    split: SplitModel, model: nn.Module, inputs: tuple, atol: float = 1e-5
) -> bool:
    """Check on real inputs that ``suffix(prefix(x))`` equals ``model(x)``."""
    try:
        with torch.no_grad():
            full = model(*inputs)
            cut = split.prefix(*inputs)
            out = split.suffix(*cut)
    except Exception:  # noqa: BLE001
        return False
    if not (torch.is_tensor(full) and torch.is_tensor(out)):
        return False
    return full.shape == out.shape and torch.allclose(full, out, atol=atol, rtol=1e-4)


def split_chain(
    model: nn.Module, layers: Sequence[nn.Module]
) -> Optional[List[fx.GraphModule]]:
    """Cut ``model`` after each of ``layers`` (given in call order).

    Returns ``len(layers) + 1`` graph modules: ``segments[0](*inputs)`` is the
    output of ``layers[0]``, ``segments[i](h)`` maps the output of
    ``layers[i - 1]`` to the output of ``layers[i]`` and the last segment
    maps the output of the last layer to the model output. This needs a
    simple chain: nothing computed before a cut except the layer's own output
    may be used after it (a residual connection around a player layer, or the
    raw inputs used late, break it). Returns None otherwise, and the caller
    falls back to :func:`split_at_layer`.
    """
    names = [_module_name(model, layer) for layer in layers]
    if not layers or not all(names):
        return None
    try:
        graph = _LeafTracer(layers).trace(model)
    except Exception:  # noqa: BLE001 - any tracing failure means "fall back"
        return None
    nodes = list(graph.nodes)
    position = {n: i for i, n in enumerate(nodes)}
    layer_nodes = []
    for name in names:
        found = [n for n in nodes if n.op == "call_module" and n.target == name]
        if len(found) != 1:
            return None
        layer_nodes.append(found[0])
    cuts = [position[n] for n in layer_nodes]
    if any(b <= a for a, b in zip(cuts, cuts[1:])):
        return None
    if any(n.op == "placeholder" and position[n] > cuts[0] for n in nodes):
        return None
    for layer_node, cut_at in zip(layer_nodes, cuts):
        for n in nodes[: cut_at + 1]:
            if n is not layer_node and any(position[u] > cut_at for u in n.users):
                return None
    bounds = [0] + [c + 1 for c in cuts] + [len(nodes)]
    segments = []
    for k in range(len(bounds) - 1):
        seg_graph = fx.Graph()
        env = {}
        if k > 0:
            env[layer_nodes[k - 1]] = seg_graph.placeholder("h")
        for n in nodes[bounds[k] : bounds[k + 1]]:
            env[n] = seg_graph.node_copy(n, env.__getitem__)
        if k < len(layer_nodes):
            seg_graph.output(env[layer_nodes[k]])
        try:
            segment = _out_of_place(fx.GraphModule(model, seg_graph))
        except Exception:  # noqa: BLE001
            return None
        if segment is None:
            return None
        segments.append(segment)
    return segments


def replace_submodule(
    graph_module: fx.GraphModule, target: str, module: nn.Module
) -> None:
    """Put ``module`` at ``target`` in ``graph_module``. A graph module has
    its own containers (only the leaf modules are the model's), so the model
    is unchanged."""
    parent_name, _, leaf = target.rpartition(".")
    parent = graph_module.get_submodule(parent_name) if parent_name else graph_module
    setattr(parent, leaf, module)


# In-place operator functions. torch.fx traces ``x += y`` on a proxy as an
# out-of-place add, but a graph built otherwise may hold these.
_INPLACE_OPERATORS = {
    operator.iadd,
    operator.isub,
    operator.imul,
    operator.itruediv,
    operator.ifloordiv,
    operator.imod,
    operator.ipow,
    operator.imatmul,
    operator.iand,
    operator.ior,
    operator.ixor,
    operator.ilshift,
    operator.irshift,
}


def _out_of_place(segment: fx.GraphModule) -> Optional[fx.GraphModule]:
    """The segment with its in-place operations made out-of-place.

    Segment outputs are kept and reused (a parent row's activations feed
    every child, a row's linear output is the next row's reference), so no
    operation may write into its input: ``nn.ReLU(inplace=True)`` (as in
    torchvision's VGG, AlexNet or ResNet) is replaced by a copy with
    ``inplace=False`` in the segment's own containers (the model's modules
    are not touched), and ``inplace=True`` keyword arguments of functions
    are set to False. None (no segment cache) when an in-place tensor
    method such as ``x.relu_()`` is called.
    """
    recompile = False
    for n in segment.graph.nodes:
        name = getattr(n.target, "__name__", str(n.target))
        if n.op == "call_module":
            module = segment.get_submodule(str(n.target))
            if getattr(module, "inplace", False) is True:
                replacement = copy.copy(module)
                replacement.inplace = False
                replace_submodule(segment, str(n.target), replacement)
        elif n.op == "call_function" and n.kwargs.get("inplace") is True:
            n.kwargs = {**n.kwargs, "inplace": False}
            recompile = True
        elif (
            n.op in ("call_method", "call_function")
            and name.endswith("_")
            and not name.endswith("__")
        ) or (n.op == "call_function" and n.target in _INPLACE_OPERATORS):
            return None
    if recompile:
        segment.recompile()
    return segment


def verify_chain(
    segments: Sequence[fx.GraphModule],
    model: nn.Module,
    inputs: tuple,
    atol: float = 1e-5,
) -> bool:
    """Check on real inputs that the segments chained equal ``model(x)``."""
    try:
        with torch.no_grad():
            full = model(*inputs)
            h = segments[0](*inputs)
            for segment in segments[1:]:
                h = segment(h)
    except Exception:  # noqa: BLE001
        return False
    if not (torch.is_tensor(full) and torch.is_tensor(h)):
        return False
    return full.shape == h.shape and torch.allclose(full, h, atol=atol, rtol=1e-4)
