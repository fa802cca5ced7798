"""The sampler's settings, each default spelled once, and their checks.

:class:`SamplerOptions` is the one place where an optimiser default is
written: :meth:`NeuronInverseSet.sample` reads its signature defaults from
:data:`DEFAULTS`, and both ``sample`` and ``attribute`` build the options
object from their keyword arguments by field name.
"""

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Dict, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

from ...._utils.validation import check_number, check_positive_float, check_positive_int

__all__ = [
    "DEFAULTS",
    "SamplerOptions",
    "TOP_RANGE_STARTS",
    "TOP_RANGE_STEPS",
    "check_bool",
    "check_shape",
    "is_number",
    "project_codes",
    "resolve_code_bound",
]

# Activation maximisation of top_range: random starts and Adam steps.
TOP_RANGE_STARTS = 8
TOP_RANGE_STEPS = 100


@dataclass(frozen=True)
class SamplerOptions:
    """The optimiser settings of :meth:`NeuronInverseSet.sample` (documented
    there)."""

    max_steps: int = 300
    min_steps: int = 1
    lr: Any = "auto"
    diversity_weight: Any = "auto"
    init_noise: float = 0.25
    repel_from: str = "all"
    constraint_method: str = "augmented_lagrangian"
    initial_penalty: float = 10.0
    penalty_growth: float = 2.0
    max_penalty: float = 1e5
    multiplier_every: int = 5
    code_bound: Any = "auto"
    restart_every: Optional[int] = 50
    spread_steps: Any = "auto"
    reach_first: Any = "auto"
    probe_steps: int = 20
    screen: Any = "auto"

    @classmethod
    def names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_kwargs(cls, method: str, kwargs: Dict[str, Any]) -> "SamplerOptions":
        """Options from keyword arguments; unknown names are a ``TypeError``
        naming them, as Python's own for a misspelt keyword."""
        unknown = sorted(set(kwargs) - set(cls.names()))
        if unknown:
            raise TypeError(
                f"{method}() got unexpected keyword argument(s) "
                + ", ".join(repr(k) for k in unknown)
            )
        return cls(**kwargs)

    def resolved(self, kind: str) -> "SamplerOptions":
        """``"auto"`` settings replaced by the values of ``AUTO[kind]``."""
        auto = AUTO[kind]
        return replace(
            self,
            **{k: v for k, v in auto.items() if getattr(self, k) == "auto"},
        )

    def checked(self, kind: str = "generator") -> "SamplerOptions":
        """A copy with ``"auto"`` resolved for ``kind`` and every setting
        validated and normalised (``code_bound`` is resolved against the
        parameterization by the sampler)."""
        from .solvers import solver_names

        self = self.resolved(kind)

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
        if self.repel_from not in ("all", "seeds"):
            raise ValueError(
                f"repel_from must be 'all' or 'seeds', got {self.repel_from!r}"
            )
        if self.constraint_method not in solver_names():
            raise ValueError(
                f"constraint_method must be one of {solver_names()}, got "
                f"{self.constraint_method!r}"
            )
        if not isinstance(self.reach_first, bool):
            raise ValueError(
                f"reach_first must be True or False, got {self.reach_first!r}"
            )
        for name in ("spread_steps", "probe_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        screen = self.screen
        if not (screen == "auto" if isinstance(screen, str) else True) or (
            not isinstance(screen, str)
            and (isinstance(screen, bool) or not isinstance(screen, int) or screen < 0)
        ):
            raise ValueError(
                f"screen must be 'auto' or a non-negative integer, got {screen!r}"
            )
        penalty_growth = check_positive_float("penalty_growth", self.penalty_growth)
        if penalty_growth < 1:
            raise ValueError(
                f"penalty_growth must be >= 1, got {self.penalty_growth!r}"
            )
        return replace(
            self,
            max_steps=check_positive_int("max_steps", self.max_steps),
            restart_every=restart_every,
            lr=check_positive_float("lr", self.lr),
            diversity_weight=check_number(
                "diversity_weight", self.diversity_weight, minimum=0
            ),
            init_noise=check_number("init_noise", self.init_noise, minimum=0),
            initial_penalty=check_positive_float(
                "initial_penalty", self.initial_penalty
            ),
            penalty_growth=penalty_growth,
            max_penalty=check_positive_float("max_penalty", self.max_penalty),
            multiplier_every=check_positive_int(
                "multiplier_every", self.multiplier_every
            ),
        )


# What "auto" means, by what is sampled. Through a generator (and for
# attribute's given starting points) the starts are already spread apart,
# so a short spread phase after reaching the band suffices. In input space
# the starts are alike (Lucent's grey images): the spread term works while
# reaching the band and for a long phase after, with larger steps.
AUTO = {
    "generator": {
        "lr": 0.1,
        "diversity_weight": 2.0,
        "spread_steps": 20,
        "reach_first": True,
    },
    "input": {
        "lr": 0.2,
        "diversity_weight": 10.0,
        "spread_steps": 100,
        "reach_first": False,
    },
}
AUTO["attribute"] = dict(AUTO["generator"], reach_first=False)

DEFAULTS = SamplerOptions()


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is a bool: ``"False"`` must not silently mean True."""
    if not isinstance(value, bool):
        raise ValueError(f"{name} must be True or False, got {value!r}")
    return value


def is_number(value: Any) -> bool:
    """A real number (numpy scalars and 0-d tensors too), not a bool or str."""
    if isinstance(value, (bool, str, bytes)):
        return False
    if isinstance(value, (int, float)):
        return True
    return getattr(value, "ndim", None) == 0 and hasattr(value, "item")


def check_shape(name: str, shape: Any) -> Tuple[int, ...]:
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


def resolve_code_bound(param: nn.Module, code_bound: Any) -> Optional[float]:
    r"""The radius codes are projected onto (None: unbounded).

    ``"auto"``: :math:`\sigma(\sqrt{d} + 3)` for a parameterization with a
    ``prior_std`` :math:`\sigma` and ``d`` code numbers, else None.
    """
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


def project_codes(codes: Tensor, bound: Optional[float]) -> None:
    """Project each code onto the ball of radius ``bound`` (in place)."""
    if bound is None:
        return
    with torch.no_grad():
        flat = codes.reshape(codes.shape[0], -1)
        norms = flat.norm(dim=1, keepdim=True).clamp(min=1e-12)
        flat.mul_((bound / norms).clamp(max=1.0))
