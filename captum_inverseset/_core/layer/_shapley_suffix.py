"""Split a model at a layer with ``torch.fx`` (prefix caching for NeuronShapley).

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
"""

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
