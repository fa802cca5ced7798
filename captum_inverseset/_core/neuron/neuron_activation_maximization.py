"""Activation maximisation by gradient ascent."""

import inspect
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import GradientAttribution, NeuronAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.captum_compat import (
    NeuronSelector,
    format_additional_forward_args,
    select_neuron,
)
from ..._utils.hooks import capture_layer, preserve_model_state
from ..._utils.layer_eval import normalize_selector
from ..._utils.memory import check_memory
from ..._utils.progress import progress
from ..._utils.results import InterpretationResult, result_dataclass
from ..._utils.validation import (
    check_finite_inputs,
    check_module,
    check_number,
    check_positive_float,
    check_positive_int,
    make_generator,
    model_device,
)
from ...objectives import (
    as_objective,
    capture_activations,
    frequency_penalty,
    total_variation_penalty,
)
from .neuron_profile import _per_example

__all__ = ["ActivationMaximizationResult", "NeuronActivationMaximization"]


@result_dataclass
class ActivationMaximizationResult(InterpretationResult):
    r"""Inputs found by :meth:`NeuronActivationMaximization.attribute`.

    Attributes:
        inputs (Tensor): ``(n_inputs, ...)`` the optimised inputs (without the
            random transforms).
        codes (Tensor): the parameterization codes that produce ``inputs``.
        history (Tensor): ``(n_steps,)`` objective value (mean over the batch,
            on the transformed inputs, penalties excluded) at every step.
        initial_objective, final_objective (Tensor): the objective on the
            untransformed inputs before and after optimisation: one value per
            input for a neuron selector, a single batch value for a Lucent
            objective.
        negative (bool): True when the objective was minimised.
    """

    inputs: Optional[Tensor] = None
    codes: Optional[Tensor] = None
    history: Optional[Tensor] = None
    initial_objective: Optional[Tensor] = None
    final_objective: Optional[Tensor] = None
    n_steps: Any = None
    negative: Any = None

    def plot(self, fig_size: Tuple[float, float] = (10, 4), **grid_kwargs):
        """The optimised inputs (when images) beside the objective curve.

        Returns:
            ``(fig, axes)``
        """
        import matplotlib.pyplot as plt

        from ...visualization import visualize_image_grid

        fig, axes = plt.subplots(1, 2, figsize=fig_size)
        if self.inputs.dim() == 4:
            titles = None
            if self.final_objective.numel() == self.inputs.shape[0]:
                titles = [f"{float(v):.2f}" for v in self.final_objective]
            visualize_image_grid(
                self.inputs,
                titles=titles,
                title="optimised inputs",
                plt_fig_axis=(fig, axes[0]),
                **grid_kwargs,
            )
        else:
            axes[0].axis("off")
        axes[1].plot(range(1, len(self.history) + 1), self.history.numpy())
        axes[1].set_xlabel("step")
        axes[1].set_ylabel("objective")
        axes[1].set_title("minimised" if self.negative else "maximised")
        fig.tight_layout()
        return fig, axes


def _call_transform(transform: Callable, x: Tensor, generator: torch.Generator):
    try:
        params = inspect.signature(
            transform.forward if isinstance(transform, nn.Module) else transform
        ).parameters
    except (TypeError, ValueError):
        params = {}
    if "generator" in params:
        return transform(x, generator=generator)
    return transform(x)


def _apply_transforms(transforms: Any, x: Tensor, generator: torch.Generator):
    if transforms is None:
        return x
    if isinstance(transforms, (list, tuple)):
        for t in transforms:
            x = _call_transform(t, x, generator)
        return x
    return _call_transform(transforms, x, generator)


