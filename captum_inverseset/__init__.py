"""captum_inverseset: neuron-interpretation methods for Captum.

Adds to ``captum.attr`` the methods it lacks for understanding single neurons:

* :class:`NeuronInverseSet`: a diverse sample of inputs whose neuron
  activation lies in a band (Hada & Carreira-Perpinan).
* :class:`NeuronShapley`: Shapley values of a layer's neurons for a metric
  (Ghorbani & Zou, 2020).
* :class:`EGBAS`: samples in the generative region of a generator's latent
  (Jeon, Jeong & Choi, 2020).
* :class:`NeuronProfile`: dataset examples, activation statistics, activation
  maximisation and dissection scores of a neuron.
"""

from ._core.generative.egbas import EGBAS
from ._core.layer.neuron_shapley import NeuronShapley
from ._core.neuron.neuron_inverse_set import NeuronInverseSet
from ._core.neuron.neuron_profile import NeuronProfile

__version__ = "0.1.0"

__all__ = [
    "EGBAS",
    "NeuronInverseSet",
    "NeuronProfile",
    "NeuronShapley",
    "__version__",
]
