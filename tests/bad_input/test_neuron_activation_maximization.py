"""NeuronActivationMaximization refuses bad input with a ValueError naming
the argument.

One case per class of failure (issue 14): NaN/infinite penalty weights and
learning rates, numbers given as strings or bools, NaN/infinite/meta initial
codes, allocations that cannot fit, selectors of the wrong type, a bad seed.
"""

import pytest
import torch
from torch import nn

from captum_inverseset import NeuronActivationMaximization
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset.param import BoxParameterization


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.ReLU(), nn.Linear(5, 3))


def _codes(value):
    return torch.full((1, 1, 4, 4), value)


def _run(am, parameterization, **kwargs):
    # interpret() is the verb since issue 17; attribute(parameterization, ...)
    # before it. The fallback lets this file run on 35150b8, where issue 14
    # counts its cases.
    if hasattr(am, "interpret"):
        return am.interpret(parameterization=parameterization, **kwargs)
    return am.attribute(parameterization, **kwargs)


CASES = [
    (
        "tv-weight-nan",
        {"total_variation_weight": float("nan")},
        "total_variation_weight",
    ),
    (
        "tv-weight-inf",
        {"total_variation_weight": float("inf")},
        "total_variation_weight",
    ),
    ("frequency-weight-nan", {"frequency_weight": float("nan")}, "frequency_weight"),
    ("frequency-weight-inf", {"frequency_weight": float("inf")}, "frequency_weight"),
    ("init-codes-nan", {"init_codes": _codes(float("nan"))}, "init_codes"),
    ("init-codes-inf", {"init_codes": _codes(float("-inf"))}, "init_codes"),
    (
        "init-codes-meta",
        {"init_codes": torch.empty(1, 1, 4, 4, device="meta")},
        "init_codes",
    ),
    ("lr-string", {"lr": "0.1"}, "lr"),
    ("n-steps-memory", {"n_steps": 10**12}, "n_steps"),
    ("n-inputs-memory", {"n_inputs": 10**11}, "n_inputs"),
    ("negative-string", {"negative": "yes"}, "negative"),
    ("selector-string", {"neuron_selector": "1"}, "neuron_selector"),
]

REGRESSION = [
    ("lr-nan", {"lr": float("nan")}, "lr"),
    ("n-steps-float", {"n_steps": 5.0}, "n_steps"),
    ("seed-string", {"seed": "0"}, "seed"),
    ("tv-weight-string", {"total_variation_weight": "0.1"}, "total_variation_weight"),
    ("tv-weight-negative", {"total_variation_weight": -1.0}, "total_variation_weight"),
    ("init-codes-shape", {"init_codes": torch.zeros(2, 1, 4, 4)}, "init_codes"),
    ("n-inputs-zero", {"n_inputs": 0}, "n_inputs"),
    ("transforms-not-callable", {"transforms": 5}, "transforms"),
]


@pytest.mark.parametrize(
    "kwargs, match",
    [c[1:] for c in CASES + REGRESSION],
    ids=[c[0] for c in CASES + REGRESSION],
)
def test_bad_input_raises_naming_the_argument(kwargs, match):
    model = _model().train()
    kwargs = dict(kwargs)
    kwargs.setdefault("neuron_selector", 1)
    am = NeuronActivationMaximization(model, model[3])
    with pytest.raises(ValueError, match=match):
        _run(
            am,
            BoxParameterization((1, 4, 4)),
            n_steps=kwargs.pop("n_steps", 2),
            **kwargs,
        )
    assert model.training and count_hooks(model) == 0
    assert all(p.requires_grad for p in model.parameters())


def test_meta_model_is_refused():
    model = _model().to("meta")
    am = NeuronActivationMaximization(model, model[3])
    with pytest.raises(ValueError, match="meta"):
        _run(am, BoxParameterization((1, 4, 4)), neuron_selector=1, n_steps=2)
