"""Activation maximisation by gradient ascent."""

import inspect
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.captum_compat import NeuronSelector, format_additional_forward_args
from ..._utils.deprecation import renamed_kwargs, warn_deprecated
from ..._utils.hooks import preserve_model_state
from ..._utils.layer_eval import layer_eval, normalize_selector, select_neuron_values
from ..._utils.layers import resolve_layer
from ..._utils.memory import check_memory
from ..._utils.progress import progress
from ..._utils.results import InterpretationResult, result_dataclass
from ..._utils.validation import (
    check_finite_inputs,
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

__all__ = ["ActivationMaximizationResult", "NeuronActivationMaximization"]


@result_dataclass
class ActivationMaximizationResult(InterpretationResult):
    r"""Inputs found by :meth:`NeuronActivationMaximization.interpret`.

    Attributes:
        inputs (Tensor): ``(n_inputs, ...)`` the optimised inputs (without the
            random transforms).
        codes (Tensor): the parameterization codes that produce ``inputs``.
        history (Tensor): ``(n_steps,)`` objective value (mean over the batch,
            on the transformed inputs, penalties excluded) at every step.
        initial_objective, final_objective (Tensor): ``(n_inputs,)``, the
            objective of each untransformed input before and after
            optimisation, whatever the objective: the neuron's value for a
            neuron selector, a Lucent objective evaluated on that input alone
            (sign flipped, so larger is better).
        initial_batch_objective, final_batch_objective (float): the objective
            of the whole batch, as :attr:`history` measures it (the mean of
            the per-input values for a neuron selector; the Lucent objective
            on all inputs at once). This is the value to read for objectives
            that are defined on a batch only (see the class docstring).
        negative (bool): True when the objective was minimised.
    """

    inputs: Optional[Tensor] = None
    codes: Optional[Tensor] = None
    history: Optional[Tensor] = None
    initial_objective: Optional[Tensor] = None
    final_objective: Optional[Tensor] = None
    initial_batch_objective: Any = None
    final_batch_objective: Any = None
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


def _default_parameterization(input_shape: Any) -> nn.Module:
    """Lucent's Fourier image for ``(C, H, W)`` inputs, a [0, 1] box else."""
    from ...param import BoxParameterization, FFTImageParameterization

    if input_shape is None:
        raise ValueError(
            "input_shape is required when no parameterization is given, e.g. "
            "input_shape=(3, 224, 224)"
        )
    if isinstance(input_shape, (str, bytes)) or not hasattr(input_shape, "__iter__"):
        raise ValueError(f"input_shape must be a sequence of ints, got {input_shape!r}")
    shape = tuple(input_shape)
    for size in shape:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(
                f"input_shape must hold positive ints, got {tuple(input_shape)!r}"
            )
    if not shape:
        raise ValueError("input_shape must not be empty")
    if len(shape) == 3:
        return FFTImageParameterization(shape)
    return BoxParameterization(shape)


def _check_parameterization(parameterization: Any) -> nn.Module:
    if not isinstance(parameterization, nn.Module) or not (
        hasattr(parameterization, "random_codes")
        and hasattr(parameterization, "code_shape")
    ):
        raise ValueError(
            "parameterization must be an nn.Module with code_shape and "
            "random_codes(), e.g. captum_inverseset.param.BoxParameterization"
        )
    return parameterization


class NeuronActivationMaximization:
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

    The neuron selector follows the package's one rule (Captum's selection):
    it must give one value per input (slices in a tuple sum a region, e.g.
    ``(c, slice(None), slice(None))`` for a channel); a selector that leaves
    several values per input is refused, not summed.

    The result reports the objective of every input (``final_objective``,
    ``(n_inputs,)``): the neuron's value, or a Lucent objective evaluated on
    that input alone. The one exception is an objective defined on the batch
    only, such as ``diversity`` (zero for one input) or one built with
    Lucent's ``batch=`` argument (it names one input, so the others give
    NaN): read ``final_batch_objective`` for those.

    This is not a Captum ``Attribution`` (it returns inputs, not
    attributions); its verb is :meth:`interpret`, and ``attribute()`` is a
    deprecated alias. Hooks exist only during the call (Lucent's
    ``render_vis`` leaves them on every module), everything runs on the
    model's device, and all randomness (initial codes, transforms) comes from
    ``seed``.

    Args:
        forward_func (Callable or torch.nn.Module): the model or its forward
            function (an ``nn.Module`` when Lucent objectives are used).
        layer (torch.nn.Module or str, optional): the layer whose output
            holds the neuron, or its dotted name in ``forward_func``; only
            None when every call passes ``objective``.
        device_ids (list of int, optional): the devices of a
            ``DataParallel`` forward function, passed to Captum's layer
            evaluation. Default: None
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: Union[None, nn.Module, str] = None,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        if not callable(forward_func):
            raise ValueError("forward_func must be a callable (the model)")
        self.forward_func = forward_func
        self.layer = None if layer is None else resolve_layer(forward_func, layer)
        self.device_ids = device_ids

    @renamed_kwargs(attribute_to_layer_input="attribute_to_neuron_input")
    @log_usage(part_of_slo=True)
    def interpret(
        self,
        neuron_selector: Optional[NeuronSelector] = None,
        parameterization: Optional[nn.Module] = None,
        objective: Optional[Callable] = None,
        input_shape: Optional[Sequence[int]] = None,
        n_inputs: int = 1,
        n_steps: int = 256,
        lr: float = 0.05,
        transforms: Union[None, Callable, Sequence[Callable]] = None,
        total_variation_weight: float = 0.0,
        frequency_weight: float = 0.0,
        negative: bool = False,
        init_codes: Optional[Tensor] = None,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        seed: Optional[int] = 0,
        show_progress: bool = False,
    ) -> ActivationMaximizationResult:
        r"""Optimise ``n_inputs`` inputs for the neuron or objective.

        Args:
            neuron_selector (int, tuple, slice or Callable, optional): Captum's
                neuron selector on ``layer``'s output, one value per input.
                Exactly one of ``neuron_selector`` and ``objective`` is given.
                Default: None
            parameterization (torch.nn.Module, optional): codes -> inputs,
                with ``code_shape`` and ``random_codes(n, generator,
                device)``, e.g.
                :class:`~captum_inverseset.param.FFTImageParameterization`,
                :class:`~captum_inverseset.param.BoxParameterization` or a
                :class:`~captum_inverseset.param.GeneratorParameterization`.
                Default: None (built from ``input_shape``: Lucent's Fourier
                image for ``(C, H, W)``, a [0, 1] box otherwise)
            objective (Callable, optional): a Lucent objective, e.g.
                ``objectives.channel("conv3", 5)`` or
                ``objectives.deepdream("relu2")`` (see
                :mod:`captum_inverseset.objectives`); it is maximised in the
                same sign convention as a neuron (Lucent returns a loss, its
                negative is the objective). Default: None
            input_shape (sequence of int, optional): shape of one input,
                needed only without ``parameterization``. Default: None
            n_inputs (int, optional): number of inputs optimised together.
                Default: 1
            n_steps (int, optional): Adam steps. Default: 256
            lr (float, optional): Adam learning rate. Default: 0.05
            transforms (Callable or list of Callable, optional): random
                transforms applied before the model (e.g.
                :func:`~captum_inverseset.param.standard_transforms`, which
                keeps the input size, so models with a fixed-size head work);
                those with a ``generator`` argument draw from ``seed``.
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
            attribute_to_neuron_input (bool, optional): select the neuron in
                the layer's input (Captum's ``NeuronAttribution`` name;
                ``attribute_to_layer_input=`` is the deprecated old name).
                Default: False
            seed (int, optional): seed of the initial codes and transforms;
                None draws a random seed. Default: 0
            show_progress (bool, optional): a progress bar over the steps.
                Default: False

        Returns:
            ActivationMaximizationResult: the inputs, codes, objective history
            and per-input initial/final objective values.

        Examples::

            >>> from captum_inverseset import NeuronActivationMaximization
            >>> from captum_inverseset.param import BoxParameterization
            >>> from captum_inverseset.zoo import digits_classifier
            >>> model = digits_classifier()
            >>> am = NeuronActivationMaximization(model, model.fc2)
            >>> result = am.interpret(
            ...     3, parameterization=BoxParameterization((1, 8, 8)), seed=0
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
        if parameterization is None:
            parameterization = _default_parameterization(input_shape)
        parameterization = _check_parameterization(parameterization)
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

        def batch_value(x: Tensor, grad: bool) -> Tensor:
            """Per-input values (selector) or the batch value (objective)."""
            if objective is None:
                out = layer_eval(
                    self.forward_func,
                    (x,),
                    self.layer,
                    args,
                    attribute_to_layer_input=attribute_to_neuron_input,
                    grad_enabled=grad,
                    device_ids=self.device_ids,
                )
                return select_neuron_values(out, neuron_selector, x.shape[0])
            with capture_activations(self.forward_func) as lookup:
                lookup.input = x
                lookup.output = self._forward(x, args)
                return -objective(lookup).reshape(1)

        def per_input(x: Tensor) -> Tuple[Tensor, float]:
            """``(n_inputs,)`` values of the inputs and the batch value."""
            with torch.no_grad():
                values = batch_value(x, grad=False).detach().float().cpu()
                if objective is None:
                    return values, float(values.mean())
                alone = torch.cat(
                    [batch_value(x[i : i + 1], grad=False) for i in range(len(x))]
                )
            return alone.detach().float().cpu(), float(values)

        history = torch.empty(n_steps)
        with preserve_model_state([self.forward_func, parameterization]):
            initial, initial_batch = per_input(parameterization(codes).detach())
            optimizer = torch.optim.Adam([codes], lr=lr)
            with progress(n_steps, show_progress, "ActivationMaximization") as bar:
                for step in range(n_steps):
                    optimizer.zero_grad()
                    x = parameterization(codes)
                    value = batch_value(
                        _apply_transforms(transforms, x, generator), grad=True
                    )
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
                inputs = parameterization(codes).detach()
            final, final_batch = per_input(inputs)
        return ActivationMaximizationResult(
            inputs=inputs,
            codes=codes.detach(),
            history=history,
            initial_objective=initial,
            final_objective=final,
            initial_batch_objective=initial_batch,
            final_batch_objective=final_batch,
            n_steps=n_steps,
            negative=bool(negative),
        )

    def attribute(
        self,
        parameterization: Optional[nn.Module] = None,
        neuron_selector: Optional[NeuronSelector] = None,
        **kwargs: Any,
    ) -> ActivationMaximizationResult:
        """Deprecated spelling of :meth:`interpret` (a ``FutureWarning``),
        with the parameterization as first argument as it was."""
        warn_deprecated(
            f"{type(self).__name__}.attribute(parameterization, neuron_selector) "
            "is deprecated, use .interpret(neuron_selector, "
            "parameterization=...)"
        )
        return self.interpret(
            neuron_selector, parameterization=parameterization, **kwargs
        )

    def _forward(self, x: Tensor, args: Any) -> Tensor:
        if args is None:
            return self.forward_func(x)
        return self.forward_func(x, *args)
