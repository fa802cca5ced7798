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
    format_inputs,
)
from ..._utils.data import (
    check_target_range,
    format_target,
    is_tensor_data,
    iter_batches,
)
from ..._utils.hooks import capture_layer, mask_units, replace_layer_output
from ..._utils.module_probe import leaf_output_bytes, record_call_order
from ..._utils.validation import check_finite_inputs
from ._shapley_additive import AdditiveStage, split_linear_front
from ._shapley_suffix import (
    split_at_layer,
    split_chain,
    split_channelwise_head,
    verify_chain,
    verify_split,
)

# Evaluation batches of at least this many examples use the depth-first
# incremental path (see NeuronGame._setup_additive).
TREE_MIN_EXAMPLES = 96
# Examples on which NeuronGame checks its splits of the model and the
# incremental path against direct evaluation before using them.
_CHECK_EXAMPLES = 16


MetricType = Union[str, Callable[[torch.Tensor, Any], torch.Tensor]]
BUILTIN_METRICS = ("accuracy", "loss", "class_accuracy")

# One evaluation batch: (inputs tuple, labels or None, additional args or None)
Batch = Tuple[Tuple[torch.Tensor, ...], Optional[torch.Tensor], Any]


def check_logits(out: Any, metric: str) -> torch.Tensor:
    """The built-in metrics read a ``(N, classes)`` logits tensor."""
    if not torch.is_tensor(out):
        raise ValueError(
            f"metric={metric!r} needs forward_func to return a logits tensor of "
            f"shape (N, classes), got a {type(out).__name__}; pass a callable "
            "metric(outputs, target) for other outputs"
        )
    if out.dim() != 2:
        raise ValueError(
            f"metric={metric!r} needs forward_func to return a logits tensor of "
            f"shape (N, classes), got shape {tuple(out.shape)}; pass a callable "
            "metric(outputs, target) for other outputs"
        )
    return out


def _batch_size(out: Any) -> int:
    """The first dimension shared by the tensors of a model output."""
    if torch.is_tensor(out):
        if out.dim() == 0:
            raise ValueError(
                "forward_func returned a 0-dimensional tensor: the outputs must "
                "have the examples along their first dimension"
            )
        return out.shape[0]
    items = list(out.values()) if isinstance(out, dict) else out
    if isinstance(items, (tuple, list)):
        for item in items:
            if torch.is_tensor(item) or isinstance(item, (tuple, list, dict)):
                return _batch_size(item)
    raise ValueError(
        f"forward_func returned a {type(out).__name__} holding no tensor; a "
        "callable metric receives the outputs of each coalition"
    )


def split_groups(out: Any, n_groups: int) -> List[Any]:
    """Split a model output (a tensor, or a tuple, list, named tuple or dict
    of them) computed on ``n_groups`` blocks of examples into one output of
    the same structure per block."""
    if torch.is_tensor(out):
        if out.dim() == 0 or out.shape[0] % n_groups:
            raise ValueError(
                f"forward_func returned a tensor of shape {tuple(out.shape)}, whose "
                "first dimension is not the batch of examples"
            )
        return list(out.reshape(n_groups, -1, *out.shape[1:]).unbind(0))
    if isinstance(out, dict):
        parts = {k: split_groups(v, n_groups) for k, v in out.items()}
        return [type(out)((k, v[g]) for k, v in parts.items()) for g in range(n_groups)]
    if isinstance(out, (tuple, list)):
        parts = [split_groups(v, n_groups) for v in out]
        if hasattr(out, "_fields"):  # a named tuple
            return [type(out)(*(p[g] for p in parts)) for g in range(n_groups)]
        return [type(out)(p[g] for p in parts) for g in range(n_groups)]
    # Anything else (None, a string, a number) is the same for every block.
    return [out] * n_groups


