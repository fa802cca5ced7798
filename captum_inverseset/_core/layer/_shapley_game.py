"""The Neuron Shapley game: value of a network where only a coalition is kept.

:class:`NeuronGame` holds the evaluation data, the removal values of every
player layer and the metric, and evaluates many coalitions in one forward pass:
the examples are repeated once per coalition and every layer output is masked
per block of examples (:func:`group_mask`).
With prefix caching, the network up to the first player layer runs once per
evaluation batch and only the rest is re-run for each group of coalitions.
"""

import math
from contextlib import ExitStack
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..._utils.captum_compat import (
    expand_additional_forward_args,
    format_additional_forward_args,
)
from ..._utils.hooks import capture_layer, replace_layer_output
from ._shapley_suffix import split_at_layer, verify_split

MetricType = Union[str, Callable[[torch.Tensor, Any], torch.Tensor]]
BUILTIN_METRICS = ("accuracy", "loss", "class_accuracy")

# One evaluation batch: (inputs tuple, labels or None, additional args or None)
Batch = Tuple[Tuple[torch.Tensor, ...], Optional[torch.Tensor], Any]


def group_mask(
    output: torch.Tensor, keep: torch.Tensor, fill: Union[float, torch.Tensor]
) -> torch.Tensor:
    """Mask channels of ``output`` per block: ``keep`` is ``(G, C)``.

    The batch is ``G`` consecutive blocks of equal size, block ``g`` keeps the
    channels where ``keep[g]`` is 1 and gets ``fill`` (one example's units, or
    a scalar) elsewhere. Unlike a shape-guessing helper, ``keep`` is always
    read as per-group, so ``G == C`` is never ambiguous.
    """
    n_groups = keep.shape[0]
    unit_shape = output.shape[1:]
    if output.shape[0] % n_groups:
        raise ValueError(
            f"batch of {output.shape[0]} is not a multiple of {n_groups} coalitions"
        )
    block = output.shape[0] // n_groups
    out = output.reshape(n_groups, block, *unit_shape)
    m = keep.to(device=output.device, dtype=output.dtype)
    m = m.reshape(n_groups, 1, unit_shape[0], *([1] * (len(unit_shape) - 1)))
    if isinstance(fill, float) and fill == 0.0:
        return (out * m).reshape(output.shape)
    fill_t = torch.as_tensor(fill, device=output.device, dtype=output.dtype)
    return (out * m + fill_t * (1 - m)).reshape(output.shape)


def _call(forward_func: Callable, inputs: tuple, extra: Any) -> torch.Tensor:
    if extra is None:
        return forward_func(*inputs)
    return forward_func(*inputs, *extra)


