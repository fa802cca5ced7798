r"""The graph engine: any ``torch.fx``-traceable network, residual
connections included, each node computed once per distinct mask of the
player layers upstream of it.

A node of the traced graph (player layers kept as leaves) depends only on
the masks of the player layers upstream of it, its *key*. Within a pass of
coalitions (consecutive coalitions of a permutation walk differ by one
player), the node runs once per distinct combination of those masks, on
the rows of its inputs that combination selects (:class:`GraphPlan`): a
removal in layer :math:`l` reruns only what is downstream of :math:`l`, as
an exact evaluation with cached activations would, but for many coalitions
per forward pass. Nodes without player layers upstream run once per
evaluation batch.

A player layer's mask is not applied at its output but carried to the next
node that is not channel-wise (:data:`CHANNELWISE_MODULES`, e.g. the
BatchNorm and ReLU after a convolution, pooling): those run on the rows of
the layer's *input*, with the removal value carried through them, since
``f(where(m, h, v)) == where(m, f(h), f(v))`` for an op ``f`` that acts on
each channel separately. So removing a filter does not rerun its own
convolution, BatchNorm or activation.

Memory is bounded by ``memory_budget`` (:meth:`GraphEngine.plan` splits a
pass whose activations would exceed it, down to single coalitions and
slices of the examples), so it does not grow with the number of
permutations. The engine checks itself against the reference hook engine
on a few examples and coalitions before it is used.
"""

import math
import operator
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import fx, nn

from ....._utils.hooks import mask_units
from .base import Engine, EngineUnavailable, Plan
from .fx_split import _LeafTracer, _module_name, _out_of_place
from .prefix import check_splittable

__all__ = ["CHANNELWISE_MODULES", "GraphEngine", "GraphPlan"]

# Modules whose output channel c depends only on input channel c: a channel
# mask commutes with them (BatchNorm only in eval mode).
CHANNELWISE_MODULES = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU,
    nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.Dropout, nn.Dropout2d,
    nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d,
    nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)  # fmt: skip
_CHANNELWISE_FUNCTIONS = {
    F.relu, torch.relu, F.relu6, F.leaky_relu, F.gelu, F.silu, torch.sigmoid,
    torch.tanh, F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d,
    F.avg_pool2d, F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
    F.adaptive_avg_pool3d, F.dropout,
}  # fmt: skip
_CHANNELWISE_METHODS = {"relu", "sigmoid", "tanh"}

Key = FrozenSet[int]


class _Pending(NamedTuple):
    """A node value whose mask is not applied yet: ``data`` holds the rows of
    key ``rows_key``; the value of a row of ``rows_key | {layer}`` is
    ``where(mask_layer, data[row], fill)``."""

    data: torch.Tensor
    rows_key: Key
    layer: int
    fill: Any


class _Value(NamedTuple):
    """A materialised node value: one block of examples per distinct row of
    ``key`` (a constant of the evaluation batch when ``key`` is empty)."""

    data: Any
    key: Key


class GraphPlan(NamedTuple):
    """Distinct rows of every key among the coalitions of a (sub-)pass:
    ``rows[key] = (inverse, first)`` (``inverse[g]``: coalition ``g``'s row,
    ``first[u]``: one coalition of row ``u``), and the example slices to run
    (more than one when one coalition's activations exceed the budget)."""

    masks: torch.Tensor
    rows: Dict[Key, Tuple[torch.Tensor, torch.Tensor]]
    example_slices: int