def metric_value(v: Any) -> torch.Tensor:
    """A callable metric's return value as a float64 scalar on the CPU: a
    one-element tensor or a real number; anything else is refused."""
    if isinstance(v, bool) or not (
        torch.is_tensor(v) or isinstance(v, (int, float)) or hasattr(v, "item")
    ):
        raise TypeError(
            "metric must return a scalar tensor or a number, got "
            f"{type(v).__name__}"
        )
    if not torch.is_tensor(v):
        try:
            v = torch.as_tensor(v, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(
                f"metric must return a scalar tensor or a number, got {v!r}"
            ) from None
    if v.numel() != 1:
        raise ValueError(f"metric must return a scalar, got shape {tuple(v.shape)}")
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"metric must return a real number, got dtype {v.dtype}")
    v = v.detach().double().reshape(()).cpu()
    if not bool(torch.isfinite(v)):
        raise ValueError("metric returned NaN or an infinite value")
    return v


def _labels(target: Any, n: int, builtin: bool, name: str) -> Optional[torch.Tensor]:
    """Labels of ``n`` examples: class indices for the built-in metrics
    (:func:`format_target`); for a callable metric, whatever it takes, one
    entry per example (an int is repeated), finite."""
    if builtin or target is None:
        return format_target(target, n, name=name)
    if isinstance(target, int) and not isinstance(target, bool):
        return torch.full((n,), target, dtype=torch.long)
    try:
        labels = torch.as_tensor(target)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(
            f"{name} must be a tensor, a list or an int, got {type(target).__name__}"
        ) from None
    if labels.dim() == 0:
        labels = labels.reshape(1).expand(n)
    if labels.shape[0] != n:
        raise ValueError(
            f"{name} must have one entry per input ({n}), got shape "
            f"{tuple(labels.shape)}"
        )
    check_finite_inputs(name, labels)
    return labels


def make_batches(
    inputs: Any,
    target: Any,
    additional_forward_args: Any,
    batch_size: Optional[int],
    device: torch.device,
    builtin_metric: bool,
) -> Tuple[List[Batch], int]:
    """The evaluation batches of a game, on ``device``, and their example count.

    ``inputs`` is a tensor or tuple of tensors (split in ``batch_size``
    chunks, ``target`` alongside) or an iterable of batches (a DataLoader)
    yielding ``x`` or ``(x, labels)``. ``target`` is then an int, labels for
    every example in the loader's order, or None; a loader that yields
    labels takes no ``target``. Non-finite inputs raise a ``ValueError``
    naming ``inputs`` (:func:`~captum_inverseset._utils.data.iter_batches`);
    labels are checked by :func:`_labels`.
    """
    extra = format_additional_forward_args(additional_forward_args)
    if isinstance(inputs, (str, bytes, dict)) or inputs is None:
        raise ValueError(
            "inputs must be a tensor, a tuple of tensors or a DataLoader, got "
            f"{type(inputs).__name__}"
        )
    if is_tensor_data(inputs):
        xs = format_inputs(inputs)
        if xs[0].dim() == 0 or xs[0].shape[0] == 0:
            raise ValueError("inputs is empty")
        n = xs[0].shape[0]
        labels = _labels(target, n, builtin_metric, "target")
        raw = list(iter_batches(inputs, labels, batch_size or n, "target"))
    else:
        raw = list(iter_batches(inputs, None, 1, "target"))
        n = sum(xb[0].shape[0] for xb, _ in raw)
        if n == 0:
            raise ValueError("inputs is empty")
        given = [y is not None for _, y in raw]
        if any(given):
            if target is not None:
                raise ValueError(
                    "target must be None when the DataLoader yields (inputs, "
                    "labels) batches: the labels come from the loader"
                )
            if not all(given):
                raise ValueError(
                    "the DataLoader yields labels with some batches but not others"
                )
            raw = [
                (xb, _labels(y, xb[0].shape[0], builtin_metric, "target"))
                for xb, y in raw
            ]
        elif target is not None:
            labels = _labels(target, n, builtin_metric, "target")
            sizes = [xb[0].shape[0] for xb, _ in raw]
            raw = [(xb, y) for (xb, _), y in zip(raw, labels.split(sizes))]
    batches: List[Batch] = []
    for xb, y in raw:
        if any(t.shape[0] != xb[0].shape[0] for t in xb):
            raise ValueError("inputs: all tensors must have the same first dimension")
        if xb[0].shape[0] == 0:
            continue
        batches.append(
            (
                tuple(t.to(device) for t in xb),
                None if y is None else y.to(device),
                extra,
            )
        )
    return batches, n


