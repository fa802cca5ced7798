"""NeuronShapley on the digits classifier and on ResNet-18 (several layers)."""

import torch

from captum_inverseset import NeuronShapley

from .harness import Case
from .models import make_digits_classifier, make_resnet18


def _digits_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(6, 1, 8, 8, generator=g), torch.arange(6) % 10


def _resnet_inputs():
    g = torch.Generator().manual_seed(0)
    return torch.rand(2, 3, 32, 32, generator=g), torch.tensor([1, 7])


def _call_digits(method, model, seed):
    x, y = _digits_inputs()
    return method.attribute(x, target=y, metric="loss", n_permutations=1, seed=seed)


def _bad_digits(method, model):
    x, y = _digits_inputs()
    method.attribute(x, target=y, top_k=10_000, n_permutations=1)


def _call_resnet(method, model, seed):
    x, y = _resnet_inputs()
    return method.attribute(
        x,
        target=y,
        metric="loss",
        n_permutations=1,
        seed=seed,
        coalitions_per_batch=64,
    )


def _bad_resnet(method, model):
    x, y = _resnet_inputs()
    method.attribute(x, target=y, top_k=10_000, n_permutations=1)


CASES = [
    Case(
        id="NeuronShapley-digits_classifier",
        make_model=make_digits_classifier,
        layer="conv3",
        make_method=lambda model, layer: NeuronShapley(model, [model.conv1, layer]),
        call=_call_digits,
        call_bad_selector=_bad_digits,
        bad_call_errors=(ValueError,),
    ),
    Case(
        id="NeuronShapley-resnet18",
        make_model=make_resnet18,
        layer="layer3.1.conv2",
        make_method=lambda model, layer: NeuronShapley(
            model, [model.layer2[0].conv1, layer]
        ),
        call=_call_resnet,
        call_bad_selector=_bad_resnet,
        bad_call_errors=(ValueError,),
    ),
]
