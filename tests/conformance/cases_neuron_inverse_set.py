"""Conformance cases of :class:`~captum_inverseset.NeuronInverseSet`."""

import torch

from captum_inverseset import NeuronInverseSet

from .harness import Case
from .models import make_digits_classifier, make_digits_generator, make_resnet18


def _digits_inputs(seed: int, n: int = 3) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def _call_attribute(method, model, seed):
    return method.attribute(
        _digits_inputs(seed),
        (5, 3, 3),
        activation_range=(0.5, 2.0),
        max_steps=8,
        seed=seed,
    )


def _bad_attribute(method, model):
    method.attribute(_digits_inputs(0), (100, 3, 3), activation_range=(0.5, 2.0))


def _call_sample(method, model, seed):
    return method.sample(
        2, (1.0, 3.0), n_samples=6, batch_size=3, max_steps=8, seed=seed
    )


def _bad_sample(method, model):
    method.sample(64, (1.0, 3.0), n_samples=2, max_steps=2)


def _call_resnet(method, model, seed):
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    return method.attribute(
        x, (7, 4, 4), activation_range=(0.2, None), max_steps=3, seed=seed
    )


def _bad_resnet(method, model):
    x = torch.rand(2, 3, 32, 32)
    method.attribute(x, (64, 40, 4), activation_range=(0.2, None), max_steps=2)


CASES = [
    Case(
        id="NeuronInverseSet-digits_classifier-conv2-attribute",
        make_model=make_digits_classifier,
        layer="conv2",
        make_method=NeuronInverseSet,
        call=_call_attribute,
        call_bad_selector=_bad_attribute,
    ),
    Case(
        id="NeuronInverseSet-digits_classifier-fc1-sample-generator",
        make_model=make_digits_classifier,
        layer="fc1",
        make_method=lambda model, layer, generator: NeuronInverseSet(
            model, layer, generator=generator
        ),
        call=_call_sample,
        call_bad_selector=_bad_sample,
        make_extras=lambda: {"generator": make_digits_generator()},
    ),
    Case(
        id="NeuronInverseSet-resnet18-layer1.0.conv2-attribute",
        make_model=make_resnet18,
        layer="layer1.0.conv2",
        make_method=NeuronInverseSet,
        call=_call_resnet,
        call_bad_selector=_bad_resnet,
    ),
]
