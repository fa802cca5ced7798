r"""The Neuron Shapley game: the value of the network when only a coalition
of its neurons is kept.

:class:`ShapleyGame` holds the evaluation batches, the metric
(:mod:`.metrics`), the removal values of every player layer (from a
:mod:`.removal` strategy) and the engine that runs the model
(:mod:`.engines`), and evaluates :math:`V(S)` for many coalitions at once:
:meth:`ShapleyGame.evaluate` takes masks of shape ``(G, P)`` (1 = kept) and
returns ``G`` values. It knows nothing of permutations or bandits (the
estimators of :mod:`.estimators` call it).
"""

import copy
from contextlib import ExitStack
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ...._utils.hooks import capture_layer
from ...._utils.memory import available_memory
from ...._utils.module_probe import leaf_output_bytes, record_call_order
from ...._utils.validation import model_device
from .data import Batch, call_model
from .engines import select_engine
from .metrics import Metric
from .removal import Removal

__all__ = ["ShapleyGame", "shapley_weights"]

# Examples on which the engines check their splits of the model against the
# model itself before they are used (the check compares two ways of
# computing the same function; the number of examples does not change it).
CHECK_EXAMPLES = 16


class ShapleyGame:
    """``V(S)`` for batches of coalitions of the units of ``layers``.

    Args:
        forward_func: the model (or a function computing its outputs).
        layers: the player layers; their units (dimension 1 of each
            output) are the players, layer after layer.
        batches: the evaluation batches (:func:`~.data.make_batches`).
        metric: the metric object (:func:`~.metrics.resolve_metric`).
        removal: the removal strategy (:func:`~.removal.resolve_removal`).
        engine: the engine's name, or ``"auto"`` (:func:`~.engines.select_engine`).
        rows_per_pass: coalitions per forward pass; None lets the engine
            choose.
        exact: the game is enumerated exactly (``"auto"`` then picks an
            engine that evaluates every coalition directly).
        cache_bytes: memory the engines may keep across calls (prefix
            activations, per-channel contributions).
        memory_budget: bytes the activations of one forward pass may take
            (the graph engine splits its passes to stay below); None is a
            quarter of the memory available on the model's device.
    """

    def __init__(
        self,
        forward_func: Callable,
        layers: Sequence[nn.Module],
        batches: List[Batch],
        metric: Metric,
        removal: Removal,
        engine: str = "auto",
        rows_per_pass: Optional[int] = None,
        exact: bool = False,
        cache_bytes: int = 2**30,
        memory_budget: Optional[int] = None,
    ) -> None:
        self.forward_func = forward_func
        self.layers = list(layers)
        self.batches = batches
        self.metric = metric
        self.removal = removal
        self.exact = exact
        self.cache_bytes = cache_bytes
        self.n_forward_passes = 0
        self._structures: Dict[str, Any] = {}
        if memory_budget is None:
            memory_budget = available_memory(batches[0][0][0].device) // 4
        self.memory_budget = int(memory_budget)
        self._measure_layers()
        self.fills = removal.fills(forward_func, self.layers, self.means)
        # Why torch.fx could not trace the model, when it could not (set by
        # the engines that trace it; read by NeuronShapley's warning).
        self.trace_error: Optional[str] = None
        self.engine = select_engine(self, engine)
        self._rows_given = rows_per_pass is not None
        device = self.batches[0][0][0].device
        largest = max(b[0][0].shape[0] for b in batches)
        self.rows_per_pass = rows_per_pass or self.engine.rows_per_pass(
            largest, device, self.bytes_per_example
        )

    # ------------------------------------------------------------------ setup
    def _measure_layers(self) -> None:
        """Unit shapes, call order and mean outputs of the player layers over
        every batch, and the activation bytes of one example's forward pass.
        A layer output holding NaN or an infinity (on finite inputs) is
        refused, so no removal value is ever computed from non-finite
        values."""
        sums: List[Optional[torch.Tensor]] = [None] * len(self.layers)
        n_examples = 0
        order: List[int] = []
        self.bytes_per_example: Optional[int] = None
        with ExitStack() as stack:
            caps = [
                stack.enter_context(capture_layer(layer, detach=True))
                for layer in self.layers
            ]
            for b, (inputs, _, extra) in enumerate(self.batches):
                for cap in caps:
                    cap.clear()
                with ExitStack() as probes:
                    calls = probes.enter_context(record_call_order(self.layers))
                    sizes = None
                    if b == 0 and isinstance(self.forward_func, nn.Module):
                        sizes = probes.enter_context(
                            leaf_output_bytes(self.forward_func)
                        )
                    with torch.no_grad():
                        call_model(self.forward_func, inputs, extra)
                if sizes is not None:
                    n = max(1, inputs[0].shape[0])
                    self.bytes_per_example = max(1, -(-sizes.total // n))
                if not order:
                    order = list(dict.fromkeys(calls))
                for i, cap in enumerate(caps):
                    if cap.outputs:
                        total = self._layer_sum(i, cap.output)
                        sums[i] = total if sums[i] is None else sums[i] + total
                n_examples += inputs[0].shape[0]
        if len(order) != len(self.layers) or any(s is None for s in sums):
            raise ValueError("every layer must be called in the forward pass")
        self.call_order = order
        self.unit_shapes = [tuple(s.shape) for s in sums]
        self.layer_sizes = [s[0] for s in self.unit_shapes]
        self.n_players = sum(self.layer_sizes)
        self.offsets = [0]
        for size in self.layer_sizes:
            self.offsets.append(self.offsets[-1] + size)
        self.means = [s / n_examples for s in sums]

    @staticmethod
    def _layer_sum(i: int, out: Any) -> torch.Tensor:
        if not torch.is_tensor(out) or out.dim() < 2:
            raise ValueError(
                f"layer {i} must output a tensor with a batch dimension and at "
                "least one unit dimension"
            )
        if out.is_floating_point() and not bool(torch.isfinite(out).all()):
            raise ValueError(
                f"layer {i} outputs NaN or infinite values on finite inputs; its "
                "removal value (and every coalition's value) would be undefined"
            )
        return out.double().sum(0)

    def structure(self, key: str, build: Callable[[], Any]) -> Any:
        """A structure of the model (a traced split) built once per game and
        shared by the engines that try it."""
        if key not in self._structures:
            self._structures[key] = build()
        return self._structures[key]

    def sample_inputs(self, batch_index: int = 0) -> Tuple[torch.Tensor, ...]:
        """The first few examples of an evaluation batch, for the engines'
        checks of their splits."""
        return tuple(x[:CHECK_EXAMPLES] for x in self.batches[batch_index][0])

    @property
    def engine_name(self) -> str:
        return self.engine.name

    @property
    def device(self) -> torch.device:
        return model_device(self.forward_func, self.batches[0][0][0].device)

    def on_examples(self, batches: List[Batch]) -> "ShapleyGame":
        """The same game (model, players, metric, removal values, engine) on
        other evaluation batches, e.g. a random subset of the examples: no
        measurement of the layers and no rebuilt engine."""
        game = copy.copy(self)
        game.batches = batches
        game.n_forward_passes = 0
        game.engine = self.engine.rebind(game)
        if not self._rows_given:
            largest = max(b[0][0].shape[0] for b in batches)
            game.rows_per_pass = game.engine.rows_per_pass(
                largest, batches[0][0][0].device, self.bytes_per_example
            )
        return game

    # ------------------------------------------------------------- evaluation
    def start_walk(self) -> None:
        """A permutation walk starts (engines that reuse rows forget the
        previous walk's)."""
        self.engine.start_walk()

    @torch.no_grad()
    def evaluate(self, masks: torch.Tensor) -> torch.Tensor:
        """``V`` of each coalition (rows of ``masks``), float64 on the CPU."""
        masks = masks.float()
        values = []
        for start in range(0, masks.shape[0], self.rows_per_pass):
            chunk = masks[start : start + self.rows_per_pass]
            plan = self.engine.plan(chunk)
            nums = torch.zeros(plan.n_blocks, dtype=torch.float64)
            dens = torch.zeros(plan.n_blocks, dtype=torch.float64)
            for b, (_, labels, _) in enumerate(self.batches):
                out = self.engine.forward(b, plan)
                n, d = self.metric.parts(out, labels, plan.n_blocks)
                nums += n
                dens += d
            if plan.inverse is not None:
                nums, dens = nums[plan.inverse], dens[plan.inverse]
            if (dens == 0).any():
                raise ValueError(self.metric.no_example_message())
            values.append(nums / dens)
        out = torch.cat(values)
        if not torch.isfinite(out).all():
            raise ValueError("metric returned NaN or an infinite value")
        return out


def shapley_weights(n_players: int) -> torch.Tensor:
    """``|S|! (P - |S| - 1)! / P!`` for ``|S| = 0 .. P - 1`` (float64)."""
    import math

    s = torch.arange(n_players, dtype=torch.float64)
    logw = (
        torch.lgamma(s + 1) + torch.lgamma(n_players - s) - math.lgamma(n_players + 1)
    )
    return logw.exp()