class NeuronGame:
    """Evaluate ``V(S)`` for batches of coalitions (masks of shape ``(G, P)``)."""

    def __init__(
        self,
        forward_func: Callable,
        layers: Sequence[nn.Module],
        batches: List[Batch],
        metric: MetricType,
        metric_class: Optional[int],
        removal: str,
        prefix_cache: bool,
        coalitions_per_batch: int,
        cache_bytes: int = 2**30,
    ) -> None:
        self.forward_func = forward_func
        self.layers = list(layers)
        self.batches = batches
        self.metric = metric
        self.metric_class = metric_class
        self.removal = removal
        self.coalitions_per_batch = coalitions_per_batch
        self.cache_bytes = cache_bytes
        self.n_forward_passes = 0
        self._measure_layers()
        self.split = None
        self._cuts: List[tuple] = []
        if prefix_cache:
            self._setup_prefix_cache()

    # ------------------------------------------------------------------ setup
    def _measure_layers(self) -> None:
        """Unit counts, call order and mean activations of the player layers."""
        sums: List[Optional[torch.Tensor]] = [None] * len(self.layers)
        n_examples = 0
        order: List[int] = []
        with ExitStack() as stack:
            caps = [
                stack.enter_context(capture_layer(layer, detach=True))
                for layer in self.layers
            ]
            for inputs, _, extra in self.batches:
                for cap in caps:
                    cap.clear()
                calls: List[int] = []
                hooks = [
                    layer.register_forward_hook(
                        lambda m, a, o, i=i: calls.append(i)  # noqa: B023
                    )
                    for i, layer in enumerate(self.layers)
                ]
                try:
                    with torch.no_grad():
                        _call(self.forward_func, inputs, extra)
                finally:
                    for h in hooks:
                        h.remove()
                if not order:
                    order = list(dict.fromkeys(calls))
                for i, cap in enumerate(caps):
                    out = cap.output
                    if not torch.is_tensor(out) or out.dim() < 2:
                        raise ValueError(
                            f"layer {i} must output a tensor with a batch dimension "
                            "and at least one unit dimension"
                        )
                    total = out.double().sum(0)
                    sums[i] = total if sums[i] is None else sums[i] + total
                n_examples += inputs[0].shape[0]
        if len(order) != len(self.layers):
            raise ValueError("every layer must be called in the forward pass")
        self.call_order = order
        self.unit_shapes = [tuple(s.shape) for s in sums]
        self.layer_sizes = [s[0] for s in self.unit_shapes]
        self.n_players = sum(self.layer_sizes)
        self.offsets = [0]
        for size in self.layer_sizes:
            self.offsets.append(self.offsets[-1] + size)
        if self.removal == "mean":
            self.fills: List[Union[float, torch.Tensor]] = [
                (s / n_examples).float() for s in sums
            ]
        else:
            self.fills = [0.0 for _ in sums]

    def _setup_prefix_cache(self) -> None:
        if not isinstance(self.forward_func, nn.Module):
            return
        if any(extra is not None for _, _, extra in self.batches):
            return
        first = self.call_order[0]
        split = split_at_layer(self.forward_func, self.layers[first], self.layers)
        if split is None or not verify_split(
            split, self.forward_func, self.batches[0][0]
        ):
            return
        self.split = split
        self.first_layer = first
        with torch.no_grad():
            first_cut = split.prefix(*self.batches[0][0])
        per_example = sum(c.numel() * c.element_size() for c in first_cut) / max(
            1, self.batches[0][0][0].shape[0]
        )
        n_total = sum(b[0][0].shape[0] for b in self.batches)
        if per_example * n_total <= self.cache_bytes:
            # Keep every batch's prefix activations: each coalition then costs
            # one pass of the suffix only.
            with torch.no_grad():
                self._cuts = [first_cut] + [
                    split.prefix(*inputs) for inputs, _, _ in self.batches[1:]
                ]
        else:
            # Too large to keep: the prefix runs once per batch and per call of
            # evaluate, shared by all the coalitions of that call.
            self._cuts = []

    @property
    def uses_prefix_cache(self) -> bool:
        return self.split is not None

    # ------------------------------------------------------------- evaluation
    def layer_masks(self, masks: torch.Tensor) -> List[torch.Tensor]:
        return [
            masks[:, self.offsets[i] : self.offsets[i + 1]]
            for i in range(len(self.layers))
        ]

    def _metric_parts(
        self, out: torch.Tensor, labels: Any, n_groups: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-group (numerator, denominator) of the metric for one batch."""
        block = out.shape[0] // n_groups
        grouped = out.reshape(n_groups, block, *out.shape[1:])
        if callable(self.metric):
            values = []
            for g in range(n_groups):
                v = self.metric(grouped[g], labels)
                if not torch.is_tensor(v):
                    v = torch.as_tensor(v, dtype=torch.float64)
                if v.numel() != 1:
                    raise ValueError(
                        f"metric must return a scalar, got shape {tuple(v.shape)}"
                    )
                if not torch.isfinite(v).all():
                    raise ValueError("metric returned NaN or an infinite value")
                values.append(v.detach().double().reshape(()).cpu())
            nums = torch.stack(values) * block
            return nums, torch.full((n_groups,), float(block), dtype=torch.float64)
        if grouped.dim() != 3:
            raise ValueError(
                f"metric {self.metric!r} needs outputs of shape (N, classes), got "
                f"{tuple(out.shape)}"
            )
        y = labels.to(out.device)
        if self.metric == "loss":
            losses = F.cross_entropy(
                grouped.reshape(-1, grouped.shape[-1]).float(),
                y.repeat(n_groups),
                reduction="none",
            ).reshape(n_groups, block)
            nums = -losses.double().sum(1)
            dens = torch.full((n_groups,), float(block), dtype=torch.float64)
            return nums.cpu(), dens
        correct = (grouped.argmax(-1) == y.unsqueeze(0)).double()
        if self.metric == "class_accuracy":
            sel = (y == self.metric_class).double().unsqueeze(0)
            return (correct * sel).sum(1).cpu(), sel.sum(1).expand(n_groups).cpu()
        return correct.sum(1).cpu(), torch.full(
            (n_groups,), float(block), dtype=torch.float64
        )

    def _forward_groups(self, batch_index: int, masks: torch.Tensor) -> torch.Tensor:
        inputs, _, extra = self.batches[batch_index]
        n_groups = masks.shape[0]
        per_layer = self.layer_masks(masks)
        with ExitStack() as stack:
            for i, layer in enumerate(self.layers):
                if self.split is not None and i == self.first_layer:
                    continue
                stack.enter_context(
                    replace_layer_output(
                        layer,
                        lambda out, k=per_layer[i], f=self.fills[i]: group_mask(
                            out, k, f
                        ),
                    )
                )
            self.n_forward_passes += 1
            if self.split is not None:
                if self._cuts:
                    cut = self._cuts[batch_index]
                else:
                    cut = self.split.prefix(*inputs)
                reps = [c.repeat(n_groups, *([1] * (c.dim() - 1))) for c in cut]
                reps[0] = group_mask(
                    reps[0], per_layer[self.first_layer], self.fills[self.first_layer]
                )
                return self.split.suffix(*reps)
            rep_inputs = tuple(
                x.repeat(n_groups, *([1] * (x.dim() - 1))) for x in inputs
            )
            rep_extra = None
            if extra is not None:
                rep_extra = format_additional_forward_args(
                    expand_additional_forward_args(extra, n_groups)
                )
            return _call(self.forward_func, rep_inputs, rep_extra)

    @torch.no_grad()
    def evaluate(self, masks: torch.Tensor) -> torch.Tensor:
        """``V`` of each coalition (rows of ``masks``), float64 on the CPU."""
        masks = masks.float()
        values = []
        for start in range(0, masks.shape[0], self.coalitions_per_batch):
            chunk = masks[start : start + self.coalitions_per_batch]
            nums = torch.zeros(chunk.shape[0], dtype=torch.float64)
            dens = torch.zeros(chunk.shape[0], dtype=torch.float64)
            for b in range(len(self.batches)):
                out = self._forward_groups(b, chunk)
                n, d = self._metric_parts(out, self.batches[b][1], chunk.shape[0])
                nums += n
                dens += d
            if (dens == 0).any():
                raise ValueError(
                    f"metric_class={self.metric_class} has no example in the inputs"
                )
            values.append(nums / dens)
        out = torch.cat(values)
        if not torch.isfinite(out).all():
            raise ValueError("metric returned NaN or an infinite value")
        return out


def auto_coalitions_per_batch(
    n_examples_per_batch: int, device: Optional[torch.device] = None
) -> int:
    """Coalitions per forward pass: about 1024 examples per pass on a CPU
    (larger passes fall out of cache and get slower per example) and 8192 on
    an accelerator (which needs large batches to be busy)."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    target = 1024 if on_cpu else 8192
    return max(1, min(128, target // max(1, n_examples_per_batch)))


def shapley_weights(n_players: int) -> torch.Tensor:
    """``|S|! (P - |S| - 1)! / P!`` for ``|S| = 0 .. P - 1`` (float64)."""
    s = torch.arange(n_players, dtype=torch.float64)
    logw = (
        torch.lgamma(s + 1) + torch.lgamma(n_players - s) - math.lgamma(n_players + 1)
    )
    return logw.exp()