class GraphEngine(Engine):
    """Each node of the traced model once per distinct upstream mask."""

    name = "graph"

    def __init__(self, game, module: fx.GraphModule) -> None:
        super().__init__(game)
        self.module = module
        self.nodes = [n for n in module.graph.nodes]
        self._analyse()
        self.memory_budget = game.memory_budget
        self._fills: Dict[fx.Node, Any] = {}
        self._constants: Dict[int, Dict[fx.Node, Any]] = {}
        self._batched: Dict[fx.Node, bool] = {}
        self.bytes_per_example: Dict[fx.Node, int] = {}
        # While measuring: node -> bytes of its output (see _measure).
        self._recording: Optional[Dict[fx.Node, int]] = None

    # ------------------------------------------------------------------ setup
    @classmethod
    def build(cls, game, requested: bool) -> "GraphEngine":
        check_splittable(game)
        module = game.structure("graph", lambda: trace_graph(game))
        if module is None:
            raise EngineUnavailable(
                "torch.fx cannot trace the model with the player layers as leaves"
            )
        engine = cls(game, module)
        engine._measure(game.sample_inputs())
        if not engine._reproduces_reference():
            raise EngineUnavailable(
                "its evaluation of the traced graph does not reproduce the hook "
                "engine (an operation mixes examples or reads the batch size?)"
            )
        return engine

    def _analyse(self) -> None:
        """Player layer, key and users of every node, and which nodes may
        carry a pending mask (channel-wise ones)."""
        game = self.game
        names = {}
        for i, layer in enumerate(game.layers):
            names[_module_name(game.forward_func, layer)] = i
        self.player: Dict[fx.Node, int] = {}
        self.key: Dict[fx.Node, Key] = {}
        # pending[n]: (layer, key of the stored rows) when n's value carries
        # the mask of ``layer`` not yet applied; the rows are those of the
        # layer's input.
        self.pending: Dict[fx.Node, Tuple[int, Key]] = {}
        self.last_use: Dict[fx.Node, int] = {}
        for pos, n in enumerate(self.nodes):
            inputs = n.all_input_nodes
            key: Key = frozenset().union(*(self.key[m] for m in inputs))
            if n.op == "call_module" and n.target in names:
                layer = names[n.target]
                self.player[n] = layer
                self.pending[n] = (layer, key)
                key = key | {layer}
            elif inputs and inputs[0] in self.pending and self._is_channelwise(n):
                self.pending[n] = self.pending[inputs[0]]
            self.key[n] = key
            for m in inputs:
                self.last_use[m] = pos
        self.keys = sorted({k for k in self.key.values() if k}, key=sorted)
        self.output = self.nodes[-1]
        self.players_key = self.key[self.output]

    def _is_channelwise(self, n: fx.Node) -> bool:
        tensor_args = [a for a in n.args if isinstance(a, fx.Node)]
        if len(tensor_args) != 1 or n.args[0] is not tensor_args[0]:
            return False
        if any(isinstance(v, fx.Node) for v in n.kwargs.values()):
            return False
        if n.op == "call_module":
            module = self.module.get_submodule(str(n.target))
            if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                return not module.training and module.track_running_stats
            return isinstance(module, CHANNELWISE_MODULES) and not getattr(
                module, "return_indices", False
            )
        if n.op == "call_function":
            return n.target in _CHANNELWISE_FUNCTIONS and not n.kwargs.get(
                "return_indices", False
            )
        return n.op == "call_method" and n.target in _CHANNELWISE_METHODS

    def _reproduces_reference(self) -> bool:
        """A walk's worth of coalitions on a few examples, against the hook
        engine (and the intact model), before the engine is used."""
        from .hooks import HookEngine

        game = self.game
        gen = torch.Generator().manual_seed(0)
        p = game.n_players
        rank_of = torch.empty(p, dtype=torch.long)
        rank_of[torch.randperm(p, generator=gen)] = torch.arange(p)
        positions = torch.linspace(0, p, 9).round().long()
        masks = (rank_of.unsqueeze(0) >= positions.unsqueeze(1)).float()
        masks = torch.cat([masks, (torch.rand(3, p, generator=gen) < 0.5).float()])
        sample = game.sample_inputs()
        passes = game.n_forward_passes
        try:
            with torch.no_grad():
                got = self.outputs_on(sample, self.plan(masks))
                ref = HookEngine.outputs_on(game, sample, masks)
        except Exception:  # noqa: BLE001 - any failure: the engine does not apply
            return False
        finally:
            game.n_forward_passes = passes
            self._constants.clear()
        if not (torch.is_tensor(got) and torch.is_tensor(ref)):
            return False
        if got.shape != ref.shape:
            return False
        scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
        return bool(torch.allclose(got, ref, rtol=1e-4, atol=1e-5 * scale))

    def reset_batches(self) -> None:
        self._constants = {}
        self._batched = {}

    # ---------------------------------------------------------------- planning
    def rows_per_pass(self, n_examples, device, bytes_per_example):
        """As many coalitions per pass as could fit the memory budget if
        every node held a full row per coalition, at least 16 and at most
        256: :meth:`plan` then splits what does not fit (most nodes hold
        far fewer distinct rows than coalitions)."""
        per_row = max(1, (bytes_per_example or 1) * max(1, n_examples))
        return int(min(256, max(16, 4 * self.memory_budget // per_row)))

    def plan(self, masks: torch.Tensor) -> Plan:
        plans = self._split(masks)
        n_blocks, inverses, offset = 0, [], 0
        for sub in plans:
            inverse = sub.rows[self.players_key][0] if self.players_key else None
            count = 1 if inverse is None else int(sub.rows[self.players_key][1].numel())
            if inverse is None:
                inverse = torch.zeros(sub.masks.shape[0], dtype=torch.long)
            inverses.append(inverse + offset)
            offset += count
            n_blocks += count
        return Plan(masks, n_blocks, torch.cat(inverses), plans)

    def _rows(self, masks: torch.Tensor) -> Dict[Key, Tuple[torch.Tensor, ...]]:
        game = self.game
        g = masks.shape[0]
        positions = torch.arange(g)
        signature = []
        for i in range(len(game.layers)):
            cols = masks[:, game.offsets[i] : game.offsets[i + 1]]
            _, inv = torch.unique(cols, dim=0, return_inverse=True)
            signature.append(inv)
        rows = {}
        for key in self.keys:
            ids = torch.stack([signature[i] for i in sorted(key)], 1)
            _, inverse = torch.unique(ids, dim=0, return_inverse=True)
            n_unique = int(inverse.max()) + 1
            first = torch.empty(n_unique, dtype=torch.long).scatter_(
                0, inverse, positions
            )
            rows[key] = (inverse, first)
        return rows

    def stored_key(self, n: fx.Node) -> Key:
        """The key whose distinct rows node ``n``'s value holds."""
        return self.pending[n][1] if n in self.pending else self.key[n]

    def _estimate(self, rows: Dict[Key, tuple], n_examples: int) -> int:
        """Peak bytes of the node values alive during one forward pass (the
        constants of the batch are cached apart)."""
        alive: Dict[fx.Node, int] = {}
        peak = 0
        for pos, n in enumerate(self.nodes):
            key = self.stored_key(n)
            if not self.key[n]:
                continue
            count = int(rows[key][1].numel()) if key in rows else 1
            alive[n] = count * n_examples * self.bytes_per_example.get(n, 0)
            peak = max(peak, sum(alive.values()))
            for m in n.all_input_nodes:
                if self.last_use.get(m) == pos:
                    alive.pop(m, None)
        return peak

    def _split(self, masks: torch.Tensor) -> List[GraphPlan]:
        rows = self._rows(masks)
        largest = max(b[0][0].shape[0] for b in self.game.batches)
        if not self.bytes_per_example or masks.shape[0] == 0:
            return [GraphPlan(masks, rows, 1)]
        need = self._estimate(rows, largest)
        if need <= self.memory_budget:
            return [GraphPlan(masks, rows, 1)]
        if masks.shape[0] > 1:
            half = masks.shape[0] // 2
            return self._split(masks[:half]) + self._split(masks[half:])
        slices = min(largest, math.ceil(need / max(1, self.memory_budget)))
        return [GraphPlan(masks, rows, slices)]

    # -------------------------------------------------------------- evaluation
    def forward(self, batch_index: int, plan: Plan) -> Any:
        inputs = self.game.batches[batch_index][0]
        if not self.bytes_per_example:
            self._measure(inputs)
        outs = [self._forward_sub(batch_index, inputs, sub) for sub in plan.detail]
        self.game.n_forward_passes += 1
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def outputs_on(self, inputs: tuple, plan: Plan) -> Any:
        """The outputs for the coalitions of ``plan`` on ``inputs`` (one
        block per coalition, in the order of ``plan.masks``)."""
        self._constants.pop(-1, None)
        outs = [self._forward_sub(-1, inputs, sub) for sub in plan.detail]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        n = inputs[0].shape[0]
        blocks = out.reshape(plan.n_blocks, n, *out.shape[1:])
        return blocks[plan.inverse].flatten(0, 1)

    def _forward_sub(self, batch_index: int, inputs: tuple, sub: GraphPlan) -> Any:
        n = inputs[0].shape[0]
        if sub.example_slices <= 1:
            return self._run(batch_index, inputs, sub, None)
        bounds = torch.linspace(0, n, sub.example_slices + 1).round().long().tolist()
        pieces = []
        for a, b in zip(bounds, bounds[1:]):
            if b > a:
                out = self._run(batch_index, tuple(x[a:b] for x in inputs), sub, (a, b))
                pieces.append(out.reshape(-1, b - a, *out.shape[1:]))
        out = torch.cat(pieces, 1)
        return out.flatten(0, 1)

    def _run(self, batch_index, inputs, sub: GraphPlan, example_slice) -> Any:
        constants = self._constant_values(batch_index, inputs, example_slice)
        env: Dict[fx.Node, Any] = {}
        placeholders = iter(inputs)
        for pos, n in enumerate(self.nodes):
            if n.op == "placeholder":
                env[n] = _Value(next(placeholders), frozenset())
            elif n.op == "output":
                return self._materialize(env, n.args[0], self.players_key, sub)
            elif not self.key[n]:
                env[n] = _Value(constants[n], frozenset()) if n in constants else None
            elif n in self.player:
                layer, raw_key = self.pending[n]
                args, kwargs = self._args(env, n, raw_key, sub)
                data = self._call(n, args, kwargs)
                env[n] = _Pending(data, raw_key, layer, self.game.fills[layer])
            elif n in self.pending:
                src = env[n.args[0]]
                rest = tuple(self._plain(a) for a in n.args[1:])
                data = self._call(n, (src.data, *rest), self._plain(n.kwargs))
                env[n] = _Pending(data, src.rows_key, src.layer, self._fill(n, src))
            else:
                args, kwargs = self._args(env, n, self.key[n], sub)
                env[n] = _Value(self._call(n, args, kwargs), self.key[n])
            for m in n.all_input_nodes:
                if self.last_use.get(m) == pos:
                    env.pop(m, None)
        raise AssertionError("the graph has no output")  # pragma: no cover

    def _constant_values(self, batch_index, inputs, example_slice) -> Dict:
        """The constant nodes (no player layer upstream) read by the others,
        computed once per evaluation batch and kept while all batches' fit
        in the game's cache budget (``inputs`` may be a slice of the batch's
        examples, ``example_slice``)."""
        cached = self._constants.get(batch_index)
        if cached is not None:
            if example_slice is None:
                return cached
            a, b = example_slice
            return {k: v[a:b] if self._batched.get(k) else v for k, v in cached.items()}
        computed = self._compute_constants(inputs)
        if example_slice is None and batch_index >= 0:
            size = sum(v.numel() * v.element_size() for v in computed.values()
                       if torch.is_tensor(v))  # fmt: skip
            if size * len(self.game.batches) <= self.game.cache_bytes:
                self._constants[batch_index] = computed
        return computed

    def _compute_constants(self, inputs: tuple) -> Dict[fx.Node, Any]:
        env: Dict[fx.Node, Any] = {}
        placeholders = iter(inputs)
        needed = {}
        for n in self.nodes:
            if self.key[n] or n.op == "output":
                for m in n.all_input_nodes:
                    if not self.key[m]:
                        needed[m] = True
                continue
            if n.op == "placeholder":
                env[n] = next(placeholders)
                self._batched[n] = True
                continue
            args = fx.node.map_arg(n.args, env.__getitem__)
            kwargs = fx.node.map_arg(n.kwargs, env.__getitem__)
            env[n] = self._call(n, args, kwargs)
            self._batched[n] = any(self._batched.get(m) for m in n.all_input_nodes)
        return {m: env[m] for m in needed if m in env}

    def _call(self, n: fx.Node, args: tuple, kwargs: dict) -> Any:
        out = self._apply(n, args, kwargs)
        if self._recording is not None and torch.is_tensor(out):
            self._recording[n] = out.numel() * out.element_size()
        return out

    def _apply(self, n: fx.Node, args: tuple, kwargs: dict) -> Any:
        if n.op == "call_module":
            return self.module.get_submodule(str(n.target))(*args, **kwargs)
        if n.op == "call_function":
            return n.target(*args, **kwargs)
        if n.op == "call_method":
            obj, *rest = args
            return getattr(obj, str(n.target))(*rest, **kwargs)
        if n.op == "get_attr":
            target = str(n.target)
            obj: Any = self.module
            for part in target.split("."):
                obj = getattr(obj, part)
            return obj
        raise AssertionError(f"unexpected node {n.op}")  # pragma: no cover

    @staticmethod
    def _plain(a: Any) -> Any:
        if isinstance(a, fx.Node):
            raise AssertionError("a channel-wise node with a second input")
        return a

    def _fill(self, n: fx.Node, src: _Pending) -> Any:
        """The removal value after the channel-wise node ``n``."""
        if n not in self._fills:
            fill = src.fill
            shape = self.game.unit_shapes[src.layer]
            if not torch.is_tensor(fill):
                fill = torch.full(shape, float(fill))
            rest = tuple(self._plain(a) for a in n.args[1:])
            dev = src.data.device
            with torch.no_grad():
                out = self._call(n, (fill.to(dev).unsqueeze(0), *rest), n.kwargs)[0]
            self._fills[n] = out
        return self._fills[n]

    def _args(self, env, n: fx.Node, key: Key, sub: GraphPlan):
        def value(m):
            return self._materialize(env, m, key, sub)

        return fx.node.map_arg(n.args, value), fx.node.map_arg(n.kwargs, value)

    def _materialize(self, env, m: Any, key: Key, sub: GraphPlan) -> Any:
        """The value of node(s) ``m`` as one block per distinct row of ``key``."""
        if not isinstance(m, fx.Node):
            if isinstance(m, (tuple, list)):
                return type(m)(self._materialize(env, a, key, sub) for a in m)
            if isinstance(m, dict):
                return {k: self._materialize(env, v, key, sub) for k, v in m.items()}
            return m
        v = env[m]
        if isinstance(v, _Pending):
            data = self._gather(v.data, v.rows_key, key, sub)
            first = sub.rows[key][1]
            cols = slice(self.game.offsets[v.layer], self.game.offsets[v.layer + 1])
            keep = sub.masks[first][:, cols]
            if not bool(keep.all()):
                data = mask_units(data, keep, v.fill)
            return data
        if not torch.is_tensor(v.data) or not self._batched_value(m):
            return v.data
        return self._gather(v.data, v.key, key, sub)

    def _batched_value(self, m: fx.Node) -> bool:
        return bool(self.key[m]) or bool(self._batched.get(m))

    def _gather(self, data: torch.Tensor, have: Key, want: Key, sub: GraphPlan):
        """Blocks of ``data`` (one per distinct row of ``have``) arranged as
        one per distinct row of ``want`` (``have`` is a subset of it)."""
        if have == want:
            return data
        n_want = int(sub.rows[want][1].numel()) if want else 1
        if not have:
            if n_want == 1:
                return data
            return data.repeat(n_want, *([1] * (data.dim() - 1)))
        inverse_have, first_have = sub.rows[have]
        n_have = int(first_have.numel())
        idx = inverse_have[sub.rows[want][1]]
        if n_have == n_want and torch.equal(idx, torch.arange(n_have)):
            return data
        blocks = data.reshape(n_have, -1, *data.shape[1:])
        return blocks[idx].flatten(0, 1)

    def _measure(self, inputs: tuple) -> None:
        """Bytes per example of every node's value, from one coalition."""
        sub = self.plan(torch.ones(1, self.game.n_players)).detail[0]
        n = max(1, inputs[0].shape[0])
        self._recording = {}
        try:
            with torch.no_grad():
                self._run(-1, inputs, sub, None)
            record = self._recording
        finally:
            self._recording = None
        self.bytes_per_example = {k: -(-v // n) for k, v in record.items()}


def trace_graph(game) -> Optional[fx.GraphModule]:
    """The model traced with the player layers as leaves, its in-place
    operations made out of place (values are shared between rows)."""
    try:
        graph = _LeafTracer(game.layers).trace(game.forward_func)
        module = fx.GraphModule(game.forward_func, graph)
    except Exception as err:  # noqa: BLE001 - any tracing failure: not this engine
        lines = str(err).strip().splitlines() or [""]
        game.trace_error = f"{type(err).__name__}: {lines[0]}"
        return None
    names = [_module_name(game.forward_func, layer) for layer in game.layers]
    found = [n.target for n in module.graph.nodes if n.op == "call_module"]
    if any(found.count(name) != 1 for name in names):
        return None  # a player layer absent or called twice
    module = _out_of_place(module)
    if module is None:
        return None
    for n in module.graph.nodes:
        if n.op == "call_function" and n.target in (operator.setitem,):
            return None
    return module


