"""NeuronActivationMaximization: increases the objective, beats the dataset."""

import pytest
import torch

from captum_inverseset import objectives
from captum_inverseset._core.neuron.neuron_activation_maximization import (
    ActivationMaximizationResult,
    NeuronActivationMaximization,
)
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset.param import (
    BoxParameterization,
    FFTImageParameterization,
    standard_transforms,
)
from captum_inverseset.zoo import digits_classifier


@pytest.fixture(scope="module")
def model():
    return digits_classifier().eval()


@pytest.fixture(scope="module")
def train_inputs():
    from captum_inverseset.zoo import load_digits_dataset

    return load_digits_dataset().train_inputs


def _box():
    return BoxParameterization((1, 8, 8))


def _increases_on_average(history: torch.Tensor, window: int = 10) -> bool:
    smooth = history.unfold(0, window, window).mean(1)
    return bool((smooth[1:] >= smooth[:-1] - 1e-6).all())


def test_class_logit_beats_best_dataset_example(model, train_inputs):
    am = NeuronActivationMaximization(model, model.fc2)
    result = am.interpret(
        parameterization=_box(), neuron_selector=3, n_inputs=2, n_steps=60, lr=0.1
    )
    with torch.no_grad():
        best_example = float(model(train_inputs)[:, 3].max())
        direct = model(result.inputs)[:, 3]
    assert _increases_on_average(result.history)
    assert bool((result.final_objective > result.initial_objective).all())
    assert bool((result.final_objective > best_example).all())
    # the reported objective is the model's own logit on the returned inputs
    assert torch.allclose(result.final_objective, direct, atol=1e-4)
    assert float(result.inputs.min()) >= 0.0 and float(result.inputs.max()) <= 1.0


def test_channel_beats_best_dataset_example(model, train_inputs):
    selector = (5, slice(None), slice(None))
    am = NeuronActivationMaximization(model, model.relu3)
    result = am.interpret(
        parameterization=_box(), neuron_selector=selector, n_steps=60, lr=0.1, seed=1
    )
    with torch.no_grad():
        x = train_inputs
        feats = model.relu3(
            model.conv3(
                model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x)))))
            )
        )
    best_example = float(feats[:, 5].sum((1, 2)).max())
    assert _increases_on_average(result.history)
    assert float(result.final_objective[0]) > best_example


def test_negative_optimisation_decreases(model):
    am = NeuronActivationMaximization(model, model.fc2)
    result = am.interpret(
        parameterization=_box(), neuron_selector=3, n_steps=40, lr=0.1, negative=True
    )
    smooth = result.history.unfold(0, 10, 10).mean(1)
    assert bool((smooth[1:] <= smooth[:-1] + 1e-6).all())
    assert float(result.final_objective) < float(result.initial_objective) - 5


def test_lucent_objective_matches_neuron_selector(model):
    # class_logit(3) is -mean(logit 3) in Lucent's convention: same ascent
    am = NeuronActivationMaximization(model, model.fc2)
    by_selector = am.interpret(
        parameterization=_box(), neuron_selector=3, n_steps=15, seed=4
    )
    by_objective = am.interpret(
        parameterization=_box(), objective=objectives.class_logit(3), n_steps=15, seed=4
    )
    assert torch.allclose(by_selector.history, by_objective.history, atol=1e-4)
    assert torch.allclose(by_selector.inputs, by_objective.inputs, atol=1e-5)
    assert count_hooks(model) == 0


def test_lucent_channel_objective_with_fft_and_transforms(model):
    am = NeuronActivationMaximization(model)
    obj = objectives.channel("conv3", 5) - 0.1 * objectives.deepdream("relu2")
    result = am.interpret(
        parameterization=FFTImageParameterization((1, 8, 8)),
        objective=obj,
        n_inputs=2,
        n_steps=40,
        lr=0.1,
        transforms=standard_transforms(8),
        seed=0,
    )
    # one value per input, each the objective on that input alone
    assert result.final_objective.shape == (2,)
    with torch.no_grad():
        alone = [
            objectives.evaluate_objective(obj, model, result.inputs[i : i + 1])
            for i in range(2)
        ]
        batch = objectives.evaluate_objective(obj, model, result.inputs)
    for i in range(2):
        assert float(result.final_objective[i]) == pytest.approx(-float(alone[i]), 1e-5)
    assert result.final_batch_objective == pytest.approx(-float(batch), rel=1e-5)
    assert result.final_batch_objective > result.initial_batch_objective + 0.5
    assert result.inputs.shape == (2, 1, 8, 8)
    assert count_hooks(model) == 0


