r"""Bands on neurons: :class:`NeuronConstraint` and the set a sample must meet.

A :class:`ConstraintSet` evaluates every constrained neuron in one pass of
:func:`~captum_inverseset._utils.layer_eval.neuron_values` (Captum's layer
evaluation and its selector rule), and turns activations into the two things
a solver needs: scaled violations :math:`g \le 0` of each end of each band
(:meth:`ConstraintSet.violations`) and the feasibility of each sample
(:meth:`ConstraintSet.inside`).
"""

import math
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...._utils.captum_compat import NeuronSelector
from ...._utils.layer_eval import neuron_values, normalize_selector
from ...._utils.validation import check_module
from .options import check_bool, is_number

__all__ = ["ActivationRange", "ConstraintSet", "NeuronConstraint", "parse_range"]

ActivationRange = Tuple[Optional[float], Optional[float]]

# Samples aim for a band shrunk by this fraction of its scale, so that a sample
# accepted by the stopping rule stays inside the exact band when recomputed in
# another batch (floating-point sums differ slightly between batch sizes).
BAND_MARGIN = 1e-3


def parse_range(activation_range: Any, name: str) -> Tuple[float, float]:
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
    if not all(v is None or is_number(v) for v in (lo, hi)):
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


def band_scale(lo: float, hi: float) -> float:
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
            in a tuple (or a bare slice) sum the selected units; a callable
            receives the layer output and returns one value per example.
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
        self.low, self.high = parse_range(activation_range, "activation_range")
        self.attribute_to_neuron_input = check_bool(
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


class ConstraintSet:
    r"""Every band a sample must meet, evaluated together.

    Args:
        constraints (list of NeuronConstraint): column ``j`` of every
            activation tensor is constraint ``j``.
        forward_func (Callable): the model.
        additional_forward_args (Any, optional): extra model arguments.
        device_ids (list of int, optional): passed on to Captum's layer
            evaluation (DataParallel).
    """

    def __init__(
        self,
        constraints: Sequence[NeuronConstraint],
        forward_func: Callable,
        additional_forward_args: Any = None,
        device_ids: Optional[List[int]] = None,
    ) -> None:
        self.constraints = list(constraints)
        self.forward_func = forward_func
        self.additional_forward_args = additional_forward_args
        self.device_ids = device_ids
        lows = torch.tensor([c.low for c in self.constraints], dtype=torch.float32)
        highs = torch.tensor([c.high for c in self.constraints], dtype=torch.float32)
        scales = torch.tensor(
            [band_scale(c.low, c.high) for c in self.constraints],
            dtype=torch.float32,
        )
        # The target band, shrunk by a margin where it has room.
        width = highs - lows
        margin = torch.where(
            torch.isfinite(width),
            torch.clamp(width * BAND_MARGIN, max=1e-3 * scales),
            1e-4 * scales,
        )
        self.lows, self.highs, self.scales = lows, highs, scales
        self.target_lows, self.target_highs = lows + margin, highs - margin

    @classmethod
    def of(
        cls,
        main: tuple,
        extra: Optional[Sequence[NeuronConstraint]],
        forward_func: Callable,
        additional_forward_args: Any = None,
        device_ids: Optional[List[int]] = None,
    ) -> "ConstraintSet":
        """The sampled neuron's band ``main`` = ``(layer, neuron_selector,
        activation_range, attribute_to_neuron_input)`` and the
        ``additional_constraints`` ``extra``."""
        if main[1] is None:
            raise ValueError("neuron_selector must be given")
        out = [NeuronConstraint(*main)]
        for i, c in enumerate(extra or ()):
            if not isinstance(c, NeuronConstraint):
                raise ValueError(
                    f"additional_constraints[{i}] must be a NeuronConstraint, got "
                    f"{type(c).__name__}"
                )
            out.append(c)
        return cls(out, forward_func, additional_forward_args, device_ids)

    def __len__(self) -> int:
        return len(self.constraints)

    @property
    def ranges(self) -> List[List[float]]:
        return [[c.low, c.high] for c in self.constraints]

    def values(self, inputs: Tensor, grad: bool = False) -> Tensor:
        """``(N, len(self))`` activations of the constrained neurons."""
        acts = neuron_values(
            self.forward_func,
            inputs,
            [
                (c.layer, c.neuron_selector, c.attribute_to_neuron_input)
                for c in self.constraints
            ],
            self.additional_forward_args,
            grad_enabled=grad,
            device_ids=self.device_ids,
        )
        if not bool(torch.isfinite(acts).all()):
            raise ValueError(
                "the neuron's activations contain NaN or infinite values; check "
                "the model, the generator and the inputs"
            )
        return acts

    def inside(self, acts: Tensor, target: bool = False) -> Tensor:
        """``(N,)`` True where every neuron is inside its band (the shrunk
        target band with ``target=True``, which the optimisation aims for)."""
        lo = (self.target_lows if target else self.lows).to(acts.device)
        hi = (self.target_highs if target else self.highs).to(acts.device)
        return ((acts >= lo) & (acts <= hi)).all(dim=1)

    def violations(self, acts: Tensor) -> Tensor:
        r"""``(N, len(self), 2)`` scaled violations :math:`g` of the lower and
        upper end of each target band (:math:`g \le 0` inside; an open end
        gives the constant -1, so it never pulls)."""
        lo = self.target_lows.to(acts.device)
        hi = self.target_highs.to(acts.device)
        g = torch.stack(
            (
                torch.where(torch.isinf(lo), -1.0, lo - acts),
                torch.where(torch.isinf(hi), -1.0, acts - hi),
            ),
            dim=2,
        )
        return g / self.scales.to(acts.device)[None, :, None]

    def distance(self, acts: Tensor) -> Tensor:
        """``(N,)`` how far each sample is from every band (0 inside), in
        band-scale units: the sum of positive violations of the exact bands."""
        lo, hi = self.lows.to(acts.device), self.highs.to(acts.device)
        below = torch.where(torch.isinf(lo), 0.0, (lo - acts).clamp(min=0))
        above = torch.where(torch.isinf(hi), 0.0, (acts - hi).clamp(min=0))
        return ((below + above) / self.scales.to(acts.device)).sum(1)