def label_batches(
    forward_func: Callable,
    batches: List[Batch],
    metric: str,
    metric_class: Optional[int],
) -> List[Batch]:
    """For the built-in metrics: the model must return logits ``(N,
    classes)``, and labels and ``metric_class`` must index one of its
    classes; batches without labels get the model's own predictions."""
    labeled = []
    n_classes = 0
    for i, (inputs, labels, extra) in enumerate(batches):
        if labels is None or i == 0:
            with torch.no_grad():
                out = _call(forward_func, inputs, extra)
            check_logits(out, metric)
            n_classes = out.shape[1]
            if labels is None:
                labels = out.argmax(-1)
        check_target_range(labels, n_classes)
        labeled.append((inputs, labels, extra))
    if metric == "class_accuracy" and metric_class is not None:
        if metric_class >= n_classes:
            raise ValueError(
                f"metric_class={metric_class} is not a class of the model, which "
                f"has {n_classes} outputs (valid: 0 to {n_classes - 1})"
            )
    return labeled


def group_mask(
    output: torch.Tensor, keep: torch.Tensor, fill: Union[float, torch.Tensor]
) -> torch.Tensor:
    """Mask channels of ``output`` per block: ``keep`` is ``(G, C)``
    (:func:`~captum_inverseset._utils.hooks.mask_units`, the package's one
    masking rule: removed units are replaced, never multiplied)."""
    return mask_units(output, keep, fill)