def test_seed_reproducible_and_seeds_differ(model):
    am = NeuronActivationMaximization(model, model.fc2)
    kw = dict(neuron_selector=3, n_steps=5, transforms=standard_transforms(8))
    a = am.interpret(parameterization=FFTImageParameterization((1, 8, 8)), seed=3, **kw)
    b = am.interpret(parameterization=FFTImageParameterization((1, 8, 8)), seed=3, **kw)
    c = am.interpret(parameterization=FFTImageParameterization((1, 8, 8)), seed=4, **kw)
    assert torch.equal(a.inputs, b.inputs)
    assert torch.equal(a.history, b.history)
    assert not torch.equal(a.inputs, c.inputs)


def test_total_variation_and_frequency_penalties_smooth_the_input(model):
    am = NeuronActivationMaximization(model, model.fc2)
    kw = dict(neuron_selector=3, n_steps=40, lr=0.1, seed=0)
    plain = am.interpret(parameterization=_box(), **kw)
    smooth = am.interpret(parameterization=_box(), total_variation_weight=1.0, **kw)
    low_freq = am.interpret(parameterization=_box(), frequency_weight=2.0, **kw)
    tv = objectives.total_variation_penalty
    fp = objectives.frequency_penalty
    assert float(tv(smooth.inputs)) < 0.8 * float(tv(plain.inputs))
    assert float(fp(low_freq.inputs)) < 0.8 * float(fp(plain.inputs))


def test_init_codes_are_used(model):
    box = _box()
    codes = box.inverse(torch.full((1, 1, 8, 8), 0.25))
    am = NeuronActivationMaximization(model, model.fc2)
    result = am.interpret(
        parameterization=box, neuron_selector=3, n_steps=1, lr=1e-6, init_codes=codes
    )
    assert torch.allclose(result.inputs, torch.full((1, 1, 8, 8), 0.25), atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "exactly one"),
        ({"neuron_selector": 3, "objective": objectives.class_logit(3)}, "exactly"),
        ({"neuron_selector": 3, "n_steps": 0}, "n_steps"),
        ({"neuron_selector": 3, "lr": -1.0}, "lr"),
        ({"neuron_selector": 3, "total_variation_weight": -1}, "total_variation"),
        ({"neuron_selector": 3, "init_codes": torch.zeros(2, 1, 8, 8)}, "init_codes"),
        ({"neuron_selector": 3, "transforms": 5}, "transforms"),
    ],
)
def test_bad_arguments_raise_value_error(model, kwargs, match):
    am = NeuronActivationMaximization(model, model.fc2)
    with pytest.raises(ValueError, match=match):
        am.interpret(parameterization=_box(), **kwargs)
    with pytest.raises(ValueError, match="parameterization"):
        am.interpret(3, parameterization=lambda c: c)
    assert count_hooks(model) == 0


def test_plot_and_save_load(model, tmp_path):
    am = NeuronActivationMaximization(model, model.fc2)
    result = am.interpret(
        parameterization=_box(), neuron_selector=3, n_inputs=3, n_steps=5, seed=0
    )
    fig, axes = result.plot()
    assert len(axes[1].lines) == 1
    loaded = ActivationMaximizationResult.load(result.save(str(tmp_path / "am.pt")))
    assert torch.equal(loaded.inputs, result.inputs)
    assert loaded.n_steps == 5 and loaded.negative is False


