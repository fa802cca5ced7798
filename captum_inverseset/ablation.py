"""Ablation curves: the metric after removing the k top-ranked units of a layer.

The standard check of a neuron ranking (Ghorbani & Zou, 2020, Fig. 2): remove
the ``k`` highest-ranked units (output replaced by its mean, or zero) and
measure the metric; a ranking that finds the responsible units makes it drop
fastest. :func:`ablation_curve` compares any number of rankings with removing
``k`` random units, and :func:`conductance_channel_scores` /
:func:`gradcam_channel_scores` turn Captum's ``LayerConductance`` and Grad-CAM
into per-unit rankings to compare Neuron Shapley with, and
:func:`filter_norm_scores` ranks filters by the norm of their weights.
"""

from typing import Any, Dict, Optional, Sequence, Union

import torch
from torch import Tensor, nn

from ._core.layer.neuron_shapley.data import label_batches, make_batches
from ._core.layer.neuron_shapley.game import ShapleyGame
from ._core.layer.neuron_shapley.metrics import resolve_metric
from ._core.layer.neuron_shapley.removal import resolve_removal
from ._utils.hooks import preserve_model_state
from ._utils.results import InterpretationResult, result_dataclass
from ._utils.validation import check_positive_int, make_generator, model_device

__all__ = [
    "AblationCurveResult",
    "ablation_curve",
    "conductance_channel_scores",
    "filter_norm_scores",
    "gradcam_channel_scores",
]


@result_dataclass
class AblationCurveResult(InterpretationResult):
    """Metric after removing the top ``k`` units of each ranking.

    Attributes:
        ks (Tensor): numbers of removed units, shape ``(K,)``.
        curves (Tensor): metric per ranking and ``k``, shape ``(R, K)``, in
            the order of ``names``.
        random_mean (Tensor): mean metric over random removals, ``(K,)``.
        random_std (Tensor): its standard deviation over the draws, ``(K,)``.
        names (list of str): the rankings' names.
        metric (str): the metric's name.
        removal (str): ``"mean"`` or ``"zero"``.
    """

    ks: Optional[Tensor] = None
    curves: Optional[Tensor] = None
    random_mean: Optional[Tensor] = None
    random_std: Optional[Tensor] = None
    names: Any = None
    metric: Any = None
    removal: Any = None

    def curve(self, name: str) -> torch.Tensor:
        """The curve of one ranking (``"random"`` gives ``random_mean``)."""
        if name == "random":
            return self.random_mean
        return self.curves[self.names.index(name)]

    def plot(self, plt_fig_axis: Optional[tuple] = None, title: Optional[str] = None):
        """Metric against the number of removed units, one line per ranking.

        Args:
            plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
                Default: None
            title (str, optional): axis title. Default: None

        Returns:
            (fig, ax): the matplotlib figure and axis.
        """
        from .visualization import figure_axis

        fig, ax = figure_axis(plt_fig_axis, (5, 3.5))
        ks = self.ks.numpy()
        for name, values in zip(self.names, self.curves):
            ax.plot(ks, values.numpy(), marker="o", label=name)
        mean, std = self.random_mean.numpy(), self.random_std.numpy()
        ax.plot(ks, mean, color="gray", linestyle="--", label="random")
        ax.fill_between(ks, mean - std, mean + std, color="gray", alpha=0.2)
        ax.set_xlabel("units removed")
        ax.set_ylabel(self.metric)
        ax.set_title(title or "Ablation curve")
        ax.legend()
        return fig, ax


