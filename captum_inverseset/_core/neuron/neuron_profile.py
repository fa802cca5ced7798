"""Dataset examples and activation statistics of one neuron (:class:`NeuronProfile`).

The profile streams a dataset (a tensor, a tuple of tensors or a DataLoader)
through the model once, keeps one scalar activation per example and a running
top-k/bottom-k of the inputs, and summarises the neuron as a histogram, top-k
and bottom-k examples, examples at chosen quantiles and per-class means.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.captum_compat import NeuronSelector, format_inputs
from ..._utils.data import (
    DatasetLike,
    count_batches,
    format_target,
    is_tensor_data,
    iter_batches,
)
from ..._utils.deprecation import deprecated_alias, renamed_kwargs
from ..._utils.hooks import preserve_model_state
from ..._utils.layer_eval import layer_eval, normalize_selector, select_neuron_values
from ..._utils.layers import resolve_layer
from ..._utils.memory import available_memory, check_memory
from ..._utils.progress import progress
from ..._utils.validation import (
    check_number,
    check_positive_int,
    model_device,
)
from .neuron_profile_result import NeuronProfileResult

__all__ = ["NeuronProfile", "NeuronProfileResult"]


def _n_examples(inputs: Any) -> int:
    first = inputs if torch.is_tensor(inputs) else inputs[0]
    return first.shape[0] if first.dim() else 0


def _check_finite_activations(acts: Tensor, offset: int) -> None:
    """The model must give the neuron a finite value on every (finite) input:
    a NaN would end up as the top activation and in NaN histogram edges."""
    bad = ~torch.isfinite(acts)
    if bool(bad.any()):
        first = offset + int(bad.nonzero()[0, 0])
        raise ValueError(
            f"the neuron's activation is NaN or infinite on {int(bad.sum())} "
            f"example(s) of inputs (first: example {first}); the model produces "
            "non-finite values there"
        )


def _selector_text(selector: Any) -> Optional[str]:
    """A selector as written in Python and on the command line: ``3``,
    ``(5, :, :)``, ``(5, 0:2, 1)``; None for a callable."""
    if callable(selector):
        return None

    def part(p: Any) -> str:
        if not isinstance(p, slice):
            return str(p)
        text = (
            f"{'' if p.start is None else p.start}:{'' if p.stop is None else p.stop}"
        )
        return text if p.step is None else f"{text}:{p.step}"

    if isinstance(selector, tuple):
        return "(" + ", ".join(part(p) for p in selector) + ")"
    return part(selector)


def _check_quantiles(quantiles: Sequence[float]) -> Tuple[float, ...]:
    if isinstance(quantiles, (str, bytes)) or not hasattr(quantiles, "__iter__"):
        raise ValueError(
            f"quantiles must be a sequence of numbers in [0, 1], got {quantiles!r}"
        )
    return tuple(
        check_number(f"quantiles[{i}]", q, 0.0, 1.0) for i, q in enumerate(quantiles)
    )


def _check_hist_range(hist_range: Any) -> Optional[Tuple[float, float]]:
    if hist_range is None:
        return None
    if not isinstance(hist_range, (tuple, list)) or len(hist_range) != 2:
        raise ValueError(f"hist_range must be (low, high), got {hist_range!r}")
    lo = check_number("hist_range[0]", hist_range[0])
    hi = check_number("hist_range[1]", hist_range[1])
    if not lo < hi:
        raise ValueError(
            f"hist_range must be (low, high) with low < high, got {hist_range!r}"
        )
    return lo, hi


def _check_labels(labels: Any, n: int) -> Tensor:
    """Class labels of ``n`` examples as a long tensor on the CPU."""
    if torch.is_tensor(labels) and labels.device.type == "meta":
        raise ValueError("target is a meta tensor: it holds no values")
    return format_target(labels, n, torch.device("cpu"), name="target")


# Bytes per histogram bin: float64 edges, their bucketize copy, int64 counts.
_BYTES_PER_BIN = 32
# Bytes per class of the per-class means: float64 sums and int64 counts.
_BYTES_PER_CLASS = 16


def _merge_extreme(
    best: Optional[Tuple[Tensor, Tensor, Tensor]],
    values: Tensor,
    indices: Tensor,
    examples: Tensor,
    k: int,
    largest: bool,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Running top-k (or bottom-k) with ties broken by the lower index.

    ``best`` holds ``(values, indices, examples)`` sorted by value, then index;
    new candidates all have larger indices, so a stable sort of the
    concatenation keeps the lower index first among equal values.
    """
    if best is not None:
        values = torch.cat([best[0], values])
        indices = torch.cat([best[1], indices])
        examples = torch.cat([best[2], examples])
    order = torch.sort(values, descending=largest, stable=True).indices[:k]
    return values[order], indices[order], examples[order]


