r"""Sampling the inverse set of a neuron (Hada & Carreira-Perpinan).

The inverse set of a neuron with activation :math:`f` is the set of valid
inputs whose activation lies in a band,
:math:`\{x \text{ valid} : z_1 \le f(x) \le z_2\}`. :class:`NeuronInverseSet`
approximates it by a sample that covers it: samples are spread apart in a
low-dimensional encoding while an augmented Lagrangian pulls each one into the
band.
"""

import inspect
import math
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from captum.attr import GradientAttribution, NeuronAttribution
from captum.log import log_usage
from torch import Tensor, nn

from ..._utils.captum_compat import (
    NeuronSelector,
    format_inputs,
    format_output,
    is_tuple,
    run_forward,
    select_neuron,
)
from ..._utils.distance import mean_pairwise_distance
from ..._utils.graph_memory import graph_bytes_per_example, tensor_bytes
from ..._utils.hooks import preserve_model_state
from ..._utils.layer_eval import LayerNotCalledError, normalize_selector
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
from ...param import (
    BoxParameterization,
    FFTImageParameterization,
    PixelImageParameterization,
    as_parameterization,
    standard_transforms,
)

__all__ = [
    "InverseSetResult",
    "NeuronConstraint",
    "NeuronInverseSet",
    "PooledEncoder",
]

ActivationRange = Tuple[Optional[float], Optional[float]]

# Samples aim for a band shrunk by this fraction of its scale, so that a sample
# accepted by the stopping rule stays inside the exact band when recomputed in
# another batch (floating-point sums differ slightly between batch sizes).
_BAND_MARGIN = 1e-3


@dataclass(frozen=True)
class _SamplerOptions:
    """The optimiser settings of :meth:`NeuronInverseSet.sample`, in one place:
    ``sample``'s signature takes its defaults from here, and ``attribute``
    builds one from its keyword arguments."""

    max_steps: int = 300
    min_steps: int = 1
    lr: float = 0.1
    diversity_weight: float = 1.0
    init_noise: float = 0.25
    repel_from: str = "all"
    initial_penalty: float = 10.0
    penalty_growth: float = 2.0
    max_penalty: float = 1e5
    multiplier_every: int = 5
    code_bound: Any = "auto"
    restart_every: Optional[int] = 50

    @classmethod
    def from_kwargs(cls, method: str, kwargs: dict) -> "_SamplerOptions":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TypeError(
                f"{method}() got unexpected keyword argument(s) "
                + ", ".join(repr(k) for k in unknown)
            )
        return cls(**kwargs)

    def checked(self) -> "_SamplerOptions":
        """A copy with every setting validated and normalised, in the order
        the sampler has always checked them (``code_bound`` is resolved
        against the parameterization by the sampler)."""
        max_steps = check_positive_int("max_steps", self.max_steps)
        restart_every = self.restart_every
        if restart_every is not None:
            restart_every = check_positive_int("restart_every", restart_every)
        min_steps = self.min_steps
        if (
            isinstance(min_steps, bool)
            or not isinstance(min_steps, int)
            or min_steps < 0
        ):
            raise ValueError(
                f"min_steps must be a non-negative integer, got {min_steps!r}"
            )
        lr = check_positive_float("lr", self.lr)
        diversity_weight = check_number(
            "diversity_weight", self.diversity_weight, minimum=0
        )
        init_noise = check_number("init_noise", self.init_noise, minimum=0)
        if self.repel_from not in ("all", "seeds"):
            raise ValueError(
                f"repel_from must be 'all' or 'seeds', got {self.repel_from!r}"
            )
        initial_penalty = check_positive_float("initial_penalty", self.initial_penalty)
        penalty_growth = check_positive_float("penalty_growth", self.penalty_growth)
        if penalty_growth < 1:
            raise ValueError(
                f"penalty_growth must be >= 1, got {self.penalty_growth!r}"
            )
        return replace(
            self,
            max_steps=max_steps,
            restart_every=restart_every,
            lr=lr,
            diversity_weight=diversity_weight,
            init_noise=init_noise,
            initial_penalty=initial_penalty,
            penalty_growth=penalty_growth,
            max_penalty=check_positive_float("max_penalty", self.max_penalty),
            multiplier_every=check_positive_int(
                "multiplier_every", self.multiplier_every
            ),
        )


_DEFAULTS = _SamplerOptions()


def _check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool: ``"False"`` must not silently mean True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, str, bytes)):
        return False
    if isinstance(value, (int, float)):
        return True
    return getattr(value, "ndim", None) == 0 and hasattr(value, "item")


def _check_shape(name: str, shape: Any) -> Tuple[int, ...]:
    """A non-empty sequence of positive ints (no strings, bools or 8.5)."""
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise ValueError(f"{name} must be a sequence of ints, got {shape!r}")
    out = []
    for s in shape:
        if isinstance(s, bool) or not isinstance(s, int) or s < 1:
            raise ValueError(f"{name} must hold positive ints, got {tuple(shape)!r}")
        out.append(int(s))
    if not out:
        raise ValueError(f"{name} must not be empty")
    return tuple(out)


# Activation maximisation of top_range: random starts and Adam steps.
_TOP_RANGE_STARTS = 8
_TOP_RANGE_STEPS = 100


