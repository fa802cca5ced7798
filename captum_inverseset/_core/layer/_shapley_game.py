"""The Neuron Shapley game: value of a network where only a coalition is kept.

:class:`NeuronGame` holds the evaluation data, the removal values of every
player layer and the metric, and evaluates many coalitions in one forward pass:
the examples are repeated once per coalition and every layer output is masked
per block of examples (:func:`group_mask`).
With prefix caching, the network up to the first player layer runs once per
evaluation batch and only the rest is re-run for each group of coalitions.

With segment caching (a ``torch.fx`` chain split at every player layer), the
segment after player layer ``l`` depends only on the masks of layers up to
``l``. Coalitions that share those masks (consecutive coalitions of a
permutation walk differ by one player, so most of them do) share that
segment's activations: each segment runs once per *distinct* upstream mask,
and the results are gathered back per coalition.
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
from ._shapley_suffix import (
    split_at_layer,
    split_chain,
    split_channelwise_head,
    verify_chain,
    verify_split,
)

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
        segment_cache: bool = True,
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
        self.chain: Optional[List[nn.Module]] = None
        self._cuts: List[tuple] = []
        if prefix_cache:
            self._setup_prefix_cache(segment_cache)

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

    def _setup_prefix_cache(self, segment_cache: bool) -> None:
        if not isinstance(self.forward_func, nn.Module):
            return
        if any(extra is not None for _, _, extra in self.batches):
            return
        first = self.call_order[0]
        self.first_layer = first
        if segment_cache:
            chain = split_chain(
                self.forward_func, [self.layers[i] for i in self.call_order]
            )
            stages = None
            if chain is not None:
                stages = [split_channelwise_head(seg) for seg in chain[1:]]
                composed = [chain[0]] + [
                    (lambda h, hd=hd, r=r: r(hd(h))) if hd is not None else r
                    for hd, r in stages
                ]
                if not verify_chain(composed, self.forward_func, self.batches[0][0]):
                    stages = None
            if stages is not None:
                self.chain = chain
                self._setup_segments(stages)
                self._cache_prefix(lambda *x: (chain[0](*x),))
                return
        split = split_at_layer(self.forward_func, self.layers[first], self.layers)
        if split is None or not verify_split(
            split, self.forward_func, self.batches[0][0]
        ):
            return
        self.split = split
        self._cache_prefix(split.prefix)

    def _setup_segments(self, stages: List[tuple]) -> None:
        """Player columns of each layer and of everything upstream of it, and
        the ``(head, rest, fill)`` run after each player layer (call order)."""
        cols = [
            torch.arange(self.offsets[i], self.offsets[i + 1]) for i in self.call_order
        ]
        self._layer_cols = cols
        self._upstream_cols = [torch.cat(cols[: k + 1]) for k in range(len(cols))]
        self._stages = []
        for layer, (head, rest) in zip(self.call_order, stages):
            fill = self.fills[layer]
            if head is not None:
                # The mask is applied after the head, so its fill is the
                # head's image of the removal value.
                if isinstance(fill, float):
                    fill = torch.full(self.unit_shapes[layer], fill)
                with torch.no_grad():
                    fill = head(fill.unsqueeze(0))[0]
                if not bool(fill.any()):
                    fill = 0.0
            self._stages.append((head, rest, fill))

    def _cache_prefix(self, prefix: Callable) -> None:
        self._prefix = prefix
        with torch.no_grad():
            first_cut = prefix(*self.batches[0][0])
        per_example = sum(c.numel() * c.element_size() for c in first_cut) / max(
            1, self.batches[0][0][0].shape[0]
        )
        n_total = sum(b[0][0].shape[0] for b in self.batches)
        if per_example * n_total <= self.cache_bytes:
            # Keep every batch's prefix activations: each coalition then costs
            # one pass of the suffix only.
            with torch.no_grad():
                self._cuts = [first_cut] + [
                    prefix(*inputs) for inputs, _, _ in self.batches[1:]
                ]
        else:
            # Too large to keep: the prefix runs once per batch and per call of
            # evaluate, shared by all the coalitions of that call.
            self._cuts = []

    @property
    def uses_prefix_cache(self) -> bool:
        return self.split is not None or self.chain is not None

    @property
    def uses_segment_cache(self) -> bool:
        return self.chain is not None

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
                    cut = self._prefix(*inputs)
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

    def _segment_plan(self, masks: torch.Tensor) -> List[tuple]:
        """Per player layer (call order): which coalitions share its input.

        Level ``k`` lists the distinct masks of layers ``0..k`` among the rows
        of ``masks``: ``(inverse, parent, keep, first)`` where ``inverse[g]``
        is coalition ``g``'s distinct row, ``parent[u]`` the row of level
        ``k - 1`` that distinct row ``u`` extends, ``keep`` the masks of layer
        ``k`` per distinct row (None when all ones: nothing to mask) and
        ``first[u]`` one coalition with that row.
        """
        plan = []
        previous = torch.zeros(masks.shape[0], dtype=torch.long)
        positions = torch.arange(masks.shape[0])
        for cols, up in zip(self._layer_cols, self._upstream_cols):
            _, inverse = torch.unique(masks[:, up], dim=0, return_inverse=True)
            n_unique = int(inverse.max()) + 1
            # Any coalition of a distinct row will do: they share its masks.
            first = torch.empty(n_unique, dtype=torch.long).scatter_(
                0, inverse, positions
            )
            keep = masks[first][:, cols]
            if bool(keep.all()):
                keep = None
            plan.append((inverse, previous[first], keep, first))
            previous = inverse
        return plan

    def _forward_segments(self, batch_index: int, plan: List[tuple]) -> torch.Tensor:
        """Outputs of the distinct coalitions of ``plan`` (blocks of examples)."""
        assert self.chain is not None
        inputs = self.batches[batch_index][0]
        h = self._cuts[batch_index][0] if self._cuts else self._prefix(*inputs)[0]
        block = h.shape[0]
        n_rows = 1
        for (_, parent, keep, _), (head, rest, fill) in zip(plan, self._stages):
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
                h = group_mask(h, keep, fill)
            h = rest(h)
        self.n_forward_passes += 1
        return h

    @torch.no_grad()
    def evaluate(self, masks: torch.Tensor) -> torch.Tensor:
        """``V`` of each coalition (rows of ``masks``), float64 on the CPU."""
        masks = masks.float()
        values = []
        for start in range(0, masks.shape[0], self.coalitions_per_batch):
            chunk = masks[start : start + self.coalitions_per_batch]
            nums = torch.zeros(chunk.shape[0], dtype=torch.float64)
            dens = torch.zeros(chunk.shape[0], dtype=torch.float64)
            if self.chain is not None:
                plan = self._segment_plan(chunk)
                inverse = plan[-1][0]
                n_unique = plan[-1][3].shape[0]
            for b in range(len(self.batches)):
                if self.chain is not None:
                    out = self._forward_segments(b, plan)
                    n, d = self._metric_parts(out, self.batches[b][1], n_unique)
                    n, d = n[inverse], d[inverse]
                else:
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
    n_examples_per_batch: int,
    device: Optional[torch.device] = None,
    segment_cache: bool = False,
) -> int:
    """Coalitions per forward pass: about 1024 examples per pass on a CPU
    (larger passes fall out of cache and get slower per example) and 8192 on
    an accelerator (which needs large batches to be busy). With the segment
    cache, larger chunks of a walk share more upstream segments, so the CPU
    target is 8192 too (most segments then run on far fewer rows)."""
    on_cpu = device is None or torch.device(device).type == "cpu"
    target = 1024 if on_cpu and not segment_cache else 8192
    return max(1, min(128, target // max(1, n_examples_per_batch)))


def shapley_weights(n_players: int) -> torch.Tensor:
    """``|S|! (P - |S| - 1)! / P!`` for ``|S| = 0 .. P - 1`` (float64)."""
    s = torch.arange(n_players, dtype=torch.float64)
    logw = (
        torch.lgamma(s + 1) + torch.lgamma(n_players - s) - math.lgamma(n_players + 1)
    )
    return logw.exp()
