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

from captum.attr import GradientAttribution, NeuronAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ...._utils.captum_compat import (
    NeuronSelector,
    format_output,
)
from ...._utils.deprecation import renamed_kwargs, warn_deprecated
from ...._utils.validation import (
    check_module,
    check_positive_int,
)
from ....param import (
    as_parameterization,
)
from .constraints import ActivationRange, ConstraintSet, NeuronConstraint
from .inputs import (
    box_parameterization,
    build_parameterization,
    check_init_codes,
    make_transform,
    starting_points,
    top_fraction,
)
from .options import (
    DEFAULTS,
    TOP_RANGE_STARTS,
    TOP_RANGE_STEPS,
    SamplerOptions,
    check_bool,
    check_shape,
)
from .probe import top_range_band
from .result import InverseSetResult
from .run import run_sampler

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

    Samples are made ``K = batch_size`` at a time, each batch pushed away from
    its own members and from every earlier sample (through running sums of
    their encodings, exact for squared distances, so time is linear in
    ``n_samples``: :class:`~.spread.RunningSpread`). Batches start from
    in-band ``data`` examples, from prior draws screened for the band (with a
    generator), or from the previous batch's feasible samples plus noise. A
    constraint solver (``constraint_method``; the augmented Lagrangian of
    :class:`~.solvers.AugmentedLagrangian` by default) pulls each sample into
    the band from either side with a force that grows while it stays outside;
    once every sample of the batch is in, ``spread_steps`` more steps spend the
    effort on spread with the band kept. Samples stuck at a local maximum
    below the band restart every ``restart_every`` steps from a feasible sample
    plus noise. Samples still outside after ``max_steps`` are returned flagged
    ``feasible=False``, with an :class:`InfeasibleSamplesWarning`.

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
        device_ids (list of int, optional): as in Captum, passed on to the
            layer evaluation (DataParallel models). Default: None

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
        lr: Union[float, str] = DEFAULTS.lr,
        diversity_weight: Union[float, str] = DEFAULTS.diversity_weight,
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
        data: Any = None,
        spread_steps: Union[int, str] = DEFAULTS.spread_steps,
        reach_first: Union[bool, str] = DEFAULTS.reach_first,
        probe_steps: int = DEFAULTS.probe_steps,
        screen: Any = DEFAULTS.screen,
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
            lr (float or str, optional): Adam's step size on the codes.
                ``"auto"``: 0.1 through a generator (and in :meth:`attribute`),
                0.2 in input space. Default: "auto"
            diversity_weight (float or str, optional): weight :math:`w` of
                the spread term (the spread is divided by the mean squared
                distance of the first batch, or a tenth of its mean squared
                norm if larger). ``"auto"``: 2 through a generator (and in
                :meth:`attribute`), 10 in input space, where the starts are
                alike. Default: "auto"
            init_noise (float, optional): a later batch starts from the
                previous batch plus ``init_noise`` times a draw of random
                codes. Default: 0.25
            repel_from (str, optional): ``"all"`` earlier samples or only the
                ``"seeds"`` (the first batch, as in the paper). Default: "all"
            initial_penalty, penalty_growth, max_penalty, multiplier_every:
                the augmented Lagrangian's :math:`\mu` at the start of a batch,
                its growth :math:`\rho`, its cap :math:`\mu_{\max}` and the
                steps between multiplier updates
                (:class:`~.solvers.AugmentedLagrangian`). Defaults: 10.0, 2.0,
                1e5, 5
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
            data (Tensor, tuple or DataLoader, optional): examples of the
                model's inputs (a DataLoader of ``x`` or ``(x, label)``
                batches is streamed). Their in-band examples are the first
                starting points, in farthest-point order in the encodings
                (through the parameterization's ``inverse``, or a short
                inversion of the generator), and the result's
                ``data_baseline`` says what picking them would give (spreads
                of a random and of a farthest-point pick; a note when the
                data alone already covers the band). Default: None
            spread_steps (int or str, optional): once every sample of a
                batch is in the band, this many more steps maximise the spread
                with the constraint kept; each sample's last in-band iterate
                is returned. 0 stops at first feasibility (the paper's
                approximation). ``"auto"``: 20 through a generator (and in
                :meth:`attribute`), 100 in input space. Default: "auto"
            reach_first (bool or str, optional): for batches that start
                from farthest-point picks of ``data`` or of the screen (spread
                apart already), leave the spread term out until every sample is
                in the band, then spend ``spread_steps`` on it; other batches
                keep it on while reaching the band, as in the paper.
                ``"auto"``: True through a generator, False otherwise.
                Default: "auto"
            probe_steps (int, optional): the reachability check: when no
                sample of the first batch is in the band after this many steps
                and the progress over the last half of them, extrapolated
                linearly to ``max_steps``, would not bring one there (or has
                stalled below 1% of the distance left), a
                :class:`~captum_inverseset.BandUnreachableWarning` is issued at
                once (seconds into the run, not at its end); 0 turns it off.
                Default: 20
            screen (int or str, optional): with a generator, this many prior
                draws are evaluated in large no-grad batches before the
                optimisation, and the batches start from those inside the
                band (spread apart) and then from those nearest it; this is
                what makes rare bands cheap. ``"auto"``: ``8 * n_samples``
                clipped to [256, 4096] with a generator, 0 without (random
                input-space codes are all alike). Default: "auto"

        Returns:
            :class:`InverseSetResult`: samples, codes, activations,
            feasibility flags, encodings, where the batches started and the
            dataset baseline. When any sample is outside its band(s) an
            :class:`~captum_inverseset.InfeasibleSamplesWarning` is issued
            (the sample is kept, flagged ``feasible=False``).
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
            data=data,
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
        lr: Union[float, str] = DEFAULTS.lr,
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
            inputs (Tensor, tuple of Tensor or DataLoader): ``(N, ...)``
                starting points; a tuple for a model with several inputs
                (each optimised in its own box), or a DataLoader of ``x`` or
                ``(x, label)`` batches (joined; ``batch_size`` defaults to the
                loader's).
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
            for tuple inputs), as Captum's attribution methods return. A
            sample that never reached the band is returned at its closest
            iterate, and an :class:`~captum_inverseset.InfeasibleSamplesWarning`
            says how many there are: check with
            :class:`~captum_inverseset._core.neuron.inverse_set.ConstraintSet`
            or use :meth:`sample`, whose result flags each one.

        Examples::

            >>> sampler = NeuronInverseSet(model, model.conv2)
            >>> x = torch.rand(4, 1, 8, 8)
            >>> samples = sampler.attribute(x, (5, 3, 3), activation_range=(1, 2))
        """
        tuple_inputs, xs, loader_batch = starting_points(inputs)
        if return_result is not None:
            check_bool("return_result", return_result)
            warn_deprecated(
                "NeuronInverseSet.attribute(return_result=...) is deprecated: "
                "attribute() returns the samples (Captum's contract); use "
                "sample() for an InverseSetResult",
                stacklevel=5,  # the caller, past log_usage and renamed_kwargs
            )
        n = int(xs[0].shape[0])
        if batch_size is None:
            batch_size = loader_batch or n
        batch_size = check_positive_int("batch_size", batch_size)
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
        param, starts, shape = box_parameterization(xs, input_range)
        transform = make_transform(kwargs.pop("transforms", None), shape or ())
        show_progress = check_bool("show_progress", kwargs.pop("show_progress", False))
        result = self._run(
            param,
            transform,
            constraints,
            n,
            batch_size,
            shape,
            starts,
            seed,
            show_progress,
            SamplerOptions.from_kwargs("attribute", kwargs),
            stacklevel=6,  # past run_sampler, _run, renamed_kwargs and log_usage
        )
        if return_result:
            return result
        out = result.inputs if isinstance(result.inputs, tuple) else (result.inputs,)
        return format_output(
            tuple_inputs, tuple(o.to(x.device) for o, x in zip(out, xs))
        )

    # ------------------------------------------------------------ internals

    def _constraints(
        self, selector, activation_range, to_input, extra, additional_forward_args
    ) -> ConstraintSet:
        main = (self.layer, selector, activation_range, to_input)
        return ConstraintSet.of(
            main, extra, self.forward_func, additional_forward_args, self.device_ids
        )

    def _modules(self) -> List[nn.Module]:
        return [
            m
            for m in (self.forward_func, self.generator, self.encoder)
            if isinstance(m, nn.Module)
        ]

    def _run(self, *args: Any, **kwargs: Any) -> InverseSetResult:
        return run_sampler(
            self.forward_func,
            self._modules(),
            self.encoder,
            self._parameterization is not None,
            *args,
            **kwargs,
        )

    def _top_range(
        self,
        param,
        transform,
        neuron_selector,
        fraction,
        attribute_to_neuron_input,
        additional_forward_args,
        **kwargs,
    ) -> Tuple[float, None]:
        def make_constraints(selector):
            return self._constraints(
                selector,
                (None, None),
                attribute_to_neuron_input,
                None,
                additional_forward_args,
            )

        modules = [m for m in self._modules() if m is not self.encoder]
        return top_range_band(
            self.forward_func,
            modules,
            make_constraints,
            param,
            transform,
            neuron_selector,
            fraction,
            **kwargs,
        )