class _Leaves:
    """The outputs of the last level of :meth:`NeuronGame._forward_tree`,
    by distinct row.

    A row comes either finished or as the output of the last segment's
    linear front, with the rest of the segment (``tail``) still to run. The
    tails run on groups of rows stacked to about ``group_bytes``: one call
    per group instead of one per row, on tensors that stay small enough for
    the processor's cache (one call on every row of a walk would allocate
    megabytes at a time).
    """

    def __init__(self, n_rows: int, group_bytes: int = 2**20) -> None:
        self.outputs: List[Optional[torch.Tensor]] = [None] * n_rows
        self.group_bytes = group_bytes
        self._pending: List[Tuple[int, torch.Tensor]] = []
        self._tail: Optional[Callable] = None
        self._bytes = 0

    def add(self, row: int, out: torch.Tensor, tail: Optional[Callable] = None) -> None:
        if tail is None:
            self.outputs[row] = out
            return
        if self._pending and tail is not self._tail:
            self.flush()
        self._tail = tail
        self._pending.append((row, out))
        self._bytes += out.numel() * out.element_size()
        if self._bytes >= self.group_bytes:
            self.flush()

    def flush(self) -> None:
        if not self._pending:
            return
        assert self._tail is not None
        rows = [r for r, _ in self._pending]
        fronts = [f for _, f in self._pending]
        done = self._tail(torch.cat(fronts))
        for r, piece in zip(rows, done.split([f.shape[0] for f in fronts])):
            self.outputs[r] = piece
        self._pending, self._bytes = [], 0

    def result(self) -> torch.Tensor:
        self.flush()
        return torch.cat(self.outputs)  # type: ignore[arg-type]


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
        additive: bool = True,
        additive_bytes: int = 2**28,
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
        self.additive_bytes = additive_bytes
        self._want_additive = additive
        self._use_tree: List[bool] = []
        # Per segment (call order): AdditiveStage or None; see _setup_additive.
        self._additive: List[Optional[AdditiveStage]] = []
        self._contrib_cache: dict = {}
        # (batch, level) -> (upstream mask key, mask, linear front output) of
        # the last row evaluated: the next chunk of a walk starts from it.
        self._ref_cache: dict = {}
        self._measure_layers()
        self.split = None
        self.chain: Optional[List[nn.Module]] = None
        self._cuts: List[tuple] = []
        if prefix_cache:
            self._setup_prefix_cache(segment_cache)

    # ------------------------------------------------------------------ setup
    def _measure_layers(self) -> None:
        """Unit counts, call order and mean activations of the player layers
        over every batch (the removal values of mean removal). A layer
        output holding NaN or an infinity (on finite inputs) is refused, so
        no fill is ever computed from non-finite values."""
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
                with record_call_order(self.layers) as calls:
                    with torch.no_grad():
                        _call(self.forward_func, inputs, extra)
                if not order:
                    order = list(dict.fromkeys(calls))
                for i, cap in enumerate(caps):
                    if not cap.outputs:
                        continue
                    out = cap.output
                    if not torch.is_tensor(out) or out.dim() < 2:
                        raise ValueError(
                            f"layer {i} must output a tensor with a batch dimension "
                            "and at least one unit dimension"
                        )
                    if out.is_floating_point() and not bool(torch.isfinite(out).all()):
                        raise ValueError(
                            f"layer {i} outputs NaN or infinite values on finite "
                            "inputs; its removal value (and every coalition's "
                            "value) would be undefined"
                        )
                    total = out.double().sum(0)
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
                if not verify_chain(composed, self.forward_func, self._sample_inputs()):
                    stages = None
            if stages is not None:
                self.chain = chain
                self._setup_segments(stages)
                self._cache_prefix(lambda *x: (chain[0](*x),))
                if self._want_additive:
                    self._setup_additive()
                return
        split = split_at_layer(self.forward_func, self.layers[first], self.layers)
        if split is None or not verify_split(
            split, self.forward_func, self._sample_inputs()
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

    def _setup_additive(self) -> None:
        """Find the segments whose linear front can be evaluated additively
        (:mod:`._shapley_additive`), then check on the first batch that the
        additive path reproduces the direct one."""
        inputs = self.batches[0][0]
        with torch.no_grad():
            h = self._prefix(*inputs)[0][:1]
            stages: List[Optional[AdditiveStage]] = []
            block = max(b[0][0].shape[0] for b in self.batches)
            for head, rest, fill in self._stages:
                if head is not None:
                    h = head(h)
                stage = None
                front = split_linear_front(rest)
                if front is not None:
                    try:
                        stage = AdditiveStage(front, fill, tuple(h.shape[1:]))
                    except Exception:  # noqa: BLE001 - an unexpected layout
                        stage = None
                    if (
                        stage is not None
                        and stage.bytes_per_example * block > self.additive_bytes
                    ):
                        stage = None
                stages.append(stage)
                h = rest(h)
        if not any(s is not None for s in stages):
            return
        # The depth-first path pays a Python cost per row of the tree: it wins
        # on a CPU when each row carries enough examples (measured on the 80
        # conv channels of the digits classifier, evaluations per second
        # over the breadth-first path, best of 5, 2 threads / 1 thread:
        # 1.87x / 2.1x at 359 examples, 1.64x / 1.75x at 192, 1.63x / 1.57x
        # at 128, 1.98x / 1.79x at 96; at 32 to 64 between 0.7x and 1.2x,
        # varying from run to run).
        # An accelerator wants the large batches of the breadth-first path.
        self._use_tree = [
            inputs_[0].device.type == "cpu" and inputs_[0].shape[0] >= TREE_MIN_EXAMPLES
            for inputs_, _, _ in self.batches
        ]
        if not any(self._use_tree):
            return
        # Check: a few coalitions of a random walk, both paths, on the first
        # examples of a batch (the check is of the structure, which the
        # number of examples does not change; all of them would cost as
        # much as several walks).
        gen = torch.Generator().manual_seed(0)
        rank_of = torch.randperm(self.n_players, generator=gen)
        positions = torch.linspace(0, self.n_players, 7).round().long()
        masks = (rank_of.unsqueeze(0) >= positions.unsqueeze(1)).float()
        with torch.no_grad():
            h = self._prefix(*self._sample_inputs(self._use_tree.index(True)))[0]
            plan = self._segment_plan(masks)
            self._additive = stages
            try:
                fast = self._forward_tree("check", plan, masks, h)
            finally:
                self._additive = []
                self._contrib_cache.pop("check", None)
                self._ref_cache = {}
            direct = self._forward_breadth(plan, h)
        self.n_forward_passes -= 2
        scale = float(direct.abs().max()) if direct.numel() else 0.0
        if fast.shape == direct.shape and torch.allclose(
            fast, direct, rtol=1e-4, atol=1e-5 * max(1.0, scale)
        ):
            self._additive = stages

    def _sample_inputs(self, batch_index: int = 0) -> Tuple[torch.Tensor, ...]:
        """The first few examples of an evaluation batch: enough to check the
        structure of a split (the checks compare two ways of computing the
        same function; the number of examples does not change that), at a
        fraction of the cost of the whole batch."""
        return tuple(x[:_CHECK_EXAMPLES] for x in self.batches[batch_index][0])

    def start_walk(self) -> None:
        """Forget the rows of the previous walk: each walk's values then
        depend on that walk only (resumed and distributed runs evaluate the
        same walks to the same bits)."""
        self._ref_cache = {}

    @property
    def uses_incremental(self) -> bool:
        return any(s is not None for s in self._additive) and any(self._use_tree)

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
        self, out: Any, labels: Any, n_groups: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-group (numerator, denominator) of the metric for one batch."""
        if callable(self.metric):
            groups = split_groups(out, n_groups)
            block = _batch_size(out) // n_groups
            values = [
                metric_value(self.metric(group, labels)) for group in groups
            ]
            nums = torch.stack(values) * block
            return nums, torch.full((n_groups,), float(block), dtype=torch.float64)
        check_logits(out, self.metric)
        block = out.shape[0] // n_groups
        grouped = out.reshape(n_groups, block, *out.shape[1:])
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

    def _forward_segments(
        self, batch_index: int, plan: List[tuple], masks: torch.Tensor
    ) -> torch.Tensor:
        """Outputs of the distinct coalitions of ``plan`` (blocks of examples)."""
        assert self.chain is not None
        inputs = self.batches[batch_index][0]
        h = self._cuts[batch_index][0] if self._cuts else self._prefix(*inputs)[0]
        if self._additive and self._use_tree[batch_index]:
            return self._forward_tree(batch_index, plan, masks, h)
        return self._forward_breadth(plan, h)

    def _forward_breadth(self, plan: List[tuple], h: torch.Tensor) -> torch.Tensor:
        """:meth:`_forward_segments` breadth first: each segment once on all
        the distinct rows of its level (``h``: the first player layer's
        output)."""
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

    def _forward_tree(
        self,
        batch_index: Union[int, str],
        plan: List[tuple],
        masks: torch.Tensor,
        h: torch.Tensor,
    ) -> torch.Tensor:
        """:meth:`_forward_segments`, depth first with incremental fronts.

        The distinct rows of the plan form a tree (a row of level ``k``
        extends one row of level ``k - 1``). Each node is visited once, its
        children one after the other: the activations in flight are those of
        one path of the tree (they stay in the processor's cache), and each
        child's linear front is its previous sibling's plus the
        contributions of the few channels in which their masks differ (see
        :mod:`._shapley_additive`). ``batch_index`` keys the caches of
        evaluation batch ``batch_index`` (any other key: scratch entries) and
        ``h`` is the first player layer's output on it.

        The masks are compared as Python lists: a row costs a few list
        operations instead of a handful of tensor operations on 1-D masks,
        whose dispatch would cost more than their arithmetic. The rest of the
        last segment (after its linear front) runs on the leaves' fronts
        stacked in groups (:class:`_Leaves`), not once per leaf.
        """
        assert self.chain is not None
        levels = []
        for k, (parent, keep) in enumerate((p[1], p[2]) for p in plan):
            children: List[List[int]] = [[] for _ in range(int(parent.max()) + 1)]
            rows = keep.tolist() if keep is not None else None
            order = range(parent.shape[0])
            if rows is not None:
                # Most kept first: along a walk, each row then removes a
                # few more channels than the previous one.
                sizes = [sum(r) for r in rows]
                order = sorted(order, key=lambda u: -sizes[u])  # noqa: B023
            for u, pa in zip(order, parent[list(order)].tolist()):
                children[pa].append(u)
            # The upstream masks of each parent row identify its input.
            if k == 0:
                keys: List[bytes] = [b""]
            else:
                up = masks[plan[k - 1][3]][:, self._upstream_cols[k - 1]]
                keys = [bytes(row) for row in up.to(torch.uint8).numpy()]
            levels.append((children, keep, rows, keys))
        leaves = _Leaves(plan[-1][1].shape[0])
        self._visit(batch_index, levels, 0, 0, h, leaves)
        self.n_forward_passes += 1
        return leaves.result()

    def _visit(
        self,
        batch_index: Union[int, str],
        levels: List[tuple],
        level: int,
        row: int,
        h: torch.Tensor,
        leaves: "_Leaves",
    ) -> None:
        """Run segment ``level`` for the children of ``row`` (``h``: the raw
        output of player layer ``level`` under ``row``'s masks); the last
        level hands its rows to ``leaves``."""
        head, rest, fill = self._stages[level]
        stage = self._additive[level]
        children, keep, rows, keys = levels[level]
        last = level == len(levels) - 1
        if head is not None:
            h = head(h)
        kids = children[row]
        if keep is None or stage is None:
            for u in kids:
                z = rest(h if keep is None else group_mask(h, keep[u : u + 1], fill))
                if last:
                    leaves.add(u, z)
                else:
                    self._visit(batch_index, levels, level + 1, u, z, leaves)
            return
        fixed = level == 0 and bool(self._cuts)
        # Candidate starting points (mask, linear output): for the first
        # player layer, whose input never changes, its all-kept and
        # all-removed outputs (computed directly once per evaluation batch);
        # the last row of the previous chunk with the same input; the
        # previous sibling. Each row starts from the nearest, the fixed ones
        # first on ties, so a player whose contribution is exactly 0 (a dead
        # neuron) gets bit-identical values with and without it.
        fixed_refs: List[tuple] = []
        deltas: dict = {}
        # Channels that can differ: those whose contribution is exactly 0
        # (dead neurons) do not count, so rows that differ only there share
        # bits.
        channels: Sequence[int] = range(stage.n_channels)
        if fixed:
            deltas, fixed_refs, channels = self._fixed_level_cache(
                batch_index, stage, h
            )
        budget = max(1, stage.n_channels // (2 if fixed else 4))
        previous: List[tuple] = []
        cached = self._ref_cache.get((batch_index, level))
        if cached is not None and cached[0] == keys[row]:
            previous = [(cached[1], cached[2])]
        front_tail = stage.front.tail
        for u in kids:
            m = rows[u]
            changed, ref, ref_mask = None, None, None
            for cand_mask, cand in fixed_refs + previous:
                diff = [c for c in channels if m[c] != cand_mask[c]]
                if changed is None or len(diff) < len(changed):
                    changed, ref, ref_mask = diff, cand, cand_mask
            if changed is not None and len(changed) <= budget:
                # ``ref`` is never written to: the first contribution makes a
                # new tensor (no copy of ``ref`` first), the rest add into it.
                lin = ref
                for c in changed:
                    d = deltas.get(c)
                    if d is None:
                        d = stage.channel_delta(h, c)
                        deltas[c] = d
                    sign = m[c] - ref_mask[c]
                    if lin is ref:
                        lin = torch.add(ref, d, alpha=sign)
                    else:
                        lin.add_(d, alpha=sign)
            else:
                lin = stage.masked(h, keep[u])
            previous = [(m, lin)]
            if last:
                leaves.add(u, lin, front_tail)
            else:
                z = front_tail(lin)
                self._visit(batch_index, levels, level + 1, u, z, leaves)
        if previous:
            self._ref_cache[(batch_index, level)] = (keys[row], *previous[0])

    def _fixed_level_cache(
        self,
        batch_index: Union[int, str],
        stage: AdditiveStage,
        h: torch.Tensor,
    ) -> Tuple[dict, List[tuple], Sequence[int]]:
        """Channel contributions, all-kept and all-removed outputs (with
        their masks as lists) of the first player layer's linear front for
        one batch, and the channels that can contribute at all
        (:meth:`AdditiveStage.live_channels`). Kept when they fit the cache
        budget; otherwise the contributions are computed as needed."""
        entry = self._contrib_cache.get(batch_index)
        if entry is not None:
            return entry
        n_channels = stage.n_channels
        refs = [
            ([1.0] * n_channels, stage.direct(h)),
            ([0.0] * n_channels, stage.masked(h, torch.zeros(n_channels))),
        ]
        live = stage.live_channels(h)
        total = stage.bytes_per_example * sum(b[0][0].shape[0] for b in self.batches)
        if total > self.cache_bytes:
            return {}, refs, live
        deltas = {c: stage.channel_delta(h, c) for c in range(n_channels)}
        entry = (deltas, refs, live)
        self._contrib_cache[batch_index] = entry
        return entry

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
                    out = self._forward_segments(b, plan, chunk)
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
    bytes_per_example: Optional[int] = None,
    incremental: bool = False,
) -> int:
    """Coalitions per forward pass.

    On a CPU: about 1024 examples per pass (larger passes fall out of cache
    and get slower per example), or 8192 with the segment cache (larger
    chunks of a walk share more upstream segments, and most segments then run
    on far fewer rows); at most 128 coalitions. The depth-first incremental
    path holds one row of each segment at a time, not the whole pass, so
    it takes 32768 examples (at most 256 coalitions): a whole walk of a
    hundred players in one pass, with the per-pass bookkeeping paid once
    (measured on the 80 conv channels of the digits classifier with 359
    examples: 6% more evaluations per second than with 22 coalitions).

    On a CUDA device, when ``bytes_per_example`` (the activations of one
    example's forward pass, :func:`activation_bytes_per_example`) is known:
    as many coalitions as fill a quarter of the free device memory, at most
    512 (a small model is otherwise bound by the cost of launching kernels,
    not by arithmetic). Otherwise 8192 examples per pass.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    n = max(1, n_examples_per_batch)
    if dev.type == "cpu":
        if incremental:
            return max(1, min(256, 32768 // n))
        target = 8192 if segment_cache else 1024
        return max(1, min(128, target // n))
    if dev.type == "cuda" and bytes_per_example and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return max(1, min(512, int(free // 4 // (bytes_per_example * n))))
    return max(1, min(128, 8192 // n))


def activation_bytes_per_example(
    forward_func: Callable, inputs: Tuple[torch.Tensor, ...], extra: Any
) -> Optional[int]:
    """Bytes of every leaf module's output per example, measured on one
    batch (an upper bound on the activations a forward pass holds at once);
    None when ``forward_func`` is not a module. The hooks are removed before
    returning, also on errors."""
    if not isinstance(forward_func, nn.Module):
        return None
    with leaf_output_bytes(forward_func) as record:
        with torch.no_grad():
            _call(forward_func, inputs, extra)
    return max(1, -(-record.total // max(1, inputs[0].shape[0])))


def shapley_weights(n_players: int) -> torch.Tensor:
    """``|S|! (P - |S| - 1)! / P!`` for ``|S| = 0 .. P - 1`` (float64)."""
    s = torch.arange(n_players, dtype=torch.float64)
    logw = (
        torch.lgamma(s + 1) + torch.lgamma(n_players - s) - math.lgamma(n_players + 1)
    )
    return logw.exp()