class NeuronActivationMaximization(NeuronAttribution, GradientAttribution):
    r"""The input that maximises (or minimises) a neuron, by gradient ascent.

    Erhan et al.'s activation maximisation with Olah et al.'s regularisers:
    codes :math:`c` of a parameterization :math:`g` (an image in Fourier space
    with colour decorrelation, a box, a generator's latent...) are optimised
    with Adam so that the input :math:`x = g(c)`, after random transforms
    :math:`\tau` (jitter, scale, rotation), maximises the objective

    .. math::
        c^* = \arg\max_c \; \sum_n s\, a\big(\tau(g(c_n))\big)
        - \lambda_{TV}\,\mathrm{TV}(g(c_n)) - \lambda_F\,F(g(c_n))

    where :math:`a` is the neuron chosen by a Captum neuron selector in
    ``layer`` (or a Lucent objective: neuron, channel, DeepDream
    ``layer^2``, class logit, diversity and their sums), :math:`s = 1`, or
    :math:`s = -1` for negative optimisation, TV is the total variation and
    :math:`F` the high-frequency energy (see
    :func:`captum_inverseset.objectives.frequency_penalty`).

    Hooks exist only during :meth:`attribute` (Lucent's ``render_vis`` leaves
    them on every module), everything runs on the model's device, and all
    randomness (initial codes, transforms) comes from ``seed``.

    Args:
        forward_func (Callable or torch.nn.Module): the model or its forward
            function (an ``nn.Module`` when Lucent objectives are used).
        layer (torch.nn.Module, optional): the layer whose output holds the
            neuron; only None when every call passes ``objective``.
        device_ids (list of int, optional): kept for Captum compatibility.
            Default: None
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: Optional[nn.Module] = None,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        if layer is not None:
            check_module("layer", layer)
        NeuronAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        parameterization: nn.Module,
        neuron_selector: Optional[NeuronSelector] = None,
        objective: Optional[Callable] = None,
        n_inputs: int = 1,
        n_steps: int = 256,
        lr: float = 0.05,
        transforms: Union[None, Callable, Sequence[Callable]] = None,
        total_variation_weight: float = 0.0,
        frequency_weight: float = 0.0,
        negative: bool = False,
        init_codes: Optional[Tensor] = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        seed: Optional[int] = None,
        show_progress: bool = False,
    ) -> ActivationMaximizationResult:
        r"""Optimise ``n_inputs`` inputs for the objective.

        Args:
            parameterization (torch.nn.Module): codes -> inputs, with
                ``code_shape`` and ``random_codes(n, generator, device)``, e.g.
                :class:`~captum_inverseset.param.FFTImageParameterization` or
                :class:`~captum_inverseset.param.BoxParameterization`. Its
                buffers must be on the model's device.
            neuron_selector (int, tuple or Callable, optional): Captum's neuron
                selector on ``layer``'s output; slices are summed per example.
                Exactly one of ``neuron_selector`` and ``objective`` is given.
                Default: None
            objective (Callable, optional): a Lucent objective, e.g.
                ``objectives.channel("conv3", 5)`` or
                ``objectives.deepdream("relu2")`` (see
                :mod:`captum_inverseset.objectives`); it is maximised in the
                same sign convention as a neuron (Lucent returns a loss, its
                negative is the objective). Default: None
            n_inputs (int, optional): number of inputs optimised together.
                Default: 1
            n_steps (int, optional): Adam steps. Default: 256
            lr (float, optional): Adam learning rate. Default: 0.05
            transforms (Callable or list of Callable, optional): random
                transforms applied before the model (e.g.
                :func:`~captum_inverseset.param.standard_transforms`); those
                with a ``generator`` argument draw from ``seed``.
                Default: None
            total_variation_weight (float, optional): :math:`\lambda_{TV}`.
                Default: 0.0
            frequency_weight (float, optional): :math:`\lambda_F`. Default: 0.0
            negative (bool, optional): minimise instead of maximise.
                Default: False
            init_codes (Tensor, optional): starting codes
                ``(n_inputs, *code_shape)``. Default: None (the
                parameterization's random codes)
            additional_forward_args (Any, optional): extra arguments of the
                forward function. Default: None
            attribute_to_layer_input (bool, optional): select the neuron in
                the layer's input. Default: False
            seed (int, optional): seed of the initial codes and transforms.
                Default: None (random)
            show_progress (bool, optional): show a progress bar.
                Default: False

        Returns:
            ActivationMaximizationResult: the inputs, codes, objective history
            and initial/final objective values.

        Examples::

            >>> from captum_inverseset import NeuronActivationMaximization
            >>> from captum_inverseset.param import BoxParameterization
            >>> from captum_inverseset.zoo import digits_classifier
            >>> model = digits_classifier()
            >>> am = NeuronActivationMaximization(model, model.fc2)
            >>> result = am.attribute(
            ...     BoxParameterization((1, 8, 8)), neuron_selector=3, seed=0
            ... )
            >>> result.final_objective > result.initial_objective
            tensor([True])
        """
        if (neuron_selector is None) == (objective is None):
            raise ValueError("give exactly one of neuron_selector and objective")
        if neuron_selector is not None and self.layer is None:
            raise ValueError("neuron_selector needs a layer: construct with layer=")
        if objective is not None:
            if not isinstance(self.forward_func, nn.Module):
                raise ValueError(
                    "objective needs forward_func to be a torch.nn.Module, whose "
                    "submodules the objective names"
                )
            if not callable(objective):
                raise ValueError("objective must be a Lucent objective (a callable)")
            objective = as_objective(objective)
        if not isinstance(parameterization, nn.Module) or not (
            hasattr(parameterization, "random_codes")
            and hasattr(parameterization, "code_shape")
        ):
            raise ValueError(
                "parameterization must be an nn.Module with code_shape and "
                "random_codes(), e.g. "
                "captum_inverseset.param.BoxParameterization"
            )
        if neuron_selector is not None:
            neuron_selector = normalize_selector(neuron_selector)
        n_inputs = check_positive_int("n_inputs", n_inputs)
        n_steps = check_positive_int("n_steps", n_steps)
        lr = check_positive_float("lr", lr)
        total_variation_weight = check_number(
            "total_variation_weight", total_variation_weight, minimum=0.0
        )
        frequency_weight = check_number(
            "frequency_weight", frequency_weight, minimum=0.0
        )
        if not isinstance(negative, bool):
            raise ValueError(f"negative must be True or False, got {negative!r}")
        if transforms is not None and not (
            callable(transforms)
            or (
                isinstance(transforms, (list, tuple))
                and all(callable(t) for t in transforms)
            )
        ):
            raise ValueError("transforms must be a callable or a list of callables")

        device = model_device(self.forward_func)
        code_shape = tuple(parameterization.code_shape)
        code_numel = 1
        for size in code_shape:
            code_numel *= int(size)
        # codes, their gradient and Adam's two moments, in float32
        check_memory("n_inputs", n_inputs, 16 * n_inputs * code_numel, device)
        check_memory("n_steps", n_steps, 4 * n_steps)
        generator = make_generator(seed)
        if init_codes is None:
            codes = parameterization.random_codes(
                n_inputs, generator=generator, device=device
            )
        else:
            if not torch.is_tensor(init_codes) or tuple(init_codes.shape) != (
                n_inputs,
                *code_shape,
            ):
                raise ValueError(
                    "init_codes must be a tensor of shape (n_inputs, *code_shape) = "
                    f"{(n_inputs, *code_shape)}"
                )
            check_finite_inputs("init_codes", init_codes)
            codes = init_codes.to(device)
        codes = codes.detach().clone().requires_grad_(True)
        args = format_additional_forward_args(additional_forward_args)
        sign = -1.0 if negative else 1.0

        def evaluate(x: Tensor) -> Tensor:
            """Objective per example (selector) or for the batch (objective)."""
            if objective is None:
                with capture_layer(
                    self.layer, capture_input=attribute_to_layer_input
                ) as cap:
                    self._forward(x, args)
                out = cap.input if attribute_to_layer_input else cap.output
                return _per_example(select_neuron(out, neuron_selector), x.shape[0])
            with capture_activations(self.forward_func) as lookup:
                lookup.input = x
                lookup.output = self._forward(x, args)
                return -objective(lookup).reshape(1)

        history = torch.empty(n_steps)
        with preserve_model_state([self.forward_func, parameterization]):
            with torch.no_grad():
                initial = evaluate(parameterization(codes)).detach().float().cpu()
            optimizer = torch.optim.Adam([codes], lr=lr)
            with progress(n_steps, show_progress, "ActivationMaximization") as bar:
                for step in range(n_steps):
                    optimizer.zero_grad()
                    x = parameterization(codes)
                    value = evaluate(_apply_transforms(transforms, x, generator))
                    # per-example scale for both kinds (a Lucent loss is a mean)
                    total = value.sum() if objective is None else value.sum() * n_inputs
                    loss = -sign * total
                    if total_variation_weight:
                        loss = loss + total_variation_weight * (
                            total_variation_penalty(x).sum()
                        )
                    if frequency_weight:
                        loss = loss + frequency_weight * frequency_penalty(x).sum()
                    loss.backward()
                    optimizer.step()
                    history[step] = float(value.detach().mean())
                    bar.update()
            with torch.no_grad():
                inputs = parameterization(codes)
                final = evaluate(inputs).detach().float().cpu()
        return ActivationMaximizationResult(
            inputs=inputs.detach(),
            codes=codes.detach(),
            history=history,
            initial_objective=initial,
            final_objective=final,
            n_steps=n_steps,
            negative=bool(negative),
        )

    def _forward(self, x: Tensor, args: Any) -> Tensor:
        if args is None:
            return self.forward_func(x)
        return self.forward_func(x, *args)