class NeuronProfile:
    r"""Dataset examples and activation statistics of one neuron.

    For a neuron chosen with a Captum neuron selector, streams a dataset
    through the model and records the activation :math:`a_i` of every example
    :math:`x_i` (one float per example; inputs are not kept, except the
    ``k`` current top and bottom examples, so memory does not grow with the
    size of the inputs). From these it reports

    * the histogram of :math:`\{a_i\}`;
    * the top-k and bottom-k examples (Zeiler & Fergus's "patches that
      maximise a filter", on whole inputs);
    * examples at chosen quantiles (the "slightly positive / slightly
      negative" panels of Olah et al.);
    * the per-class mean :math:`\bar a_c = \frac{1}{|I_c|}\sum_{i \in I_c}
      a_i`, which shows the classes the neuron discriminates.

    The neuron selector follows the package's one rule (Captum's
    selection): an int or a tuple of ints must index exactly one value per
    example; slices in a tuple sum a region per example, so a channel is
    profiled with ``(c, slice(None), slice(None))`` (channel ``c`` summed over
    space, Captum's convention) or with a callable such as
    ``lambda out: out[:, c].mean((1, 2))``. A selector that leaves several
    values per example (``5`` on a convolutional output) is refused with a
    ``ValueError`` instead of being summed silently.

    Inputs holding NaN or an infinity are refused (a ``ValueError`` naming
    ``inputs``), and so is a model that gives the neuron a non-finite value.

    The result's :meth:`NeuronProfileResult.activation_range` turns dataset
    quantiles into the ``activation_range`` of the samplers.

    Gradient ascent on a neuron is :class:`NeuronActivationMaximization`, and
    concept scores of a layer's units are :class:`NetworkDissection`: each is
    its own class because each answers a different question with different
    inputs (a dataset, a parameterization, a dataset with concept masks), as
    Captum keeps one method per class. Their answer is a report, not an
    attribution, so they are not Captum ``Attribution`` subclasses and their
    verb is :meth:`interpret` (as ``captum.concept.TCAV.interpret``);
    ``attribute()`` remains as a deprecated alias.

    Args:
        forward_func (Callable or torch.nn.Module): the model or its forward
            function.
        layer (torch.nn.Module or str): the layer whose output holds the
            neuron, or its dotted name in ``forward_func``
            (``"layer3.1.conv2"``).
        device_ids (list of int, optional): the devices of a
            ``DataParallel`` forward function, passed to Captum's layer
            evaluation to gather the layer's outputs. Default: None
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: Union[nn.Module, str],
        device_ids: Optional[List[int]] = None,
    ) -> None:
        if not callable(forward_func):
            raise ValueError("forward_func must be a callable (the model)")
        self.forward_func = forward_func
        self.layer = resolve_layer(forward_func, layer)
        self.device_ids = device_ids

    @renamed_kwargs(
        labels="target", attribute_to_layer_input="attribute_to_neuron_input"
    )
    @log_usage(part_of_slo=True)
    def interpret(
        self,
        inputs: DatasetLike,
        neuron_selector: NeuronSelector,
        target: Any = None,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        k: int = 9,
        quantiles: Sequence[float] = (0.01, 0.1, 0.5, 0.9, 0.99),
        n_bins: int = 50,
        hist_range: Optional[Tuple[float, float]] = None,
        n_classes: Optional[int] = None,
        batch_size: int = 256,
        show_progress: bool = False,
    ) -> NeuronProfileResult:
        r"""Profile the neuron over a dataset.

        Args:
            inputs (Tensor, tuple of Tensor or DataLoader): the dataset. A
                tensor (or tuple of tensors, for models with several inputs) is
                processed in chunks of ``batch_size``. Any other iterable (a
                ``DataLoader``) must yield ``x`` or ``(x, y)`` batches, with
                ``y`` the class labels; it is iterated once, and a second time
                (in the same order, so no shuffling) when ``quantiles`` is not
                empty.
            neuron_selector (int, tuple, slice or Callable): Captum's neuron
                selector on the layer output: an int or tuple indexing one
                value per example (slices sum a region), or a callable
                returning one value per example. An out-of-range index
                raises Captum's own error.
            target (int, Tensor or list, optional): the class labels of tensor
                inputs, ``(N,)`` integer class indices (or one int for all),
                for the per-class means; Captum's ``target``. ``labels=`` is
                its deprecated old name. Default: None
            additional_forward_args (Any, optional): extra arguments of the
                forward function, passed unchanged with every batch.
                Default: None
            attribute_to_neuron_input (bool, optional): select the neuron in
                the layer's input instead of its output (Captum's
                ``NeuronAttribution`` name; ``attribute_to_neuron_input=`` is
                the deprecated old name). Default: False
            k (int, optional): number of top and bottom examples. Default: 9
            quantiles (sequence of float, optional): levels in [0, 1] at which
                to pick examples. Default: (0.01, 0.1, 0.5, 0.9, 0.99)
            n_bins (int, optional): histogram bins. Default: 50
            hist_range (tuple of float, optional): ``(low, high)`` of the
                histogram; values outside are not counted. Default: None (the
                minimum and maximum activation)
            n_classes (int, optional): number of classes for the per-class
                means. Default: None (largest label + 1)
            batch_size (int, optional): chunk size for tensor inputs.
                Default: 256
            show_progress (bool, optional): show a progress bar. Default: False

        Returns:
            NeuronProfileResult: histogram, examples, quantiles and class
            means (see :class:`NeuronProfileResult`).

        Examples::

            >>> from captum_inverseset import NeuronProfile
            >>> from captum_inverseset.zoo import digits_classifier
            >>> from captum_inverseset.zoo import load_digits_dataset
            >>> model = digits_classifier()
            >>> data = load_digits_dataset()
            >>> profile = NeuronProfile(model, model.fc2)
            >>> result = profile.interpret(
            ...     data.test_inputs, neuron_selector=3, target=data.test_labels
            ... )
            >>> result.class_means.argmax()  # the neuron is the logit of "3"
            tensor(3)
            >>> z1, z2 = result.activation_range(0.99, 1.0)
        """
        k = check_positive_int("k", k)
        n_bins = check_positive_int("n_bins", n_bins)
        check_memory("n_bins", n_bins, _BYTES_PER_BIN * (n_bins + 1))
        batch_size = check_positive_int("batch_size", batch_size)
        qs = _check_quantiles(quantiles)
        hist_lims = _check_hist_range(hist_range)
        if n_classes is not None:
            n_classes = check_positive_int("n_classes", n_classes)
            check_memory("n_classes", n_classes, _BYTES_PER_CLASS * n_classes)
        neuron_selector = normalize_selector(neuron_selector)
        if target is not None:
            if not is_tensor_data(inputs):
                raise ValueError(
                    "target must be None when inputs is a DataLoader: yield "
                    "(inputs, labels) batches instead"
                )
            target = _check_labels(target, _n_examples(inputs))

        device = model_device(self.forward_func)
        values: List[Tensor] = []
        label_chunks: List[Tensor] = []
        top = bottom = None
        offset = 0
        with (
            preserve_model_state(self.forward_func),
            torch.no_grad(),
            progress(
                count_batches(inputs, batch_size), show_progress, "NeuronProfile"
            ) as bar,
        ):
            for batch, batch_labels in iter_batches(
                inputs, target, batch_size, "target"
            ):
                batch = tuple(t.to(device) for t in batch)
                n = batch[0].shape[0]
                acts = self._neuron_values(
                    batch,
                    neuron_selector,
                    additional_forward_args,
                    attribute_to_neuron_input,
                )
                _check_finite_activations(acts, offset)
                idx = torch.arange(offset, offset + n)
                examples = batch[0].detach().cpu()
                top = _merge_extreme(top, acts, idx, examples, k, largest=True)
                bottom = _merge_extreme(bottom, acts, idx, examples, k, largest=False)
                values.append(acts)
                if batch_labels is not None:
                    label_chunks.append(_check_labels(batch_labels, n))
                offset += n
                bar.update()
        if offset == 0:
            raise ValueError("inputs is empty")
        activations = torch.cat(values)

        # histogram (numpy.histogram's bins, computed in float64)
        lo, hi = (
            hist_lims
            if hist_lims is not None
            else (float(activations.min()), float(activations.max()))
        )
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        edges = torch.linspace(lo, hi, n_bins + 1, dtype=torch.float64)
        a64 = activations.double()
        inside = (a64 >= lo) & (a64 <= hi)
        bins = torch.bucketize(a64[inside], edges[1:-1], right=True)
        histogram = torch.bincount(bins, minlength=n_bins)

        # examples at quantiles: nearest rank in a stable ascending order
        q_t = torch.tensor(qs, dtype=torch.float64)
        order = torch.sort(activations, stable=True).indices
        ranks = torch.round(q_t * (offset - 1)).long()
        q_indices = order[ranks]
        q_examples = self._gather_examples(
            inputs,
            q_indices,
            activations,
            batch_size,
            additional_forward_args,
            check=(neuron_selector, attribute_to_neuron_input),
            show_progress=show_progress,
        )

        class_means = class_counts = None
        if label_chunks:
            all_labels = torch.cat(label_chunks)
            if n_classes is None:
                n_cls = int(all_labels.max()) + 1
                if _BYTES_PER_CLASS * n_cls > 0.5 * available_memory():
                    raise ValueError(
                        f"target has class index {n_cls - 1}: the per-class "
                        "means would not fit in memory; pass n_classes or "
                        "check the target"
                    )
            else:
                n_cls = n_classes
                if int(all_labels.max()) >= n_cls:
                    raise ValueError(
                        f"target has class index {int(all_labels.max())}, but "
                        f"n_classes is {n_cls} (valid: 0 to {n_cls - 1})"
                    )
            class_counts = torch.bincount(all_labels, minlength=n_cls)
            sums = torch.zeros(n_cls, dtype=torch.float64).index_add_(
                0, all_labels, activations.double()
            )
            class_means = (sums / class_counts.double()).float()

        return NeuronProfileResult(
            activations=activations,
            histogram=histogram,
            bin_edges=edges,
            top_activations=top[0],
            top_indices=top[1],
            top_examples=top[2],
            bottom_activations=bottom[0],
            bottom_indices=bottom[1],
            bottom_examples=bottom[2],
            quantiles=q_t,
            quantile_activations=activations[q_indices],
            quantile_indices=q_indices,
            quantile_examples=q_examples,
            class_means=class_means,
            class_counts=class_counts,
            n_examples=offset,
            neuron=_selector_text(neuron_selector),
        )

    def _gather_examples(
        self,
        inputs: DatasetLike,
        indices: Tensor,
        activations: Tensor,
        batch_size: int,
        additional_forward_args: Any,
        check: Optional[Tuple[NeuronSelector, bool]] = None,
        show_progress: bool = False,
    ) -> Optional[Tensor]:
        """First input tensor of the examples at ``indices`` (dataset order)."""
        if indices.numel() == 0:
            return None
        if is_tensor_data(inputs):
            return format_inputs(inputs)[0][indices].detach().cpu()
        # A DataLoader cannot be indexed: walk it again and pick the examples.
        wanted = {int(i): [] for i in indices.unique()}
        offset = 0
        total = count_batches(inputs, batch_size)
        with progress(total, show_progress, "NeuronProfile examples") as bar:
            for batch, _ in iter_batches(inputs, None, batch_size, "inputs"):
                n = batch[0].shape[0]
                for i in wanted:
                    if offset <= i < offset + n:
                        wanted[i].append(batch[0][i - offset].detach().cpu())
                offset += n
                bar.update()
        if offset != activations.shape[0] or any(len(v) != 1 for v in wanted.values()):
            raise ValueError(
                "inputs yielded a different number of examples on its second pass: "
                "a DataLoader must iterate in a fixed order (shuffle=False)"
            )
        picked = torch.stack([wanted[int(i)][0] for i in indices])
        if check is not None and additional_forward_args is None:
            # single-input models: re-evaluate the picked examples
            self._check_same_order(picked, indices, activations, *check)
        return picked

    def _check_same_order(
        self,
        picked: Tensor,
        indices: Tensor,
        activations: Tensor,
        neuron_selector: NeuronSelector,
        attribute_to_neuron_input: bool,
    ) -> None:
        """Raise if the second pass picked other examples than the first saw."""
        device = model_device(self.forward_func)
        with preserve_model_state(self.forward_func), torch.no_grad():
            again = self._neuron_values(
                (picked.to(device),), neuron_selector, None, attribute_to_neuron_input
            )
        if not torch.allclose(again, activations[indices], rtol=1e-4, atol=1e-5):
            raise ValueError(
                "inputs yielded different examples on its second pass: a "
                "DataLoader must iterate in a fixed order (shuffle=False)"
            )

    def _neuron_values(
        self,
        batch: Tuple[Tensor, ...],
        neuron_selector: NeuronSelector,
        additional_forward_args: Any,
        attribute_to_neuron_input: bool,
    ) -> Tensor:
        """``(n,)`` float32 CPU values of the neuron on one batch (one forward,
        through the package's one layer evaluation and selector rule)."""
        out = layer_eval(
            self.forward_func,
            batch,
            self.layer,
            additional_forward_args,
            attribute_to_layer_input=attribute_to_neuron_input,
            device_ids=self.device_ids,
        )
        values = select_neuron_values(out, neuron_selector, batch[0].shape[0])
        return values.detach().float().cpu()

    @deprecated_alias("interpret")
    def attribute(self, *args: Any, **kwargs: Any) -> NeuronProfileResult:
        """Deprecated spelling of :meth:`interpret` (a ``FutureWarning``): the
        profile is a report on a neuron, not an attribution."""