def ablation_curve(
    forward_func: nn.Module,
    layer: Union[nn.Module, Sequence[nn.Module]],
    inputs: Any,
    scores: Dict[str, torch.Tensor],
    target: Any = None,
    ks: Sequence[int] = (0, 1, 2, 4, 8),
    metric: Any = "accuracy",
    metric_class: Optional[int] = None,
    removal: str = "mean",
    n_random: int = 10,
    seed: Optional[int] = 0,
    batch_size: Optional[int] = None,
) -> AblationCurveResult:
    r"""Remove the ``k`` top-scored units of ``layer`` and measure the metric.

    Args:
        forward_func (torch.nn.Module or Callable): the model.
        layer (torch.nn.Module or list of torch.nn.Module): the layer whose
            units (channels) are removed, or several layers whose units form
            one ranking (in layer order, as :class:`NeuronShapley` orders a
            list of layers).
        inputs (Tensor, tuple of Tensor or DataLoader): evaluation inputs, as
            in :meth:`NeuronShapley.attribute`.
        scores (dict of str to Tensor): one score per unit for each ranking
            (e.g. ``{"shapley": values, "conductance": ...}``), a flat tensor
            or one tensor per layer; higher means more important, so removed
            first.
        target (int, Tensor or list, optional): labels, as in
            :meth:`NeuronShapley.attribute`. Default: None
        ks (sequence of int, optional): numbers of units to remove.
            Default: (0, 1, 2, 4, 8)
        metric (str or Callable, optional): as in
            :meth:`NeuronShapley.attribute`. Default: "accuracy"
        metric_class (int, optional): class of ``"class_accuracy"``.
            Default: None
        removal (str, optional): ``"mean"`` or ``"zero"``. Default: "mean"
        n_random (int, optional): random removals averaged per ``k``.
            Default: 10
        seed (int, optional): seed of the random removals. Default: 0
        batch_size (int, optional): examples per forward pass.
            Default: None

    Returns:
        AblationCurveResult: the curves, with ``.plot()``.

    Examples::

        >>> ns = NeuronShapley(model, model.conv3)
        >>> values = ns.attribute(x, target=y, n_permutations=20)
        >>> curve = ablation_curve(model, model.conv3, x, {"shapley": values},
        ...                        target=y, ks=(0, 2, 4))
        >>> fig, ax = curve.plot()
    """
    if not isinstance(scores, dict) or not scores:
        raise ValueError("scores must be a non-empty dict of name -> tensor")
    metric_obj = resolve_metric(metric, metric_class)
    removal_obj = resolve_removal(removal)
    n_random = check_positive_int("n_random", n_random)
    ks = [int(k) for k in ks]
    if not ks or any(k < 0 for k in ks):
        raise ValueError(f"ks must be non-negative integers, got {ks!r}")
    if batch_size is not None:
        batch_size = check_positive_int("batch_size", batch_size)
    device = model_device(forward_func)
    builtin = metric_obj.builtin
    batches, _ = make_batches(inputs, target, None, batch_size, device, builtin)
    with preserve_model_state(forward_func):
        if builtin:
            batches = label_batches(forward_func, batches, metric, metric_class)
        # Each mask is one coalition, not a walk: the breadth-first engines
        # (no "incremental") evaluate them directly.
        layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        game = ShapleyGame(
            forward_func, layers, batches, metric_obj, removal_obj, exact=True
        )
        n_units = game.n_players
        if max(ks) > n_units:
            raise ValueError(f"ks go up to {max(ks)} but the layer has {n_units} units")
        names = list(scores)
        masks = []
        for name in names:
            score = scores[name]
            if isinstance(score, (list, tuple)):
                score = torch.cat([torch.as_tensor(s).flatten() for s in score])
            score = torch.as_tensor(score).detach().flatten().cpu()
            if score.numel() != n_units:
                raise ValueError(
                    f"scores[{name!r}] has {score.numel()} values, the layer has "
                    f"{n_units} units"
                )
            order = torch.argsort(score.double(), descending=True)
            for k in ks:
                mask = torch.ones(n_units)
                mask[order[:k]] = 0
                masks.append(mask)
        gen = make_generator(seed)
        for _ in range(n_random):
            order = torch.randperm(n_units, generator=gen)
            for k in ks:
                mask = torch.ones(n_units)
                mask[order[:k]] = 0
                masks.append(mask)
        values = game.evaluate(torch.stack(masks))
    n_rank = len(names) * len(ks)
    curves = values[:n_rank].reshape(len(names), len(ks))
    random = values[n_rank:].reshape(n_random, len(ks))
    return AblationCurveResult(
        ks=torch.tensor(ks),
        curves=curves,
        random_mean=random.mean(0),
        random_std=random.std(0) if n_random > 1 else torch.zeros(len(ks)),
        names=names,
        metric=metric_obj.name,
        removal=removal_obj.name,
    )


def conductance_channel_scores(
    forward_func: nn.Module,
    layer: nn.Module,
    inputs: torch.Tensor,
    target: Any,
    n_steps: int = 20,
    internal_batch_size: Optional[int] = None,
) -> torch.Tensor:
    """Per-unit ranking from Captum's ``LayerConductance``.

    The conductance of each unit for each example's target class, summed over
    the spatial positions and averaged over the examples.
    """
    from captum.attr import LayerConductance

    with preserve_model_state(forward_func, freeze_parameters=False):
        attr = LayerConductance(forward_func, layer).attribute(
            inputs, target=target, n_steps=n_steps,
            internal_batch_size=internal_batch_size,
        )  # fmt: skip
    return attr.detach().reshape(attr.shape[0], attr.shape[1], -1).sum(-1).mean(0)


def gradcam_channel_scores(
    forward_func: nn.Module, layer: nn.Module, inputs: torch.Tensor, target: Any
) -> torch.Tensor:
    """Per-unit ranking from Grad-CAM's channel weights.

    Grad-CAM weights each channel by its spatially averaged gradient of the
    target output; averaged over the examples.
    """
    from captum.attr import LayerGradientXActivation

    with preserve_model_state(forward_func, freeze_parameters=False):
        grads = LayerGradientXActivation(
            forward_func, layer, multiply_by_inputs=False
        ).attribute(inputs, target=target)
    return grads.detach().reshape(grads.shape[0], grads.shape[1], -1).mean(-1).mean(0)


def filter_norm_scores(layer: Union[nn.Module, Sequence[nn.Module]]) -> torch.Tensor:
    """Per-unit ranking by the L2 norm of each output unit's weights (a
    filter of a convolution, a row of a linear layer): the usual pruning
    baseline. A list of layers gives one flat ranking, in layer order."""
    layers = list(layer) if isinstance(layer, (list, tuple)) else [layer]
    norms = []
    for m in layers:
        weight = getattr(m, "weight", None)
        if not torch.is_tensor(weight) or weight.dim() < 2:
            raise ValueError(
                f"layer {type(m).__name__} has no weight with one row per unit"
            )
        norms.append(weight.detach().flatten(1).norm(dim=1).cpu())
    return torch.cat(norms)
