r"""The metrics :math:`V` of the Neuron Shapley game, defined in one place.

A metric turns the model's outputs on the evaluation examples, for many
coalitions at once, into one value per coalition. Each batch of examples
contributes a numerator and a denominator per coalition
(:meth:`Metric.parts`), summed over the batches and divided once, so a
value over several batches is the value over all their examples.

The built-in metrics read a logits tensor of shape ``(N, classes)``:

* ``"accuracy"``: the fraction of examples whose arg-max is the label;
* ``"loss"``: the negative cross-entropy (larger is better);
* ``"class_accuracy"``: the accuracy on the examples labelled
  ``metric_class``.

A callable ``metric(outputs, target)`` receives the model's outputs for one
coalition (a tensor, or a tuple, named tuple or dict of tensors) and the
labels of the batch, returns a scalar tensor or a number, and is averaged
over the batches weighted by their size. :func:`resolve_metric` builds the
metric object from what the user passed.
"""

from typing import Any, Callable, ClassVar, Dict, List, Optional, Tuple, Type, Union

import torch
import torch.nn.functional as F

__all__ = [
    "BUILTIN_METRICS",
    "Accuracy",
    "CallableMetric",
    "ClassAccuracy",
    "Metric",
    "MetricType",
    "NegativeCrossEntropy",
    "check_logits",
    "metric_value",
    "resolve_metric",
    "split_groups",
]

MetricType = Union[str, Callable[[Any, Any], Any]]


def check_logits(out: Any, metric: str) -> torch.Tensor:
    """The built-in metrics read a ``(N, classes)`` logits tensor."""
    if not torch.is_tensor(out) or out.dim() != 2:
        got = (
            f"shape {tuple(out.shape)}"
            if torch.is_tensor(out)
            else f"a {type(out).__name__}"
        )
        raise ValueError(
            f"metric={metric!r} needs forward_func to return a logits tensor of "
            f"shape (N, classes), got {got}; pass a callable "
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
        split = [split_groups(v, n_groups) for v in out]
        if hasattr(out, "_fields"):  # a named tuple
            return [type(out)(*(p[g] for p in split)) for g in range(n_groups)]
        return [type(out)(p[g] for p in split) for g in range(n_groups)]
    # Anything else (None, a string, a number) is the same for every block.
    return [out] * n_groups


def metric_value(v: Any) -> torch.Tensor:
    """A callable metric's return value as a float64 scalar on the CPU: a
    one-element tensor or a real number; anything else is refused."""
    if isinstance(v, bool) or not (
        torch.is_tensor(v) or isinstance(v, (int, float)) or hasattr(v, "item")
    ):
        raise TypeError(
            f"metric must return a scalar tensor or a number, got {type(v).__name__}"
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


class Metric:
    """One value per coalition from the model's outputs.

    Attributes:
        name (str): the name results report.
        builtin (bool): a built-in metric, which reads logits and class
            labels (validated against the model's classes).
        value_range (tuple or None): ``(low, high)`` bounds of the value when
            they are known (accuracies lie in [0, 1]), used by confidence
            bounds; None when unbounded.
    """

    name: ClassVar[str] = "metric"
    builtin: ClassVar[bool] = False
    value_range: Optional[Tuple[float, float]] = None

    def parts(
        self, out: Any, labels: Any, n_groups: int
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``(numerators, denominators)``, float64 on the CPU, of one batch
        evaluated for ``n_groups`` coalitions (``out`` holds their outputs
        one block of examples after another)."""
        raise NotImplementedError

    def identity(self) -> str:
        """What a checkpoint's fingerprint records of the metric."""
        return self.name

    def no_example_message(self) -> str:
        return f"metric {self.name!r} has no example in the inputs"


class _LogitsMetric(Metric):
    builtin = True

    def _grouped(self, out: Any, labels: torch.Tensor, n_groups: int):
        check_logits(out, self.name)
        block = out.shape[0] // n_groups
        grouped = out.reshape(n_groups, block, *out.shape[1:])
        return grouped, labels.to(out.device), block


class Accuracy(_LogitsMetric):
    """Fraction of the examples whose arg-max output is their label."""

    name = "accuracy"
    value_range = (0.0, 1.0)

    def parts(self, out, labels, n_groups):
        grouped, y, block = self._grouped(out, labels, n_groups)
        correct = (grouped.argmax(-1) == y.unsqueeze(0)).double()
        dens = torch.full((n_groups,), float(block), dtype=torch.float64)
        return correct.sum(1).cpu(), dens


class NegativeCrossEntropy(_LogitsMetric):
    """Minus the mean cross-entropy of the outputs with the labels."""

    name = "loss"

    def parts(self, out, labels, n_groups):
        grouped, y, block = self._grouped(out, labels, n_groups)
        losses = F.cross_entropy(
            grouped.reshape(-1, grouped.shape[-1]).float(),
            y.repeat(n_groups),
            reduction="none",
        ).reshape(n_groups, block)
        dens = torch.full((n_groups,), float(block), dtype=torch.float64)
        return -losses.double().sum(1).cpu(), dens


class ClassAccuracy(_LogitsMetric):
    """Accuracy on the examples whose label is ``metric_class``."""

    name = "class_accuracy"
    value_range = (0.0, 1.0)

    def __init__(self, metric_class: int) -> None:
        self.metric_class = metric_class

    def parts(self, out, labels, n_groups):
        grouped, y, _ = self._grouped(out, labels, n_groups)
        correct = (grouped.argmax(-1) == y.unsqueeze(0)).double()
        sel = (y == self.metric_class).double().unsqueeze(0)
        return (correct * sel).sum(1).cpu(), sel.sum(1).expand(n_groups).cpu()

    def identity(self) -> str:
        return f"{self.name}[{self.metric_class}]"

    def no_example_message(self) -> str:
        return f"metric_class={self.metric_class} has no example in the inputs"


class CallableMetric(Metric):
    """A user's ``metric(outputs, target)``, one call per coalition."""

    name = "callable"

    def __init__(self, fn: Callable[[Any, Any], Any]) -> None:
        self.fn = fn

    def parts(self, out, labels, n_groups):
        groups = split_groups(out, n_groups)
        block = _batch_size(out) // n_groups
        values = [metric_value(self.fn(group, labels)) for group in groups]
        dens = torch.full((n_groups,), float(block), dtype=torch.float64)
        return torch.stack(values) * block, dens


BUILTIN_METRICS: Dict[str, Type[_LogitsMetric]] = {
    "accuracy": Accuracy,
    "loss": NegativeCrossEntropy,
    "class_accuracy": ClassAccuracy,
}


def resolve_metric(metric: MetricType, metric_class: Optional[int] = None) -> Metric:
    """The metric object for ``metric`` (a name of :data:`BUILTIN_METRICS`,
    a callable, or a :class:`Metric`); refuses anything else, and a
    ``"class_accuracy"`` without an int ``metric_class >= 0``."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric not in BUILTIN_METRICS:
            raise ValueError(
                f"metric must be one of {tuple(BUILTIN_METRICS)} or a callable, "
                f"got {metric!r}"
            )
        if metric == "class_accuracy":
            if (
                metric_class is None
                or isinstance(metric_class, bool)
                or not isinstance(metric_class, int)
                or metric_class < 0
            ):
                raise ValueError(
                    "metric='class_accuracy' needs an int metric_class >= 0, got "
                    f"{metric_class!r}"
                )
            return ClassAccuracy(metric_class)
        return BUILTIN_METRICS[metric]()
    if callable(metric):
        return CallableMetric(metric)
    raise ValueError(f"metric must be a string or a callable, got {metric!r}")
