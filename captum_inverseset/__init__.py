"""captum_inverseset: neuron-interpretation methods for Captum.

Adds to ``captum.attr`` the methods it lacks for understanding single neurons:

* :class:`NeuronInverseSet`: a diverse sample of inputs whose neuron
  activation lies in a band (Hada & Carreira-Perpinan).
* :class:`NeuronShapley`: Shapley values of a layer's neurons for a metric
  (Ghorbani & Zou, 2020).
* :class:`EGBAS`: samples in the generative region of a generator's latent
  (Jeon, Jeong & Choi, 2020).
* :class:`NeuronProfile`: dataset examples and activation statistics of a
  neuron; :class:`NeuronActivationMaximization` (Lucent-style feature
  visualisation with our hooks) and :class:`NetworkDissection` (IoU of units
  with concept masks) beside it.
"""

import warnings as _warnings

# kornia 0.4.1 (the release Lucent 0.1.8 works with) decorates functions with
# torch.jit.script at import time, which newer torch reports as deprecated.
# Import it once here with that one warning silenced.
with _warnings.catch_warnings():
    _warnings.filterwarnings("ignore", ".*torch.jit.script.*", FutureWarning)
    import kornia  # noqa: F401

from . import objectives  # noqa: E402
from ._core.generative.egbas import EGBAS, EGBASResult, EGBASWarning  # noqa: E402
from ._core.layer.network_dissection import (  # noqa: E402
    DissectionResult,
    NetworkDissection,
)
from ._core.layer.neuron_shapley import (  # noqa: E402
    NeuronShapley,
    NeuronShapleyResult,
    NeuronShapleyWarning,
)
from ._core.neuron.inverse_set import (  # noqa: E402
    BandUnreachableWarning,
    InfeasibleSamplesWarning,
    InverseSetResult,
    NeuronConstraint,
    NeuronInverseSet,
    PooledEncoder,
)
from ._core.neuron.neuron_activation_maximization import (  # noqa: E402
    ActivationMaximizationResult,
    NeuronActivationMaximization,
)
from ._core.neuron.neuron_profile import (  # noqa: E402
    NeuronProfile,
    NeuronProfileResult,
)

__version__ = "0.1.0"

__all__ = [
    "ActivationMaximizationResult",
    "DissectionResult",
    "NeuronProfileResult",
    "EGBAS",
    "EGBASResult",
    "EGBASWarning",
    "InverseSetResult",
    "InfeasibleSamplesWarning",
    "BandUnreachableWarning",
    "NeuronConstraint",
    "PooledEncoder",
    "NetworkDissection",
    "NeuronActivationMaximization",
    "NeuronInverseSet",
    "NeuronProfile",
    "NeuronShapley",
    "NeuronShapleyResult",
    "NeuronShapleyWarning",
    "objectives",
    "__version__",
]
