r"""How the band constraints enter the loss: the solver interface and its
registered implementations.

The sampling loop minimises, for each sample,
:math:`-w\,\text{spread}_i + \text{penalty}_i(g_i)`, where
:math:`g_i` are the scaled violations of
:meth:`~.constraints.ConstraintSet.violations`. Everything about the
penalty (its form, its multipliers, how they are updated, what a later batch
inherits) lives in a :class:`ConstraintSolver`; the loop only calls
:meth:`~ConstraintSolver.start`, :meth:`~ConstraintSolver.penalty`,
:meth:`~ConstraintSolver.update`, :meth:`~ConstraintSolver.reset`,
:meth:`~ConstraintSolver.keep` and :meth:`~ConstraintSolver.finish`. A new
method (a log barrier, a projection) is a subclass registered with
:func:`register_solver`, chosen by ``constraint_method=`` without touching the
loop.
"""

from abc import ABC, abstractmethod
from typing import Any, Dict, List, Optional, Type

import torch
from torch import Tensor

__all__ = [
    "AugmentedLagrangian",
    "ConstraintSolver",
    "make_solver",
    "register_solver",
    "solver_names",
]

_SOLVERS: Dict[str, Type["ConstraintSolver"]] = {}


def register_solver(name: str):
    """Class decorator: make a :class:`ConstraintSolver` available as
    ``constraint_method=name``."""

    def decorate(cls: Type["ConstraintSolver"]) -> Type["ConstraintSolver"]:
        cls.name = name
        _SOLVERS[name] = cls
        return cls

    return decorate


def solver_names() -> List[str]:
    return sorted(_SOLVERS)


def make_solver(options: Any) -> "ConstraintSolver":
    """The solver ``options.constraint_method`` names, built from ``options``."""
    return _SOLVERS[options.constraint_method](options)


class ConstraintSolver(ABC):
    """Turns constraint violations into a per-sample penalty.

    A solver's *state* is whatever it keeps per batch (multipliers, a
    penalty weight); the loop treats it as opaque.
    """

    name = "abstract"

    def __init__(self, options: Any) -> None:
        self.options = options

    @abstractmethod
    def start(
        self, k: int, m: int, device: torch.device, inherit: Optional[Any] = None
    ) -> Any:
        """State for a batch of ``k`` samples and ``m`` constraints; ``inherit``
        is what :meth:`keep` returned for the samples a warm batch starts from,
        one row per sample of the new batch."""

    @abstractmethod
    def penalty(self, state: Any, g: Tensor) -> Tensor:
        """``(k,)`` penalty of violations ``g`` ``(k, m, 2)`` (differentiable)."""

    @abstractmethod
    def update(self, state: Any, g: Tensor, step: int) -> Any:
        """The state after optimisation step ``step`` (0-based) with detached
        violations ``g``."""

    @abstractmethod
    def reset(self, state: Any, mask: Tensor) -> Any:
        """The state with the samples of ``mask`` ``(k,)`` restarted."""

    @abstractmethod
    def keep(self, state: Any, rows: Tensor) -> Any:
        """What later batches inherit from samples ``rows`` of this batch."""

    def inherit(self, kept: Any, src: Tensor) -> Any:
        """Rows ``src`` of what :meth:`keep` returned (one per new sample)."""
        return kept

    def finish(self, state: Any) -> None:  # noqa: B027 - optional hook
        """Called with a batch's final state when the batch ends."""


@register_solver("augmented_lagrangian")
class AugmentedLagrangian(ConstraintSolver):
    r"""Powell-Hestenes-Rockafellar augmented Lagrangian for inequalities.

    With multipliers :math:`\lambda \ge 0` and penalty :math:`\mu`, a sample's
    penalty is
    :math:`\sum_g \frac{1}{2\mu}(\max(0, \lambda + \mu g)^2 - \lambda^2)`;
    every ``multiplier_every`` steps
    :math:`\lambda \leftarrow \max(0, \lambda + \mu g)` and
    :math:`\mu \leftarrow \min(\rho \mu, \mu_{\max})`. A warm batch inherits
    its sources' multipliers and the previous batch's :math:`\mu`, so the
    constraint forces start balanced against the spread.
    """

    def __init__(self, options: Any) -> None:
        super().__init__(options)
        self._last_mu = options.initial_penalty

    def start(self, k, m, device, inherit=None):
        if inherit is not None:
            lam, mu = inherit
            return {"lam": lam.clone(), "mu": mu}
        return {
            "lam": torch.zeros(k, m, 2, device=device),
            "mu": self.options.initial_penalty,
        }

    def penalty(self, state, g):
        lam, mu = state["lam"], state["mu"]
        return (torch.relu(lam + mu * g).pow(2) - lam.pow(2)).sum((1, 2)) / (2 * mu)

    def update(self, state, g, step):
        o = self.options
        if (step + 1) % o.multiplier_every == 0:
            state = {
                "lam": torch.relu(state["lam"] + state["mu"] * g),
                "mu": min(state["mu"] * o.penalty_growth, o.max_penalty),
            }
        return state

    def reset(self, state, mask):
        lam = state["lam"]
        return {
            "lam": torch.where(mask[:, None, None], torch.zeros_like(lam), lam),
            "mu": state["mu"],
        }

    def keep(self, state, rows):
        return state["lam"][rows]

    def finish(self, state):
        self._last_mu = state["mu"]

    def inherit(self, kept, src):
        return (kept[src], self._last_mu)