def _parse_range(activation_range: Any, name: str) -> Tuple[float, float]:
    """``(z1, z2)`` with ``None``/``inf`` ends -> two floats (``-inf``/``inf``)."""
    if (
        isinstance(activation_range, (str, bytes))
        or not isinstance(activation_range, Sequence)
        or len(activation_range) != 2
    ):
        raise ValueError(
            f"{name} must be a pair (z1, z2) (either end may be None), got "
            f"{activation_range!r}"
        )
    lo, hi = activation_range
    if not all(v is None or _is_number(v) for v in (lo, hi)):
        raise ValueError(f"{name} must hold numbers or None, got {activation_range!r}")
    lo = -math.inf if lo is None else float(lo)
    hi = math.inf if hi is None else float(hi)
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError(f"{name} must not contain NaN, got {activation_range!r}")
    if lo > hi:
        raise ValueError(f"{name}: z1 must be <= z2, got z1={lo} > z2={hi}")
    if lo == math.inf or hi == -math.inf:
        raise ValueError(f"{name} is empty, got {activation_range!r}")
    return lo, hi


def _band_scale(lo: float, hi: float) -> float:
    """The unit in which a constraint violation is measured."""
    if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
        return hi - lo
    # Open (or zero-width) band: the magnitude of its finite end, so that a
    # neuron on a small scale still feels a proportionate pull.
    finite = [abs(v) for v in (lo, hi) if math.isfinite(v) and v != 0]
    return max(finite) if finite else 1.0


class NeuronConstraint:
    r"""One band :math:`z_1 \le f(x) \le z_2` on one neuron of one layer.

    Several constraints passed together to :meth:`NeuronInverseSet.sample`
    (``additional_constraints``) describe the *intersection* of inverse sets:
    a sample is feasible only when every neuron is inside its own band. The
    neurons may live in different layers.

    Args:
        layer (torch.nn.Module): a layer of the model's forward function.
        neuron_selector (int, tuple, slice or Callable): the neuron, as for
            Captum's ``NeuronAttribution`` classes. An int or a tuple of
            ints indexes the layer output without the batch dimension; slices
            in a tuple sum the selected units; a callable receives the layer
            output and returns one value per example.
        activation_range (tuple): ``(z1, z2)``; either end may be ``None`` or
            infinite for an open band.
        attribute_to_neuron_input (bool, optional): constrain the layer's input
            instead of its output. Default: False

    Examples::

        >>> both = [NeuronConstraint(model.fc1, 3, (2.0, 3.0))]
        >>> sampler = NeuronInverseSet(model, model.fc2)
        >>> res = sampler.sample(5, (2.0, 3.0), n_samples=20,
        ...                      input_shape=(1, 8, 8),
        ...                      additional_constraints=both)
    """

    def __init__(
        self,
        layer: nn.Module,
        neuron_selector: NeuronSelector,
        activation_range: ActivationRange,
        attribute_to_neuron_input: bool = False,
    ) -> None:
        check_module("layer", layer)
        self.layer = layer
        self.neuron_selector = normalize_selector(neuron_selector)
        self.low, self.high = _parse_range(activation_range, "activation_range")
        self.attribute_to_neuron_input = _check_bool(
            "attribute_to_neuron_input", attribute_to_neuron_input
        )

    @property
    def activation_range(self) -> Tuple[float, float]:
        return (self.low, self.high)

    def __repr__(self) -> str:
        return (
            f"NeuronConstraint({type(self.layer).__name__}, "
            f"{self.neuron_selector!r}, ({self.low}, {self.high}))"
        )


class PooledEncoder(nn.Module):
    r"""The default encoder :math:`E`: a fixed, parameter-free downsampling.

    Images ``(N, C, H, W)`` are average-pooled to a ``grid x grid`` map and
    flattened (``C * grid**2`` numbers), which ignores pixel noise and keeps
    the layout of the image; inputs of any other shape are flattened as they
    are, so for vectors the spread is measured in input space, as in the
    first formulation of the method.

    Args:
        grid (int, optional): side of the pooled map. Default: 4
    """

    def __init__(self, grid: int = 4) -> None:
        super().__init__()
        self.grid = check_positive_int("grid", grid)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() == 4:
            size = (min(self.grid, x.shape[2]), min(self.grid, x.shape[3]))
            x = F.adaptive_avg_pool2d(x, size)
        return x.reshape(x.shape[0], -1)


class _AffineRange(nn.Module):
    """Map a parameterization's [0, 1] outputs onto ``[low, high]``."""

    def __init__(self, param: nn.Module, low: float, high: float) -> None:
        super().__init__()
        self.param, self.low, self.high = param, float(low), float(high)
        self.code_shape = param.code_shape

    def forward(self, codes: Tensor) -> Tensor:
        return self.low + (self.high - self.low) * self.param(codes)

    def random_codes(self, n, generator=None, device=None):
        return self.param.random_codes(n, generator=generator, device=device)


