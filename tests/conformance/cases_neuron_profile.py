"""Conformance cases of NeuronProfile, NeuronActivationMaximization and
NetworkDissection."""

import torch

from captum_inverseset._core.layer.network_dissection import NetworkDissection
from captum_inverseset._core.neuron.neuron_activation_maximization import (
    NeuronActivationMaximization,
)
from captum_inverseset._core.neuron.neuron_profile import NeuronProfile
from captum_inverseset.param import (
    BoxParameterization,
    FFTImageParameterization,
    standard_transforms,
)

from .harness import Case
from .models import make_digits_classifier, make_resnet18


def _images(shape, seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _masks(shape, seed=1):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) > 0.5


_DIGITS = (12, 1, 8, 8)
_RESNET = (2, 3, 32, 32)

CASES = [
    Case(
        id="NeuronProfile-digits",
        make_model=make_digits_classifier,
        layer="fc2",
        make_method=NeuronProfile,
        call=lambda m, model, seed: m.interpret(
            _images(_DIGITS, seed), 3, target=torch.arange(12) % 10, k=3, batch_size=5
        ),
        call_bad_selector=lambda m, model: m.interpret(_images(_DIGITS), 10),
    ),
    Case(
        id="NeuronProfile-resnet18",
        make_model=make_resnet18,
        layer="layer1.0.conv1",
        make_method=NeuronProfile,
        call=lambda m, model, seed: m.interpret(
            _images(_RESNET, seed), (0, slice(None), slice(None)), k=2, batch_size=2
        ),
        call_bad_selector=lambda m, model: m.interpret(_images(_RESNET), (999, 0, 0)),
    ),
    Case(
        id="NeuronActivationMaximization-digits",
        make_model=make_digits_classifier,
        layer="fc2",
        make_method=NeuronActivationMaximization,
        call=lambda m, model, seed: m.interpret(
            parameterization=BoxParameterization((1, 8, 8)),
            neuron_selector=3,
            n_inputs=2,
            n_steps=3,
            transforms=standard_transforms(8),
            total_variation_weight=0.1,
            seed=seed,
        ),
        call_bad_selector=lambda m, model: m.interpret(
            parameterization=BoxParameterization((1, 8, 8)),
            neuron_selector=10,
            n_steps=2,
            seed=0,
        ),
    ),
    Case(
        id="NeuronActivationMaximization-resnet18",
        make_model=make_resnet18,
        layer="layer1.0.conv1",
        make_method=NeuronActivationMaximization,
        call=lambda m, model, seed: m.interpret(
            parameterization=FFTImageParameterization((3, 32, 32)),
            neuron_selector=(0, slice(None), slice(None)),
            n_steps=2,
            seed=seed,
        ),
        call_bad_selector=lambda m, model: m.interpret(
            parameterization=FFTImageParameterization((3, 32, 32)),
            neuron_selector=(999, 0, 0),
            n_steps=1,
            seed=0,
        ),
    ),
    Case(
        id="NetworkDissection-digits",
        make_model=make_digits_classifier,
        layer="relu2",
        make_method=NetworkDissection,
        call=lambda m, model, seed: m.interpret(
            _images(_DIGITS, seed), _masks((12, 2, 8, 8)), quantile=0.9, batch_size=5
        ),
        call_bad_selector=lambda m, model: m.interpret(
            _images(_DIGITS), _masks((12, 2, 8, 8)), units=[999]
        ),
        bad_call_errors=(ValueError, IndexError),
    ),
    Case(
        id="NetworkDissection-digits-linear",
        make_model=make_digits_classifier,
        layer="fc1",
        make_method=NetworkDissection,
        call=lambda m, model, seed: m.interpret(
            _images(_DIGITS, seed), _masks((12, 3)), quantile=0.8, batch_size=5
        ),
        call_bad_selector=lambda m, model: m.interpret(
            _images(_DIGITS), _masks((12, 3)), units=[999]
        ),
        bad_call_errors=(ValueError, IndexError),
    ),
    Case(
        id="NetworkDissection-resnet18",
        make_model=make_resnet18,
        layer="layer1.0.conv1",
        make_method=NetworkDissection,
        call=lambda m, model, seed: m.interpret(
            _images(_RESNET, seed), _masks((2, 3, 32, 32)), units=[0, 5], batch_size=1
        ),
        call_bad_selector=lambda m, model: m.interpret(
            _images(_RESNET), _masks((2, 3, 32, 32)), units=[999]
        ),
        bad_call_errors=(ValueError, IndexError),
    ),
]
