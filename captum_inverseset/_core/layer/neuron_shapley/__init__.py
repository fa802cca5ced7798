"""Neuron Shapley (Ghorbani & Zou, NeurIPS 2020), in pieces:

* :mod:`.neuron_shapley`: the public class (validate, build the game, run an
  estimator, format the answer);
* :mod:`.game`: the game, ``evaluate(masks) -> values``; :mod:`.data` its
  evaluation batches, :mod:`.metrics` the metric registry, :mod:`.removal`
  the removal strategies;
* :mod:`.engines`: how the model runs on many coalitions (the hook engine is
  the reference; the others split the model with ``torch.fx``);
* :mod:`.estimators`: exact enumeration, permutation sampling with
  truncation, the top-k bandit;
* :mod:`.run_state`: statistics, all-reduce, resuming;
  :mod:`.checkpoint`: the checkpoint file and its fingerprint;
* :mod:`.options`: argument validation; :mod:`.result`: the result.
"""

from .neuron_shapley import NeuronShapley, NeuronShapleyWarning
from .result import NeuronShapleyResult

__all__ = ["NeuronShapley", "NeuronShapleyResult", "NeuronShapleyWarning"]