class _Identity(nn.Module):
    """Unbounded inputs: the codes are the inputs."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.code_shape = tuple(shape)

    def forward(self, codes: Tensor) -> Tensor:
        return codes

    def random_codes(self, n, generator=None, device=None):
        c = torch.randn((n, *self.code_shape), generator=generator)
        return c.to(device) if device is not None else c


def _top_fraction(activation_range: Any) -> Optional[float]:
    """The fraction of ``"top"`` / ``("top", fraction)``, else None."""
    if isinstance(activation_range, str):
        if activation_range != "top":
            raise ValueError(
                f"activation_range must be (z1, z2), 'top' or ('top', fraction), "
                f"got {activation_range!r}"
            )
        return 0.8
    if (
        isinstance(activation_range, (tuple, list))
        and len(activation_range) == 2
        and activation_range[0] == "top"
    ):
        return activation_range[1]
    return None


class _StopForward(Exception):
    """Raised by our hooks once every constrained layer has been seen."""


@result_dataclass
class InverseSetResult(InterpretationResult):
    r"""A sample of a neuron's inverse set.

    Attributes:
        inputs (Tensor): ``(n_samples, *input_shape)`` samples in the model's
            input space.
        codes (Tensor): ``(n_samples, *code_shape)`` the codes the samples
            were generated from (generator latents, or the parameters of the
            input parameterization).
        activations (Tensor): ``(n_samples,)`` the neuron's value at each
            sample (the first constraint).
        constraint_activations (Tensor): ``(n_samples, n_constraints)`` the
            value of every constrained neuron (column 0 is ``activations``).
        feasible (Tensor): ``(n_samples,)`` bool, True where every constrained
            neuron is inside its band. Samples that never became feasible
            within ``max_steps`` are kept and flagged False.
        encodings (Tensor): ``(n_samples, d)`` the encodings :math:`E(x)` the
            spread was measured in.
        steps (Tensor): ``(n_samples,)`` optimisation steps taken by each
            sample's batch.
        activation_ranges (list): ``[z1, z2]`` of every constraint.
        constraint_method (str): ``"augmented_lagrangian"``.
        batch_size (int): samples optimised together (``K``).
        elapsed_s (float): wall-clock seconds of the sampling.
    """

    inputs: Optional[Tensor] = None
    codes: Optional[Tensor] = None
    activations: Optional[Tensor] = None
    constraint_activations: Optional[Tensor] = None
    feasible: Optional[Tensor] = None
    encodings: Optional[Tensor] = None
    steps: Optional[Tensor] = None
    activation_ranges: Any = None
    constraint_method: Any = None
    batch_size: Any = None
    elapsed_s: Any = None

    @property
    def activation_range(self) -> Tuple[float, float]:
        """``(z1, z2)`` of the sampled neuron."""
        lo, hi = self.activation_ranges[0]
        return float(lo), float(hi)

    @property
    def n_samples(self) -> int:
        return int(self.inputs.shape[0])

    @property
    def feasible_fraction(self) -> float:
        """Fraction of samples inside every band."""
        return float(self.feasible.float().mean())

    def mean_pairwise_distance(
        self, space: str = "encodings", feasible_only: bool = False
    ) -> float:
        r"""Mean Euclidean distance over all pairs of samples.

        Computed in row chunks, so memory stays linear in the number of samples.

        Args:
            space (str, optional): ``"encodings"`` (the space the spread was
                maximised in), ``"inputs"`` or ``"codes"``.
                Default: "encodings"
            feasible_only (bool, optional): use only feasible samples.
                Default: False
        """
        if space not in ("encodings", "inputs", "codes"):
            raise ValueError(
                f"space must be 'encodings', 'inputs' or 'codes', got {space!r}"
            )
        x = getattr(self, space)
        if feasible_only:
            x = x[self.feasible]
        return mean_pairwise_distance(x)

    def plot(
        self,
        n: Optional[int] = None,
        ncols: Optional[int] = None,
        show_activations: bool = True,
        title: Optional[str] = None,
        plt_fig_axis: Optional[Tuple] = None,
        fig_size: Tuple[float, float] = (6, 6),
    ):
        r"""Show the samples.

        Images (``(N, C, H, W)`` with 1 or 3 channels) are tiled in a grid with
        each sample's activation under it (infeasible ones marked ``x``);
        other inputs are drawn as a scatter of their first two encoding
        dimensions, coloured by feasibility.

        Args:
            n (int, optional): show only the first ``n`` samples.
                Default: None (all)
            ncols (int, optional): tiles per row. Default: None
            show_activations (bool, optional): caption tiles with activations.
                Default: True
            title (str, optional): axis title. Default: the band and the
                fraction of feasible samples.
            plt_fig_axis (tuple, optional): ``(fig, ax)`` to draw into.
                Default: None
            fig_size (tuple, optional): size of a new figure. Default: (6, 6)

        Returns:
            ``(fig, ax)``
        """
        from ...visualization import figure_axis, visualize_image_grid

        n = (
            self.n_samples
            if n is None
            else min(check_positive_int("n", n), self.n_samples)
        )
        if title is None:
            lo, hi = self.activation_range
            title = (
                f"inverse set [{lo:.3g}, {hi:.3g}]: "
                f"{int(self.feasible.sum())}/{self.n_samples} feasible"
            )
        x = self.inputs[:n]
        if x.dim() == 4 and x.shape[1] in (1, 3):
            titles = None
            if show_activations:
                titles = [
                    f"{float(a):.2f}" + ("" if bool(ok) else " x")
                    for a, ok in zip(self.activations[:n], self.feasible[:n])
                ]
            lo_v, hi_v = float(x.min()), float(x.max())
            return visualize_image_grid(
                x,
                titles=titles,
                ncols=ncols,
                vmin=min(0.0, lo_v),
                vmax=max(1.0, hi_v),
                title=title,
                plt_fig_axis=plt_fig_axis,
                fig_size=fig_size,
            )
        fig, ax = figure_axis(plt_fig_axis, fig_size)
        e = self.encodings[:n].detach().cpu().float()
        ys = e[:, 1] if e.shape[1] > 1 else self.activations[:n].cpu()
        ok = self.feasible[:n].cpu()
        ax.scatter(e[ok, 0], ys[ok], s=12, c="tab:blue", label="feasible")
        if (~ok).any():
            ax.scatter(
                e[~ok, 0], ys[~ok], s=12, c="tab:red", marker="x", label="infeasible"
            )
        ax.set_xlabel("encoding 0")
        ax.set_ylabel("encoding 1" if e.shape[1] > 1 else "activation")
        ax.legend(loc="best", fontsize=7)
        ax.set_title(title)
        return fig, ax


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
        NeuronAttribution.__init__(self, forward_func, layer, device_ids)
        GradientAttribution.__init__(self, forward_func)
        self.generator = generator
        self.encoder = encoder
        self.latent_shape = latent_shape
        self._parameterization = (
            None if generator is None else as_parameterization(generator, latent_shape)
        )

    # ------------------------------------------------------------------ API

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
        max_steps: int = _DEFAULTS.max_steps,
        min_steps: int = _DEFAULTS.min_steps,
        lr: float = _DEFAULTS.lr,
        diversity_weight: float = _DEFAULTS.diversity_weight,
        init_noise: float = _DEFAULTS.init_noise,
        repel_from: str = _DEFAULTS.repel_from,
        initial_penalty: float = _DEFAULTS.initial_penalty,
        penalty_growth: float = _DEFAULTS.penalty_growth,
        max_penalty: float = _DEFAULTS.max_penalty,
        multiplier_every: int = _DEFAULTS.multiplier_every,
        code_bound: Optional[float] = _DEFAULTS.code_bound,
        restart_every: Optional[int] = _DEFAULTS.restart_every,
        init_codes: Optional[Tensor] = None,
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
        n_samples = check_positive_int("n_samples", n_samples)
        batch_size = check_positive_int("batch_size", batch_size)
        show_progress = _check_bool("show_progress", show_progress)
        _check_bool("attribute_to_neuron_input", attribute_to_neuron_input)
        param, transform = self._build_parameterization(
            input_shape, input_range, image_parameterization, transforms
        )
        if init_codes is not None:
            init_codes = self._check_init_codes(init_codes, param, n_samples)
        fraction = _top_fraction(activation_range)
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
            )
        constraints = self._constraints(
            neuron_selector,
            activation_range,
            attribute_to_neuron_input,
            additional_constraints,
        )
        return self._run(
            param,
            transform,
            constraints,
            n_samples=n_samples,
            batch_size=batch_size,
            input_shape=input_shape,
            initial_codes=init_codes,
            seed=seed,
            show_progress=show_progress,
            additional_forward_args=additional_forward_args,
            options=_SamplerOptions(
                max_steps=max_steps,
                min_steps=min_steps,
                lr=lr,
                diversity_weight=diversity_weight,
                init_noise=init_noise,
                repel_from=repel_from,
                initial_penalty=initial_penalty,
                penalty_growth=penalty_growth,
                max_penalty=max_penalty,
                multiplier_every=multiplier_every,
                code_bound=code_bound,
                restart_every=restart_every,
            ),
        )

    def top_range(
        self,
        neuron_selector: NeuronSelector,
        fraction: float = 0.8,
        input_shape: Optional[Sequence[int]] = None,
        seed: Optional[int] = 0,
        additional_forward_args: Any = None,
        attribute_to_neuron_input: bool = False,
        n_starts: int = _TOP_RANGE_STARTS,
        n_steps: int = _TOP_RANGE_STEPS,
        lr: float = 0.1,
        input_range: Optional[Tuple[float, float]] = (0.0, 1.0),
        image_parameterization: str = "fft",
        transforms: Any = "auto",
        code_bound: Any = "auto",
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

        Returns:
            tuple: ``(z1, None)``, usable as ``activation_range``.
        """
        param, transform = self._build_parameterization(
            input_shape, input_range, image_parameterization, transforms
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
        )

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
        n_starts: int = _TOP_RANGE_STARTS,
        n_steps: int = _TOP_RANGE_STEPS,
    ) -> Tuple[float, None]:
        fraction = check_number(
            "fraction", fraction, minimum=0, maximum=1, strict_minimum=True
        )
        n_starts = check_positive_int("n_starts", n_starts)
        n_steps = check_positive_int("n_steps", n_steps)
        lr = check_positive_float("lr", lr)
        constraint = [
            NeuronConstraint(
                self.layer, neuron_selector, (None, None), attribute_to_neuron_input
            )
        ]
        bound = self._code_bound(param, code_bound)
        gen = make_generator(seed)
        device = model_device(self.forward_func, default=model_device(param))
        modules = [
            mod
            for mod in (self.forward_func, self.generator)
            if isinstance(mod, nn.Module)
        ]
        with preserve_model_state(modules):
            self._check_batch_memory(
                param,
                constraint,
                PooledEncoder(),
                additional_forward_args,
                device,
                "n_starts",
                n_starts,
                n_starts,
            )
            codes = param.random_codes(n_starts, generator=gen, device=device)
            transform_gen = torch.Generator().manual_seed(
                int(torch.randint(2**62, (1,), generator=gen))
            )
            codes = codes.detach().clone().requires_grad_(True)
            with torch.no_grad():
                start = self._activations(
                    param(codes), constraint, additional_forward_args
                )[:, 0]
            best = float(start.max())
            opt = torch.optim.Adam([codes], lr=lr)
            for _ in range(n_steps):
                x = param(codes)
                x_in = (
                    self._apply_transform(transform, x, transform_gen)
                    if transform is not None
                    else x
                )
                acts = self._activations(x_in, constraint, additional_forward_args)
                opt.zero_grad()
                (-acts.sum()).backward()
                opt.step()
                self._project(codes, bound)
                with torch.no_grad():
                    clean = self._activations(
                        param(codes), constraint, additional_forward_args
                    )
                best = max(best, float(clean.max()))
        a0 = float(start.median())
        return (a0 + fraction * (best - a0), None)

    @log_usage(part_of_slo=True)
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
        return_result: bool = False,
        **kwargs: Any,
    ) -> Union[Tensor, Tuple[Tensor], InverseSetResult]:
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
            return_result (bool, optional): return the whole
                :class:`InverseSetResult` instead of the samples.
                Default: False
            **kwargs: any other option of :meth:`sample` (``max_steps``,
                ``lr``, ``additional_constraints``, ...).

        Returns:
            Tensor or tuple of Tensor: samples shaped like ``inputs`` (a tuple
            for tuple inputs), or the :class:`InverseSetResult`.

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
        _check_bool("return_result", return_result)
        n = int(x0.shape[0])
        batch_size = (
            n if batch_size is None else check_positive_int("batch_size", batch_size)
        )
        constraints = self._constraints(
            neuron_selector,
            activation_range,
            attribute_to_neuron_input,
            kwargs.pop("additional_constraints", None),
        )
        shape = tuple(x0.shape[1:])
        if input_range is None:
            param: nn.Module = _Identity(shape)
            codes = x0.clone()
        else:
            low, high = self._parse_input_range(input_range)
            param = BoxParameterization(shape, low, high).to(x0.device)
            codes = param.inverse(x0)
        for bad in ("input_shape", "image_parameterization", "n_samples"):
            if bad in kwargs:
                raise ValueError(f"{bad} is not an argument of attribute")
        transforms = kwargs.pop("transforms", None)
        show_progress = _check_bool("show_progress", kwargs.pop("show_progress", False))
        result = self._run(
            param,
            self._make_transform(transforms, shape),
            constraints,
            n_samples=n,
            batch_size=batch_size,
            input_shape=shape,
            initial_codes=codes,
            seed=seed,
            show_progress=show_progress,
            additional_forward_args=additional_forward_args,
            options=_SamplerOptions.from_kwargs("attribute", kwargs),
        )
        if return_result:
            return result
        return format_output(tuple_inputs, (result.inputs.to(x0.device),))

    # ------------------------------------------------------------ internals

    def _constraints(
        self, neuron_selector, activation_range, attribute_to_neuron_input, extra
    ) -> List[NeuronConstraint]:
        if neuron_selector is None:
            raise ValueError("neuron_selector must be given")
        main = NeuronConstraint(
            self.layer, neuron_selector, activation_range, attribute_to_neuron_input
        )
        out = [main]
        for i, c in enumerate(extra or ()):
            if not isinstance(c, NeuronConstraint):
                raise ValueError(
                    f"additional_constraints[{i}] must be a NeuronConstraint, got "
                    f"{type(c).__name__}"
                )
            out.append(c)
        return out

    @staticmethod
    def _parse_input_range(input_range) -> Tuple[float, float]:
        if (
            isinstance(input_range, (str, bytes))
            or not isinstance(input_range, Sequence)
            or len(input_range) != 2
            or not all(_is_number(v) for v in input_range)
        ):
            raise ValueError(
                f"input_range must be (low, high) or None, got {input_range!r}"
            )
        low, high = (float(v) for v in input_range)
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(
                f"input_range must be finite with low < high, got {input_range!r}"
            )
        return low, high

    def _make_transform(self, transforms, shape) -> Optional[Callable]:
        if transforms is None or transforms is False:
            return None
        if isinstance(transforms, str):
            if transforms != "auto":
                raise ValueError(
                    f"transforms must be 'auto', None or a callable, got {transforms!r}"
                )
            if len(shape) == 3 and min(shape[1:]) >= 32:
                return standard_transforms(min(shape[1:]))
            return None
        if not callable(transforms):
            raise ValueError("transforms must be 'auto', None or a callable")
        return transforms

    def _build_parameterization(
        self, input_shape, input_range, image_parameterization, transforms
    ) -> Tuple[nn.Module, Optional[Callable]]:
        if input_shape is not None:
            input_shape = _check_shape("input_shape", input_shape)
        if self._parameterization is not None:
            if transforms == "auto":
                transforms = None
            return self._parameterization, self._make_transform(
                transforms, input_shape or ()
            )
        if input_shape is None:
            raise ValueError("input_shape is required when there is no generator")
        if image_parameterization not in ("fft", "pixel", "box"):
            raise ValueError(
                "image_parameterization must be 'fft', 'pixel' or 'box', got "
                f"{image_parameterization!r}"
            )
        device = model_device(self.forward_func)
        if input_range is None:
            return _Identity(input_shape), self._make_transform(transforms, input_shape)
        low, high = self._parse_input_range(input_range)
        if len(input_shape) == 3 and image_parameterization != "box":
            cls = (
                FFTImageParameterization
                if image_parameterization == "fft"
                else PixelImageParameterization
            )
            param: nn.Module = cls(input_shape)
            if (low, high) != (0.0, 1.0):
                param = _AffineRange(param, low, high)
        else:
            param = BoxParameterization(input_shape, low, high)
        return param.to(device), self._make_transform(transforms, input_shape)

    @contextmanager
    def _neuron_hooks(
        self, constraints: List[NeuronConstraint]
    ) -> Iterator[Tuple[List[Optional[Any]], List[int]]]:
        """Record each constrained layer's first output (or input) per forward.

        Once every constrained layer has been recorded, the forward pass is
        cut short: later layers cannot change the activations.
        """
        layers: List[nn.Module] = []
        for c in constraints:
            if not any(c.layer is m for m in layers):
                layers.append(c.layer)
        seen: List[Optional[Any]] = [None] * len(layers)
        layer_index = [
            next(i for i, m in enumerate(layers) if m is c.layer) for c in constraints
        ]
        wants_input = [
            any(c.attribute_to_neuron_input for c in constraints if c.layer is m)
            for m in layers
        ]
        wants_output = [
            any(not c.attribute_to_neuron_input for c in constraints if c.layer is m)
            for m in layers
        ]

        def make_hook(i: int):
            def hook(module, args, output):
                if seen[i] is not None:
                    return None
                seen[i] = (
                    args if wants_input[i] else None,
                    output if wants_output[i] else None,
                )
                if all(s is not None for s in seen):
                    raise _StopForward()
                return None

            return hook

        handles = []
        try:
            for i, m in enumerate(layers):
                handles.append(m.register_forward_hook(make_hook(i)))
            yield seen, layer_index
        finally:
            for h in handles:
                h.remove()

    def _activations(
        self,
        x: Tensor,
        constraints: List[NeuronConstraint],
        additional_forward_args: Any,
    ) -> Tensor:
        """``(N, n_constraints)`` activations of the constrained neurons."""
        with self._neuron_hooks(constraints) as (seen, layer_index):
            try:
                run_forward(self.forward_func, x, None, additional_forward_args)
            except _StopForward:
                pass
            if any(s is None for s in seen):
                raise LayerNotCalledError(
                    "a constrained layer was not called during the forward pass: "
                    "is it a submodule used by forward_func?"
                )
            cols = []
            for c, li in zip(constraints, layer_index):
                args, out = seen[li]
                value = args if c.attribute_to_neuron_input else out
                if c.attribute_to_neuron_input and len(value) == 1:
                    value = value[0]
                a = select_neuron(value, c.neuron_selector)
                if a.dim() == 0 or a.shape[0] != x.shape[0] or a[0].numel() != 1:
                    raise ValueError(
                        "neuron_selector must select one value per example, got "
                        f"shape {tuple(a.shape)} for a batch of {x.shape[0]}"
                    )
                cols.append(a.reshape(x.shape[0]))
        acts = torch.stack(cols, dim=1)
        if not torch.isfinite(acts).all():
            raise ValueError(
                "the neuron's activations contain NaN or infinite values; check "
                "the model, the generator and the inputs"
            )
        return acts

    def _encode(self, x: Tensor, encoder: Callable) -> Tensor:
        try:
            e = encoder(x)
        except Exception as err:
            # The user's encoder failed: its own error goes up unchanged, with
            # a note saying where it was called.
            if hasattr(err, "add_note"):  # Python >= 3.11
                err.add_note(
                    f"(raised by the encoder on inputs of shape {tuple(x.shape)})"
                )
            raise
        if not torch.is_tensor(e) or e.dim() < 1 or e.shape[0] != x.shape[0]:
            raise ValueError(
                "encoder must return one vector per input, got "
                f"{getattr(e, 'shape', type(e))} for {x.shape[0]} inputs"
            )
        if not bool(torch.isfinite(e).all()):
            raise ValueError(
                "encoder returned NaN or infinite encodings: the spread cannot "
                "be measured in them"
            )
        return e.reshape(e.shape[0], -1)

    @staticmethod
    def _check_init_codes(init_codes: Any, param: nn.Module, n: int) -> Tensor:
        if not torch.is_tensor(init_codes):
            raise ValueError(
                f"init_codes must be a tensor, got {type(init_codes).__name__}"
            )
        check_finite_inputs("init_codes", init_codes)
        want = (n, *tuple(param.code_shape))
        if tuple(init_codes.shape) != want:
            raise ValueError(
                f"init_codes must have shape {want} (n_samples, *code_shape), got "
                f"{tuple(init_codes.shape)}"
            )
        return init_codes.detach().float()

    def _check_batch_memory(
        self,
        param: nn.Module,
        constraints: List["NeuronConstraint"],
        encoder: Callable,
        additional_forward_args: Any,
        device: torch.device,
        batch_name: str,
        batch_value: Any,
        batch: int,
        n_samples: int = 0,
        input_shape: Optional[Sequence[int]] = None,
    ) -> None:
        """Refuse a batch (or a result) that would not fit, before allocating it.

        The graph of one example is measured on a probe of two codes drawn
        from a generator of their own (the seeded draws are untouched).
        """
        probe = param.random_codes(
            2, generator=torch.Generator().manual_seed(0), device=device
        )
        with torch.no_grad():
            self._check_generated(param(probe), input_shape)

        def graph(codes: Tensor):
            x = param(codes)
            acts = self._activations(x, constraints, additional_forward_args)
            return acts, self._encode(x, encoder)

        per_example = graph_bytes_per_example(graph, probe)
        code_bytes = tensor_bytes(probe[:1])
        # Forward graph, its gradients in the backward pass, Adam's two
        # moments and the gradient of the codes.
        check_memory(
            batch_name, batch_value, batch * (2 * per_example + 4 * code_bytes), device
        )
        if n_samples:
            with torch.no_grad():
                x = param(probe[:1])
                e = self._encode(x, encoder)
            row = tensor_bytes(x) + code_bytes + tensor_bytes(e) + 8 * len(constraints)
            # Kept per batch on the CPU, then concatenated once (two copies).
            check_memory("n_samples", n_samples, 2 * n_samples * row)

    @staticmethod
    def _apply_transform(transform, x: Tensor, gen: torch.Generator) -> Tensor:
        forward = getattr(transform, "forward", transform)
        try:
            takes_gen = "generator" in inspect.signature(forward).parameters
        except (TypeError, ValueError):
            takes_gen = False
        return transform(x, generator=gen) if takes_gen else transform(x)

    def _run(
        self,
        param: nn.Module,
        transform: Optional[Callable],
        constraints: List[NeuronConstraint],
        n_samples: int,
        batch_size: int,
        input_shape: Optional[Sequence[int]],
        initial_codes: Optional[Tensor],
        seed: Optional[int],
        show_progress: bool = False,
        additional_forward_args: Any = None,
        options: _SamplerOptions = _DEFAULTS,
    ) -> InverseSetResult:
        o = options.checked()
        code_bound = self._code_bound(param, o.code_bound)
        batch_size = min(batch_size, n_samples)

        gen = make_generator(seed)
        transform_gen = torch.Generator().manual_seed(
            int(torch.randint(2**62, (1,), generator=gen))
        )
        device = model_device(self.forward_func, default=model_device(param))
        encoder = self.encoder if self.encoder is not None else PooledEncoder()
        m = len(constraints)
        lows = torch.tensor([c.low for c in constraints], dtype=torch.float32)
        highs = torch.tensor([c.high for c in constraints], dtype=torch.float32)
        scales = torch.tensor(
            [_band_scale(c.low, c.high) for c in constraints], dtype=torch.float32
        )
        # Target band, shrunk by a margin where it has room.
        width = highs - lows
        margin = torch.where(
            torch.isfinite(width),
            torch.clamp(width * _BAND_MARGIN, max=1e-3 * scales),
            1e-4 * scales,
        )
        tgt_lo, tgt_hi = (lows + margin).to(device), (highs - margin).to(device)
        lo_open, hi_open = ~torch.isfinite(tgt_lo), ~torch.isfinite(tgt_hi)
        scales = scales.to(device)

        modules = [
            mod
            for mod in (self.forward_func, self.generator, self.encoder)
            if isinstance(mod, nn.Module)
        ]
        start_time = time.perf_counter()
        all_inputs, all_codes, all_acts, all_enc, all_steps = [], [], [], [], []
        sum_e: Optional[Tensor] = None
        sum_sq = torch.zeros((), dtype=torch.float64)
        n_earlier = 0
        spread_scale: Optional[float] = None
        # Feasible codes of the latest batch that had any, with their
        # multipliers: later batches and restarts start from them.
        pool_codes: Optional[Tensor] = None
        pool_lam: Optional[Tensor] = None
        prev_mu = o.initial_penalty
        n_batches = math.ceil(n_samples / batch_size)
        with (
            preserve_model_state(modules),
            progress(n_batches, show_progress, "NeuronInverseSet") as bar,
        ):
            self._check_batch_memory(
                param,
                constraints,
                encoder,
                additional_forward_args,
                device,
                "batch_size",
                batch_size,
                batch_size,
                n_samples,
                input_shape,
            )
            for b in range(n_batches):
                k = min(batch_size, n_samples - b * batch_size)
                warm = initial_codes is None and pool_codes is not None
                if initial_codes is not None:
                    init = initial_codes[b * batch_size : b * batch_size + k]
                elif not warm:
                    init = param.random_codes(k, generator=gen, device=device)
                else:
                    noise = param.random_codes(k, generator=gen, device=device)
                    src = torch.arange(k, device=device) % pool_codes.shape[0]
                    init = pool_codes[src] + o.init_noise * noise
                codes = init.detach().clone().to(device).requires_grad_(True)
                if b == 0:
                    with torch.no_grad():
                        x_probe = param(codes)
                    self._check_generated(x_probe, input_shape)
                    e_probe = self._encode(x_probe, encoder)
                    ms = self._mean_sq_dist(e_probe)
                    # A near-constant first batch (Lucent's grey start) must not
                    # inflate the spread term: floor the scale at a tenth of the
                    # encodings' mean squared norm.
                    norm = float(e_probe.detach().double().pow(2).sum(1).mean())
                    spread_scale = max(ms, 0.1 * norm, 1e-12)
                opt = torch.optim.Adam([codes], lr=o.lr)
                if warm:
                    # A batch started from the previous one inherits its
                    # multipliers and penalty: the constraint forces are then
                    # already balanced against the spread, so samples pushed
                    # out of the band come back in a few steps.
                    lam, mu = pool_lam[src].clone(), prev_mu
                else:
                    lam = torch.zeros(k, m, 2, device=device)
                    mu = o.initial_penalty
                last_ok = codes.detach().clone()
                ever = torch.zeros(k, dtype=torch.bool, device=device)
                step = 0
                for step in range(o.max_steps + 1):
                    x = param(codes)
                    x_in = (
                        self._apply_transform(transform, x, transform_gen)
                        if transform is not None
                        else x
                    )
                    acts = self._activations(x_in, constraints, additional_forward_args)
                    if transform is not None:
                        with torch.no_grad():
                            clean = self._activations(
                                x.detach(), constraints, additional_forward_args
                            )
                    else:
                        clean = acts.detach()
                    inside = ((clean >= tgt_lo) & (clean <= tgt_hi)).all(dim=1)
                    last_ok[inside] = codes.detach()[inside]
                    ever |= inside
                    if (
                        step >= o.min_steps and bool(inside.all())
                    ) or step == o.max_steps:
                        break
                    e = self._encode(x, encoder)
                    spread = self._spread(e, sum_e, sum_sq, n_earlier) / spread_scale
                    g = (
                        torch.stack(
                            (
                                torch.where(lo_open, -1.0, tgt_lo - acts),
                                torch.where(hi_open, -1.0, acts - tgt_hi),
                            ),
                            dim=2,
                        )
                        / scales[None, :, None]
                    )
                    al = (torch.relu(lam + mu * g).pow(2) - lam.pow(2)).sum((1, 2))
                    loss = (-o.diversity_weight * spread + al / (2 * mu)).sum()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    self._project(codes, code_bound)
                    if (step + 1) % o.multiplier_every == 0:
                        lam = torch.relu(lam + mu * g.detach())
                        mu = min(mu * o.penalty_growth, o.max_penalty)
                    if o.restart_every and (step + 1) % o.restart_every == 0:
                        lam = self._restart(
                            codes,
                            opt,
                            lam,
                            ~ever,
                            last_ok[ever],
                            pool_codes,
                            param,
                            gen,
                            o.init_noise,
                        )
                final_codes = torch.where(
                    ever.reshape(-1, *([1] * (codes.dim() - 1))),
                    last_ok,
                    codes.detach(),
                )
                with torch.no_grad():
                    x_final = param(final_codes)
                    acts_final = self._activations(
                        x_final, constraints, additional_forward_args
                    )
                    e_final = self._encode(x_final, encoder).double()
                all_inputs.append(x_final.cpu())
                all_codes.append(final_codes.cpu())
                all_acts.append(acts_final.cpu())
                all_enc.append(e_final.float().cpu())
                all_steps.append(torch.full((k,), step, dtype=torch.long))
                if o.repel_from == "all" or b == 0:
                    s = e_final.sum(0)
                    sum_e = s if sum_e is None else sum_e + s
                    sum_sq = sum_sq + e_final.pow(2).sum().cpu()
                    n_earlier += k
                ok = (acts_final >= lows.to(device)) & (acts_final <= highs.to(device))
                ok = ok.all(dim=1)
                if bool(ok.any()):
                    pool_codes, pool_lam = final_codes[ok], lam[ok]
                prev_mu = mu
                bar.update(1)
        acts_all = torch.cat(all_acts)
        feasible = ((acts_all >= lows[None]) & (acts_all <= highs[None])).all(dim=1)
        return InverseSetResult(
            inputs=torch.cat(all_inputs),
            codes=torch.cat(all_codes),
            activations=acts_all[:, 0].clone(),
            constraint_activations=acts_all,
            feasible=feasible,
            encodings=torch.cat(all_enc),
            steps=torch.cat(all_steps),
            activation_ranges=[[c.low, c.high] for c in constraints],
            constraint_method="augmented_lagrangian",
            batch_size=batch_size,
            elapsed_s=time.perf_counter() - start_time,
        )

    @staticmethod
    def _restart(
        codes: Tensor,
        opt: torch.optim.Optimizer,
        lam: Tensor,
        stuck: Tensor,
        batch_ok: Tensor,
        pool: Optional[Tensor],
        param: nn.Module,
        gen: torch.Generator,
        init_noise: float,
    ) -> Tensor:
        """Move the ``stuck`` codes to new starting points (in place)."""
        if not bool(stuck.any()):
            return lam
        k = codes.shape[0]
        noise = param.random_codes(k, generator=gen, device=codes.device)
        sources = [t for t in (batch_ok, pool) if t is not None and t.shape[0] > 0]
        if sources:
            cands = torch.cat(sources)
            pick = torch.randint(cands.shape[0], (k,), generator=gen)
            new = cands[pick.to(codes.device)] + init_noise * noise
        else:
            new = noise
        mask = stuck.reshape(-1, *([1] * (codes.dim() - 1)))
        with torch.no_grad():
            codes.copy_(torch.where(mask, new, codes))
            state = opt.state.get(codes, {})
            for key in ("exp_avg", "exp_avg_sq"):
                if key in state:
                    state[key].masked_fill_(mask.expand_as(state[key]), 0.0)
        return torch.where(stuck[:, None, None], torch.zeros_like(lam), lam)

    @staticmethod
    def _code_bound(param: nn.Module, code_bound: Any) -> Optional[float]:
        if isinstance(code_bound, str):
            if code_bound != "auto":
                raise ValueError(
                    f"code_bound must be 'auto', None or a number, got {code_bound!r}"
                )
            std = getattr(param, "prior_std", None)
            dim = math.prod(getattr(param, "code_shape", ()) or (1,))
            return None if std is None else float(std) * (math.sqrt(dim) + 3)
        if code_bound is None:
            return None
        return check_positive_float("code_bound", code_bound)

    @staticmethod
    def _project(codes: Tensor, bound: Optional[float]) -> None:
        """Project each code onto the ball of radius ``bound`` (in place)."""
        if bound is None:
            return
        with torch.no_grad():
            flat = codes.reshape(codes.shape[0], -1)
            norms = flat.norm(dim=1, keepdim=True).clamp(min=1e-12)
            flat.mul_((bound / norms).clamp(max=1.0))

    @staticmethod
    def _mean_sq_dist(e: Tensor) -> float:
        n = e.shape[0]
        if n < 2:
            return 0.0
        e = e.detach().double()
        return float(torch.cdist(e, e).pow(2).sum() / (n * (n - 1)))

    @staticmethod
    def _spread(
        e: Tensor, sum_e: Optional[Tensor], sum_sq: Tensor, n_earlier: int
    ) -> Tensor:
        r"""Per-sample mean squared distance to batch members and earlier samples.

        The earlier samples enter through ``sum_e`` (:math:`\sum_y e_y`) and
        ``sum_sq`` (:math:`\sum_y \|e_y\|^2`) only.
        """
        k = e.shape[0]
        sq = e.pow(2).sum(1)
        within = (sq[:, None] + sq[None, :] - 2 * e @ e.t()).clamp(min=0).sum(1)
        total = within
        if n_earlier > 0 and sum_e is not None:
            earlier = (
                n_earlier * sq
                - 2 * e @ sum_e.to(e.dtype)
                + sum_sq.to(device=e.device, dtype=e.dtype)
            )
            total = total + earlier.clamp(min=0)
        pairs = (k - 1) + n_earlier
        return total / max(pairs, 1)

    def _check_generated(self, x: Tensor, input_shape) -> None:
        if not torch.is_tensor(x):
            raise ValueError("generator must return a tensor")
        if input_shape is not None and tuple(x.shape[1:]) != tuple(input_shape):
            raise ValueError(
                f"generator output shape {tuple(x.shape[1:])} does not match "
                f"input_shape {tuple(input_shape)}"
            )
