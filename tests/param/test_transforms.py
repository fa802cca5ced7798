"""Lucent-style transforms keep the model's input size by default."""

import pytest
import torch
from torch import nn

from captum_inverseset import NeuronActivationMaximization
from captum_inverseset.param import (
    BoxParameterization,
    RandomScale,
    TransformPipeline,
    standard_transforms,
)
from captum_inverseset.param.transforms import Pad, fit_to_size


@pytest.mark.parametrize("size", [8, 28, 32, 224])
def test_standard_transforms_keep_the_input_size(size):
    x = torch.rand(2, 3, size, size)
    for seed in range(5):
        out = standard_transforms(size)(
            x, generator=torch.Generator().manual_seed(seed)
        )
        assert out.shape == x.shape
    # Lucent's sizes stay available
    grown = standard_transforms(size, keep_size=False)(
        x, generator=torch.Generator().manual_seed(0)
    )
    assert grown.shape[-1] > size


def test_random_scale_crops_and_pads_back():
    x = torch.rand(1, 1, 10, 10)
    up = RandomScale([1.5])(x)
    assert up.shape == x.shape
    # the centre of an enlarged image: the crop is centred
    manual = torch.nn.functional.interpolate(
        x, size=[15, 15], mode="bilinear", align_corners=True
    )[..., 2:12, 2:12]
    assert torch.allclose(up, manual)
    down = RandomScale([0.5])(x)
    assert down.shape == x.shape
    assert RandomScale([1.5], keep_size=False)(x).shape[-1] == 15


def test_fit_to_size_crops_centre_and_pads_with_value():
    x = torch.arange(36.0).reshape(1, 1, 6, 6)
    assert torch.equal(fit_to_size(x, 2, 2), x[..., 2:4, 2:4])
    padded = fit_to_size(torch.ones(1, 1, 2, 3), 4, 5, value=0.5)
    assert padded.shape == (1, 1, 4, 5)
    assert torch.equal(padded[..., 1:3, 1:4], torch.ones(1, 1, 2, 3))
    assert float(padded.sum()) == 6 + 0.5 * (20 - 6)
    pipeline = TransformPipeline([Pad(3)])
    assert pipeline(x).shape == x.shape
    assert torch.equal(pipeline(x), x)


def test_a_fixed_size_linear_head_works_with_standard_transforms():
    # an MNIST-sized model whose head needs exactly 28x28 inputs
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    am = NeuronActivationMaximization(model, model[1])
    result = am.interpret(
        3,
        parameterization=BoxParameterization((1, 28, 28)),
        n_steps=5,
        transforms=standard_transforms(28),
    )
    assert result.inputs.shape == (1, 1, 28, 28)
    assert float(result.final_objective) > float(result.initial_objective)
    with pytest.raises(RuntimeError, match="mat1 and mat2"):
        am.interpret(
            3,
            parameterization=BoxParameterization((1, 28, 28)),
            n_steps=1,
            transforms=standard_transforms(28, keep_size=False),
        )
