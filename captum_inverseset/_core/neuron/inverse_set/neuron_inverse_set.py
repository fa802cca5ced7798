r"""Sampling the inverse set of a neuron (Hada & Carreira-Perpinan).

The inverse set of a neuron with activation :math:`f` is the set of valid
inputs whose activation lies in a band,
:math:`\{x \text{ valid} : z_1 \le f(x) \le z_2\}`. :class:`NeuronInverseSet`
approximates it by a sample that covers it: samples are spread apart in a
low-dimensional encoding while a constraint solver pulls each one into the
band. The pieces live beside this module: the bands in ``constraints``, the
solvers in ``solvers``, the spread in ``spread``, the loop in ``loop``, the
result in ``result``, the settings in ``options``.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from captum.attr import GradientAttribution, NeuronAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ...._utils.captum_compat import (
    NeuronSelector,
    format_inputs,
    format_output,
    is_tuple,
)
from ...._utils.deprecation import renamed_kwargs, warn_deprecated
from ...._utils.hooks import preserve_model_state
from ...._utils.validation import (
    check_finite_inputs,
    check_module,
    check_number,
    check_positive_float,
    check_positive_int,
    make_generator,
    model_device,
)
from ....param import (
    BoxParameterization,
    IdentityParameterization,
    PooledEncoder,
    as_parameterization,
)
from .constraints import ActivationRange, ConstraintSet, NeuronConstraint
from .inputs import (
    build_parameterization,
    check_init_codes,
    make_transform,
    parse_input_range,
    top_fraction,
)
from .loop import InverseSetLoop, check_batch_memory
from .options import (
    DEFAULTS,
    TOP_RANGE_STARTS,
    TOP_RANGE_STEPS,
    SamplerOptions,
    check_bool,
    check_shape,
    resolve_code_bound,
)
from .probe import maximise_activation
from .result import InverseSetResult

__all__ = ["NeuronInverseSet"]

_OLD_INPUT_FLAG = {"attribute_to_layer_input": "attribute_to_neuron_input"}


class NeuronInverseSet(NeuronAttribution, GradientAttribution):
    r"""Sample the inverse set of a neuron (Hada & Carreira-Perpinan).

    The inverse set of a neuron with activation :math:`f` is
    :math:`\{x \text{ valid} : z_1 \le f(x) \le z_2\}`. It is approximated by
    ``n`` samples :math:`x_i = G(c_i)` from a generator or parameterization
    :math:`G`, spread apart in a low-dimensional encoding :math:`E`:

    .. math::
        \max_{c_1, \dots, c_n} \sum_{i,j=1}^{n}
        \|E(G(c_i)) - E(G(c_j))\|^2
        \quad \text{s.t.} \quad z_1 \le f(G(c_i)) \le z_2 .

    Samples are made ``K = batch_size`` at a time. The first ``K`` (the seeds)
    start from random codes and are optimised jointly until all are inside the
    band; each later batch starts from the previous batch's feasible samples
    plus noise, is pushed away from its own members and from every earlier
    sample, and stops once all its members are inside the band. The push from
    earlier samples uses running sums of their encodings,

    .. math::
        \sum_{y} \|e_i - e_y\|^2 = M \|e_i\|^2 - 2\, e_i^\top \textstyle\sum_y e_y
        + \sum_y \|e_y\|^2 ,

    which is exact for squared distances, so a step costs the same however many
    samples exist: time is linear in ``n_samples`` and memory holds only the
    samples themselves.

    Constraints are handled by an augmented Lagrangian (Powell-Hestenes-
    Rockafellar form for inequalities). With :math:`g \le 0` the scaled
    violation of either end of the band, multiplier :math:`\lambda \ge 0` and
    penalty :math:`\mu`, each sample minimises

    .. math::
        -w\, \text{spread}_i + \sum_g \frac{1}{2\mu}
        \left(\max(0, \lambda + \mu g)^2 - \lambda^2\right),

    and every ``multiplier_every`` steps
    :math:`\lambda \leftarrow \max(0, \lambda + \mu g)` and
    :math:`\mu \leftarrow \min(\rho \mu, \mu_{\max})`. Unlike a hinge penalty,
    the pull into the band grows as long as a sample stays outside, from
    either side, until it overcomes the spread term. Samples stuck at a local
    maximum below the band restart every ``restart_every`` steps from a
    feasible sample plus noise. Samples that are still outside after
    ``max_steps`` are returned flagged ``feasible=False``.

    Args:
        forward_func (Callable or torch.nn.Module): the model.
        layer (torch.nn.Module): the layer of the neuron, a submodule used by
            ``forward_func``.
        generator (torch.nn.Module, optional): :math:`G`, codes -> model
            inputs: the shipped :func:`~captum_inverseset.zoo.digits_generator`,
            a GAN or VAE decoder, or any parameterization of
            :mod:`captum_inverseset.param`. When None, samples are optimised in
            input space through a parameterization that keeps them valid (see
            :meth:`sample`). Default: None
        encoder (torch.nn.Module, optional): :math:`E`, model inputs ->
            ``(N, d)`` vectors the spread is measured in, e.g. the shipped
            :func:`~captum_inverseset.zoo.digits_encoder`. Default: None, a
            :class:`PooledEncoder` (images average-pooled to a 4 x 4 grid and
            flattened; other inputs flattened).
        latent_shape (sequence of int, optional): shape of one code of
            ``generator`` when it has no ``code_shape`` or ``latent_dim``
            attribute. Default: None
        device_ids (list of int, optional): as in Captum (unused; the model's
            own device is used). Default: None

    Examples::

        >>> from captum_inverseset.zoo import (digits_classifier,
        ...     digits_generator, digits_encoder)
        >>> model = digits_classifier()
        >>> sampler = NeuronInverseSet(model, model.fc1,
        ...     generator=digits_generator(), encoder=digits_encoder())
        >>> result = sampler.sample(35, activation_range=(10.0, 15.0),
        ...     n_samples=40, batch_size=8, seed=0)
        >>> # or near the top of the neuron's range:
        >>> top = sampler.sample(35, activation_range="top", n_samples=40)
        >>> result.inputs.shape, result.feasible.float().mean()
        >>> fig, ax = result.plot()
    """

    def __init__(
        self,
        forward_func: Callable,
        layer: nn.Module,
        generator: Optional[nn.Module] = None,
        encoder: Optional[nn.Module] = None,
        latent_shape: Optional[Sequence[int]] = None,
        device_ids: Union[None, List[int]] = None,
    ) -> None:
        if not callable(forward_func):
            raise ValueError("forward_func must be callable")
        check_module("layer", layer)
        if generator is not None and not callable(generator):
            raise ValueError("generator must be a callable nn.Module or None")
        if encoder is not None and not callable(encoder):
            raise ValueError("encoder must be a callable nn.Module or None")
        if latent_shape is not None:
            latent_shape = check_shape("latent_shape", latent_shape)
        NeuronAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.generator = generator
        self.encoder = encoder
        self.latent_shape = latent_shape
        self._parameterization = (
            None if generator is None else as_parameterization(generator, latent_shape)
        )

    # ------------------------------------------------------------------ API

    @renamed_kwargs(**_OLD_INPUT_FLAG)
    def sample(
        self,
        neuron_selector: NeuronSelector,
        activation_range: ActivationRange,
        n_samples: int = 100,
        batch_size: int = 10,
        input_shape: Optional[Sequence[int]] = None,
        seed: Optional[int] = 0,
        show_progress: bool = False,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        additional_constraints: Optional[Sequence[NeuronConstraint]] = None,
        input_range: Optional[Tuple[float, float]] = (0.0, 1.0),
        image_parameterization: str = "fft",
        transforms: Any = "auto",
        max_steps: int = DEFAULTS.max_steps,
        min_steps: int = DEFAULTS.min_steps,
        lr: float = DEFAULTS.lr,
        diversity_weight: float = DEFAULTS.diversity_weight,
        init_noise: float = DEFAULTS.init_noise,
        repel_from: str = DEFAULTS.repel_from,
        initial_penalty: float = DEFAULTS.initial_penalty,
        penalty_growth: float = DEFAULTS.penalty_growth,
        max_penalty: float = DEFAULTS.max_penalty,
        multiplier_every: int = DEFAULTS.multiplier_every,
        code_bound: Optional[float] = DEFAULTS.code_bound,
        restart_every: Optional[int] = DEFAULTS.restart_every,
        init_codes: Optional[Tensor] = None,
        constraint_method: str = DEFAULTS.constraint_method,
    ) -> InverseSetResult:
        r"""Draw ``n_samples`` samples of the neuron's inverse set.

        Args:
            neuron_selector (int, tuple, slice or Callable): the neuron in
                ``layer``'s output (or input), as for Captum's
                ``NeuronAttribution`` classes. An out-of-range index fails as
                it does in Captum.
            activation_range (tuple or str): ``(z1, z2)``, the band. Either end
                may be ``None`` or infinite (e.g. ``(5.0, None)``: at least 5).
                ``"top"`` or ``("top", fraction)``: the band found by
                :meth:`top_range` (default fraction 0.8) for the same
                generator or input shape.
            n_samples (int, optional): number of samples. Default: 100
            batch_size (int, optional): samples optimised together, ``K``.
                ``batch_size >= n_samples`` optimises all jointly.
                Default: 10
            input_shape (sequence of int, optional): shape of one input,
                required when there is no generator; checked against the
                generator's output otherwise. Default: None
            seed (int, optional): seed of every random draw (initial codes,
                noise, transforms). None draws a random seed. Default: 0
            show_progress (bool, optional): show a tqdm bar over batches.
                Default: False
            additional_forward_args (Any, optional): extra arguments of
                ``forward_func`` after the inputs (not batched).
                Default: None
            attribute_to_neuron_input (bool, optional): constrain the neuron in
                the layer's input instead of its output. Default: False
            additional_constraints (list of NeuronConstraint, optional): more
                bands, on other neurons of the same or other layers; the
                samples then cover the intersection of the inverse sets.
                Default: None
            input_range (tuple, optional): ``(low, high)`` of valid input
                values when there is no generator; None leaves inputs
                unbounded. Default: (0.0, 1.0)
            image_parameterization (str, optional): without a generator, how
                image shapes ``(C, H, W)`` are parameterized: ``"fft"``
                (Lucent's decorrelated Fourier parameterization), ``"pixel"``
                (a sigmoid per pixel, colour-decorrelated) or ``"box"`` (a
                scaled sigmoid per value). Other shapes always use ``"box"``.
                Default: "fft"
            transforms (str, Callable or None, optional): random transforms
                applied to the inputs before the model while optimising, for
                robustness. ``"auto"`` uses Lucent's standard transforms
                (scaled to the image size) for images of at least 32 pixels
                without a generator and nothing otherwise; None turns them
                off. Feasibility is always checked on the untransformed
                samples. Default: "auto"
            max_steps (int, optional): most optimisation steps per batch.
                Default: 300
            min_steps (int, optional): steps every batch takes before the
                stopping rule (stop once all members are in the band) may end
                it. Default: 1
            lr (float, optional): Adam's step size on the codes. Default: 0.1
            diversity_weight (float, optional): weight :math:`w` of the
                spread term (the spread is divided by the mean squared
                distance of the first random batch, or a tenth of its mean
                squared norm if larger, so 1 is a balanced start).
                Default: 1.0
            init_noise (float, optional): a later batch starts from the
                previous batch plus ``init_noise`` times a draw of random
                codes. Default: 0.25
            repel_from (str, optional): ``"all"`` earlier samples or only the
                ``"seeds"`` (the first batch, as in the paper). Default: "all"
            initial_penalty (float, optional): :math:`\mu` at the start of each
                batch. Default: 10.0
            penalty_growth (float, optional): :math:`\rho`. Default: 2.0
            max_penalty (float, optional): :math:`\mu_{\max}`. Default: 1e5
            multiplier_every (int, optional): steps between multiplier
                updates. Default: 5
            code_bound (float, str or None, optional): after each step,
                project every code onto the ball of this Euclidean radius, so
                that the spread term cannot push a generator's latents far
                outside its prior. ``"auto"``: :math:`\sigma(\sqrt{d} + 3)`
                for a generator with a ``prior_std`` :math:`\sigma` and ``d``
                latent numbers (beyond nearly all of the prior's mass), no
                bound otherwise. Default: "auto"
            constraint_method (str, optional): how the bands are enforced, one
                of the registered solvers
                (:func:`~captum_inverseset._core.neuron.inverse_set.solvers.register_solver`).
                Default: "augmented_lagrangian"
            restart_every (int or None, optional): every this many steps,
                samples of the batch that have not yet been inside the band
                (stuck at a local optimum of the activation) restart from a
                feasible sample plus noise (from fresh random codes while no
                sample is feasible), with their multipliers reset. None
                disables restarts. Default: 50
            init_codes (Tensor, optional): ``(n_samples, *code_shape)``
                starting codes (generator latents, or codes of the input
                parameterization) instead of random ones. Default: None

        Returns:
            :class:`InverseSetResult`: samples, codes, activations,
            feasibility flags and encodings.
        """

        given = locals()
        options = SamplerOptions(**{k: given[k] for k in SamplerOptions.names()})
        n_samples = check_positive_int("n_samples", n_samples)
        batch_size = check_positive_int("batch_size", batch_size)
        show_progress = check_bool("show_progress", show_progress)
        check_bool("attribute_to_neuron_input", attribute_to_neuron_input)
        param, transform = build_parameterization(
            self.forward_func,
            self._parameterization,
            input_shape,
            input_range,
            image_parameterization,
            transforms,
        )
        if init_codes is not None:
            init_codes = check_init_codes(init_codes, param, n_samples)
        fraction = top_fraction(activation_range)
        if fraction is not None:
            activation_range = self._top_range(
                param,
                transform,
                neuron_selector,
                fraction,
                attribute_to_neuron_input,
                additional_forward_args,
                seed=seed,
                lr=lr,
                code_bound=code_bound,
                show_progress=show_progress,
            )
        constraints = self._constraints(
            neuron_selector,
            activation_range,
            attribute_to_neuron_input,
            additional_constraints,
            additional_forward_args,
        )
        return self._run(
            param,
            transform,
            constraints,
            n_samples,
            batch_size,
            input_shape,
            init_codes,
            seed,
            show_progress,
            options,
        )

    @renamed_kwargs(**_OLD_INPUT_FLAG)
    def top_range(
        self,
        neuron_selector: NeuronSelector,
        fraction: float = 0.8,
        input_shape: Optional[Sequence[int]] = None,
        seed: Optional[int] = 0,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        n_starts: int = TOP_RANGE_STARTS,
        n_steps: int = TOP_RANGE_STEPS,
        lr: float = DEFAULTS.lr,
        input_range: Optional[Tuple[float, float]] = (0.0, 1.0),
        image_parameterization: str = "fft",
        transforms: Any = "auto",
        code_bound: Any = DEFAULTS.code_bound,
        show_progress: bool = False,
    ) -> Tuple[float, None]:
        r"""An open band near the top of the neuron's range.

        Runs activation maximisation from ``n_starts`` random codes (through
        the generator, or the input parameterization) for ``n_steps`` Adam
        steps, takes the highest activation found, :math:`a_{\max}`, and the
        median activation :math:`a_0` at the random starting codes, and
        returns

        .. math::
            \left(a_0 + \text{fraction} \cdot (a_{\max} - a_0),\ \infty\right).

        Args:
            neuron_selector (int, tuple, slice or Callable): the neuron.
            fraction (float, optional): in (0, 1]. Default: 0.8
            input_shape (sequence of int, optional): as in :meth:`sample`.
                Default: None
            seed (int, optional): random seed. Default: 0
            additional_forward_args (Any, optional): extra arguments of
                ``forward_func``. Default: None
            attribute_to_neuron_input (bool, optional): use the layer's input.
                Default: False
            n_starts (int, optional): random starting codes. Default: 8
            n_steps (int, optional): Adam steps. Default: 100
            lr (float, optional): Adam's step size. Default: 0.1
            input_range, image_parameterization, transforms, code_bound:
                as in :meth:`sample`.
            show_progress (bool, optional): a tqdm bar over the steps.
                Default: False

        Returns:
            tuple: ``(z1, None)``, usable as ``activation_range``.
        """
        param, transform = build_parameterization(
            self.forward_func,
            self._parameterization,
            input_shape,
            input_range,
            image_parameterization,
            transforms,
        )
        return self._top_range(
            param,
            transform,
            neuron_selector,
            fraction,
            attribute_to_neuron_input,
            additional_forward_args,
            seed=seed,
            lr=lr,
            code_bound=code_bound,
            n_starts=n_starts,
            n_steps=n_steps,
            show_progress=show_progress,
        )

    @log_usage(part_of_slo=True)
    @renamed_kwargs(**_OLD_INPUT_FLAG)
    def attribute(
        self,
        inputs: Union[Tensor, Tuple[Tensor]],
        neuron_selector: NeuronSelector,
        activation_range: ActivationRange = (None, None),
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        batch_size: Optional[int] = None,
        input_range: Optional[Tuple[float, float]] = (0.0, 1.0),
        seed: Optional[int] = 0,
        return_result: Optional[bool] = None,
        **kwargs: Any,
    ) -> Union[Tensor, Tuple[Tensor, ...]]:
        r"""Move ``inputs`` into the neuron's inverse set, spread apart.

        The Captum-style entry point: each input is the starting point of one
        sample, and the samples are returned shaped like ``inputs``. The
        optimisation runs in input space through a box parameterization
        (``input_range``); the generator, if any, is not used here.

        Args:
            inputs (Tensor or tuple of one Tensor): ``(N, ...)`` starting
                points.
            neuron_selector (int, tuple, slice or Callable): the neuron, as in
                :meth:`sample`.
            activation_range (tuple, optional): ``(z1, z2)``.
                Default: (None, None), every input is feasible.
            additional_forward_args (Any, optional): extra arguments of
                ``forward_func`` (not batched). Default: None
            attribute_to_neuron_input (bool, optional): constrain the layer's
                input. Default: False
            batch_size (int, optional): samples optimised together.
                Default: None (all ``N`` jointly)
            input_range (tuple, optional): ``(low, high)`` valid input values;
                inputs outside are clamped. None: unbounded. Default: (0.0, 1.0)
            seed (int, optional): random seed. Default: 0
            return_result (bool, optional): deprecated (a ``FutureWarning``):
                ``True`` returns the whole :class:`InverseSetResult`; use
                :meth:`sample` with ``init_codes`` or read the samples from
                this method. Default: None
            **kwargs: any other option of :meth:`sample` (``max_steps``,
                ``lr``, ``additional_constraints``, ...).

        Returns:
            Tensor or tuple of Tensor: samples shaped like ``inputs`` (a tuple
            for tuple inputs), as Captum's attribution methods return.

        Examples::

            >>> sampler = NeuronInverseSet(model, model.conv2)
            >>> x = torch.rand(4, 1, 8, 8)
            >>> samples = sampler.attribute(x, (5, 3, 3), activation_range=(1, 2))
        """
        tuple_inputs = is_tuple(inputs)
        formatted = format_inputs(inputs)
        if len(formatted) != 1:
            raise ValueError(
                f"inputs must be one tensor (or a tuple of one), got {len(formatted)}"
            )
        x0 = formatted[0]
        if not torch.is_tensor(x0):
            raise ValueError(f"inputs must be a tensor, got {type(x0).__name__}")
        check_finite_inputs("inputs", x0)
        if not x0.is_floating_point():
            raise ValueError(
                f"inputs must be a floating-point tensor (the samples are "
                f"optimised continuously), got {x0.dtype}"
            )
        x0 = x0.detach()
        if x0.dim() < 1 or x0.shape[0] == 0:
            raise ValueError("inputs must have a non-empty batch dimension")
        if return_result is not None:
            check_bool("return_result", return_result)
            warn_deprecated(
                "NeuronInverseSet.attribute(return_result=...) is deprecated: "
                "attribute() returns the samples (Captum's contract); use "
                "sample() for an InverseSetResult",
                stacklevel=5,  # the caller, past log_usage and renamed_kwargs
            )
        n = int(x0.shape[0])
        batch_size = (
            n if batch_size is None else check_positive_int("batch_size", batch_size)
        )
        check_bool("attribute_to_neuron_input", attribute_to_neuron_input)
        for bad in ("input_shape", "image_parameterization", "n_samples"):
            if bad in kwargs:
                raise ValueError(f"{bad} is not an argument of attribute")
        constraints = self._constraints(
            neuron_selector,
            activation_range,
            attribute_to_neuron_input,
            kwargs.pop("additional_constraints", None),
            additional_forward_args,
        )
        shape = tuple(x0.shape[1:])
        if input_range is None:
            param: nn.Module = IdentityParameterization(shape)
        else:
            low, high = parse_input_range(input_range)
            param = BoxParameterization(shape, low, high).to(x0.device)
        transform = make_transform(kwargs.pop("transforms", None), shape)
        show_progress = check_bool("show_progress", kwargs.pop("show_progress", False))
        result = self._run(
            param,
            transform,
            constraints,
            n,
            batch_size,
            shape,
            param.inverse(x0),
            seed,
            show_progress,
            SamplerOptions.from_kwargs("attribute", kwargs),
        )
        if return_result:
            return result
        return format_output(tuple_inputs, (result.inputs.to(x0.device),))

    # ------------------------------------------------------------ internals

    def _constraints(
        self,
        neuron_selector,
        activation_range,
        attribute_to_neuron_input,
        extra,
        additional_forward_args,
    ) -> ConstraintSet:
        if neuron_selector is None:
            raise ValueError("neuron_selector must be given")
        out = [
            NeuronConstraint(
                self.layer, neuron_selector, activation_range, attribute_to_neuron_input
            )
        ]
        for i, c in enumerate(extra or ()):
            if not isinstance(c, NeuronConstraint):
                raise ValueError(
                    f"additional_constraints[{i}] must be a NeuronConstraint, got "
                    f"{type(c).__name__}"
                )
            out.append(c)
        return ConstraintSet(
            out, self.forward_func, additional_forward_args, self.device_ids
        )

    def _modules(self) -> List[nn.Module]:
        return [
            m
            for m in (self.forward_func, self.generator, self.encoder)
            if isinstance(m, nn.Module)
        ]

    def _run(
        self,
        param: nn.Module,
        transform: Optional[Callable],
        constraints: ConstraintSet,
        n_samples: int,
        batch_size: int,
        input_shape: Optional[Sequence[int]],
        initial_codes: Optional[Tensor],
        seed: Optional[int],
        show_progress: bool,
        options: SamplerOptions,
    ) -> InverseSetResult:
        o = options.checked()
        code_bound = resolve_code_bound(param, o.code_bound)
        gen = make_generator(seed)
        device = model_device(self.forward_func, default=model_device(param))
        encoder = self.encoder if self.encoder is not None else PooledEncoder()
        with preserve_model_state(self._modules()):
            check_batch_memory(
                param,
                constraints,
                encoder,
                device,
                "batch_size",
                batch_size,
                min(batch_size, n_samples),
                n_samples,
                input_shape,
            )
            loop = InverseSetLoop(
                constraints,
                param,
                transform,
                encoder,
                o,
                code_bound,
                gen,
                device,
                show_progress,
            )
            return loop.run(n_samples, batch_size, initial_codes, input_shape)

    def _top_range(
        self,
        param,
        transform,
        neuron_selector,
        fraction,
        attribute_to_neuron_input,
        additional_forward_args,
        seed,
        lr,
        code_bound,
        n_starts: int = TOP_RANGE_STARTS,
        n_steps: int = TOP_RANGE_STEPS,
        show_progress: bool = False,
    ) -> Tuple[float, None]:
        fraction = check_number(
            "fraction", fraction, minimum=0, maximum=1, strict_minimum=True
        )
        n_starts = check_positive_int("n_starts", n_starts)
        n_steps = check_positive_int("n_steps", n_steps)
        lr = check_positive_float("lr", lr)
        show_progress = check_bool("show_progress", show_progress)
        constraints = self._constraints(
            neuron_selector,
            (None, None),
            attribute_to_neuron_input,
            None,
            additional_forward_args,
        )
        bound = resolve_code_bound(param, code_bound)
        gen = make_generator(seed)
        device = model_device(self.forward_func, default=model_device(param))
        modules = [m for m in self._modules() if m is not self.encoder]
        with preserve_model_state(modules):
            a0, best = maximise_activation(
                constraints,
                param,
                transform,
                n_starts,
                n_steps,
                lr,
                bound,
                gen,
                device,
                show_progress,
            )
        return (a0 + fraction * (best - a0), None)