def test_generator_parameterization_is_optimised_and_left_unchanged(model):
    from captum_inverseset.param import GeneratorParameterization
    from captum_inverseset.zoo import DigitsGenerator

    torch.manual_seed(0)
    generator = DigitsGenerator()  # untrained weights suffice here
    generator.train()
    before = [p.detach().clone() for p in generator.parameters()]
    param = GeneratorParameterization(generator, (8,))
    am = NeuronActivationMaximization(model, model.fc2)
    result = am.interpret(
        parameterization=param, neuron_selector=3, n_steps=30, lr=0.1, seed=0
    )
    assert result.codes.shape == (1, 8) and result.inputs.shape == (1, 1, 8, 8)
    assert float(result.final_objective) > float(result.initial_objective)
    assert generator.training and count_hooks(generator) == 0
    assert all(torch.equal(a, b) for a, b in zip(before, generator.parameters()))


def test_interpret_is_the_verb_and_attribute_a_deprecated_alias(model):
    from captum.attr import Attribution

    am = NeuronActivationMaximization(model, model.fc2)
    assert not isinstance(am, Attribution)
    new = am.interpret(3, parameterization=_box(), n_steps=3, seed=0)
    with pytest.warns(FutureWarning, match="interpret"):
        old = am.attribute(_box(), neuron_selector=3, n_steps=3, seed=0)
    assert torch.equal(new.inputs, old.inputs)
    assert torch.equal(new.final_objective, old.final_objective)


def test_selector_must_give_one_value_per_input(model):
    # the package's one selector rule: a channel index on a conv output
    # leaves 4x4 values per input and is refused; slices sum them explicitly
    am = NeuronActivationMaximization(model, model.relu3)
    with pytest.raises(ValueError, match="one value per example"):
        am.interpret(5, parameterization=_box(), n_steps=1, seed=0)
    summed = am.interpret(
        (5, slice(None), slice(None)), parameterization=_box(), n_steps=1, seed=0
    )
    by_callable = am.interpret(
        lambda out: out[:, 5].sum((1, 2)), parameterization=_box(), n_steps=1, seed=0
    )
    assert torch.allclose(summed.final_objective, by_callable.final_objective)


def test_default_parameterization_from_input_shape(model):
    am = NeuronActivationMaximization(model, model.fc2)
    image = am.interpret(3, input_shape=(1, 8, 8), n_steps=2, seed=0)
    reference = am.interpret(
        3, parameterization=FFTImageParameterization((1, 8, 8)), n_steps=2, seed=0
    )
    assert torch.equal(image.inputs, reference.inputs)
    tabular = torch.nn.Sequential(torch.nn.Linear(6, 2))
    result = NeuronActivationMaximization(tabular, tabular[0]).interpret(
        1, input_shape=(6,), n_steps=2, seed=0
    )
    assert result.inputs.shape == (1, 6)
    assert bool(((result.inputs >= 0) & (result.inputs <= 1)).all())
    with pytest.raises(ValueError, match="input_shape"):
        am.interpret(3, n_steps=2)


def test_seed_defaults_to_zero_and_old_names_are_deprecated(model):
    am = NeuronActivationMaximization(model, "fc2")
    default = am.interpret(3, parameterization=_box(), n_steps=3)
    zero = am.interpret(3, parameterization=_box(), n_steps=3, seed=0)
    assert torch.equal(default.inputs, zero.inputs)
    relu3 = NeuronActivationMaximization(model, model.relu3)
    new = relu3.interpret(
        (5, 1, 1), parameterization=_box(), n_steps=2, attribute_to_neuron_input=True
    )
    with pytest.warns(FutureWarning, match="attribute_to_neuron_input="):
        old = relu3.interpret(
            (5, 1, 1), parameterization=_box(), n_steps=2, attribute_to_layer_input=True
        )
    assert torch.equal(new.final_objective, old.final_objective)
    # relu3's input is conv3's output: the same optimisation
    conv3 = NeuronActivationMaximization(model, model.conv3).interpret(
        (5, 1, 1), parameterization=_box(), n_steps=2
    )
    assert torch.allclose(new.final_objective, conv3.final_objective)
    assert torch.equal(new.inputs, conv3.inputs)
    with pytest.raises(ValueError, match="layer 'fc9'"):
        NeuronActivationMaximization(model, "fc9")
