"""Inverse-set sampling of a neuron (Hada & Carreira-Perpinan).

* :mod:`.neuron_inverse_set`: the public class :class:`NeuronInverseSet`;
* :mod:`.constraints`: bands on neurons (:class:`NeuronConstraint`,
  :class:`ConstraintSet`);
* :mod:`.solvers`: how bands enter the loss (the :class:`ConstraintSolver`
  interface, the augmented Lagrangian, :func:`register_solver`);
* :mod:`.spread`: the running spread against earlier samples;
* :mod:`.loop`: the batch loop;
* :mod:`.probe`: short activation maximisation (``top_range``);
* :mod:`.options`: the settings, each default once;
* :mod:`.result`: :class:`InverseSetResult`.
"""

from ....param import PooledEncoder
from .constraints import ConstraintSet, NeuronConstraint
from .neuron_inverse_set import NeuronInverseSet
from .result import BandUnreachableWarning, InfeasibleSamplesWarning, InverseSetResult
from .solvers import AugmentedLagrangian, ConstraintSolver, register_solver
from .spread import RunningSpread

__all__ = [
    "AugmentedLagrangian",
    "BandUnreachableWarning",
    "InfeasibleSamplesWarning",
    "ConstraintSet",
    "ConstraintSolver",
    "InverseSetResult",
    "NeuronConstraint",
    "NeuronInverseSet",
    "PooledEncoder",
    "RunningSpread",
    "register_solver",
]
