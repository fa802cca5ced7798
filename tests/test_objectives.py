"""Lucent objectives on activations captured with our own hooks."""

import pytest
import torch

from captum_inverseset import objectives
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset.zoo import digits_classifier


@pytest.fixture(scope="module")
def model():
    return digits_classifier().eval()


@pytest.fixture(scope="module")
def x():
    return torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def _conv3(model, x):
    return model.conv3(
        model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x)))))
    )


def test_module_names_use_lucent_underscores():
    import torchvision

    names = objectives.module_names(torchvision.models.resnet18(weights=None))
    assert "layer1_0_conv1" in names and "fc" in names
    assert "" not in names


def test_capture_activations_returns_layer_outputs_and_removes_hooks(model, x):
    with objectives.capture_activations(model) as lookup:
        assert count_hooks(model) == len(objectives.module_names(model))
        out = model(x)
        lookup.output = out
        lookup.input = x
        assert torch.allclose(lookup("conv3"), _conv3(model, x))
        assert torch.equal(lookup("labels"), out)
        assert torch.equal(lookup("input"), x)
    assert count_hooks(model) == 0
    with objectives.capture_activations(model, ["conv3"]) as lookup:
        assert count_hooks(model) == 1
        model(x)
        with pytest.raises(ValueError, match="unknown layer"):
            lookup("conv2")
    assert count_hooks(model) == 0
    with pytest.raises(ValueError, match="names"):
        with objectives.capture_activations(model, ["nope"]):
            pass


def test_hooks_removed_when_forward_raises(model):
    with pytest.raises(RuntimeError):
        objectives.evaluate_objective(
            objectives.channel("conv3", 0), model, torch.zeros(2, 3, 8, 8)
        )
    assert count_hooks(model) == 0


def test_objectives_equal_their_formulas(model, x):
    with torch.no_grad():
        conv3 = _conv3(model, x)
        logits = model(x)
    ev = objectives.evaluate_objective
    with torch.no_grad():
        assert float(ev(objectives.channel("conv3", 5), model, x)) == pytest.approx(
            float(-conv3[:, 5].mean()), rel=1e-5
        )
        # Lucent's neuron: the centre position (2, 2) of a 4x4 map
        assert float(ev(objectives.neuron("conv3", 5), model, x)) == pytest.approx(
            float(-conv3[:, 5, 2, 2].mean()), rel=1e-5
        )
        assert float(ev(objectives.deepdream("conv3"), model, x)) == pytest.approx(
            float(-(conv3**2).mean()), rel=1e-5
        )
        assert float(ev(objectives.class_logit(7), model, x)) == pytest.approx(
            float(-logits[:, 7].mean()), rel=1e-5
        )
        assert float(
            ev(objectives.class_logit(7, layer="fc2", batch=1), model, x)
        ) == pytest.approx(float(-logits[1, 7]), rel=1e-5)
        both = objectives.channel("conv3", 5) - 2 * objectives.class_logit(7)
        assert float(ev(both, model, x)) == pytest.approx(
            float(-conv3[:, 5].mean() + 2 * logits[:, 7].mean()), rel=1e-5
        )
        div = float(ev(objectives.diversity("conv3"), model, x))
        assert -3.0 <= div < 0.0  # minus mean pairwise cosine similarity of grams
        tv = float(ev(objectives.total_variation(), model, x))
        assert tv == pytest.approx(float(objectives.total_variation_penalty(x).mean()))


def test_total_variation_penalty_by_hand():
    img = torch.tensor([[0.0, 1.0], [1.0, 3.0]]).reshape(1, 1, 2, 2)
    # vertical |1-0| + |3-1| = 3, horizontal |1-0| + |3-1| = 3
    assert objectives.total_variation_penalty(img).tolist() == [6.0]
    with pytest.raises(ValueError):
        objectives.total_variation_penalty(torch.zeros(2, 2))


def test_frequency_penalty_zero_for_constant_positive_for_stripes():
    const = torch.full((1, 1, 8, 8), 0.7)
    stripes = torch.zeros(1, 1, 8, 8)
    stripes[..., ::2] = 1.0
    smooth = torch.linspace(0, 1, 8).expand(1, 1, 8, 8)
    assert float(objectives.frequency_penalty(const)) == pytest.approx(0.0, abs=1e-9)
    assert float(objectives.frequency_penalty(stripes)) > float(
        objectives.frequency_penalty(smooth)
    )
