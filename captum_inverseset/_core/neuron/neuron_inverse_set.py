"""Old location of the inverse-set sampler, kept so existing imports work.

The implementation lives in :mod:`captum_inverseset._core.neuron.inverse_set`.
"""

from ..._utils.distance import mean_pairwise_distance
from .inverse_set import (
    InverseSetResult,
    NeuronConstraint,
    NeuronInverseSet,
    PooledEncoder,
)

__all__ = [
    "InverseSetResult",
    "NeuronConstraint",
    "NeuronInverseSet",
    "PooledEncoder",
    "mean_pairwise_distance",
]
