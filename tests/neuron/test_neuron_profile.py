"""NeuronProfile: statistics equal brute force, streaming equals in-memory."""

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset._core.neuron.neuron_profile import (
    NeuronProfile,
    NeuronProfileResult,
)
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset.zoo import digits_classifier


@pytest.fixture(scope="module")
def setup():
    from captum_inverseset.zoo import load_digits_dataset

    data = load_digits_dataset()
    model = digits_classifier().eval()
    x, y = data.test_inputs[:200], data.test_labels[:200]
    with torch.no_grad():
        logits = model(x)
        relu3 = model.relu3(
            model.conv3(
                model.pool(model.relu2(model.conv2(model.relu1(model.conv1(x)))))
            )
        )
    return model, x, y, logits, relu3


QS = (0.0, 0.05, 0.5, 0.95, 1.0)


def _profile(model, inputs, **kw):
    kw.setdefault("k", 7)
    kw.setdefault("quantiles", QS)
    kw.setdefault("n_bins", 13)
    return NeuronProfile(model, model.fc2).interpret(inputs, 3, **kw)


def test_histogram_topk_quantiles_class_means_equal_brute_force(setup):
    model, x, y, logits, _ = setup
    result = _profile(model, x, target=y)
    acts = logits[:, 3]
    assert torch.equal(result.activations, acts)
    # histogram: numpy's own binning of the brute-force activations
    counts, edges = np.histogram(acts.double().numpy(), bins=13)
    np.testing.assert_array_equal(result.histogram.numpy(), counts)
    np.testing.assert_allclose(result.bin_edges.numpy(), edges, rtol=0, atol=1e-12)
    assert int(result.histogram.sum()) == len(x)
    # top-k / bottom-k: full sort of all values
    desc = torch.sort(acts, descending=True, stable=True).indices[:7]
    asc = torch.sort(acts, stable=True).indices[:7]
    assert torch.equal(result.top_indices, desc)
    assert torch.equal(result.bottom_indices, asc)
    assert torch.equal(result.top_activations, acts[desc])
    assert torch.equal(result.top_examples, x[desc])
    assert torch.equal(result.bottom_examples, x[asc])
    # quantile examples: nearest rank
    ranks = [round(q * (len(x) - 1)) for q in QS]
    full = torch.sort(acts, stable=True).indices
    assert result.quantile_indices.tolist() == [int(full[r]) for r in ranks]
    assert float(result.quantile_activations[0]) == float(acts.min())
    assert float(result.quantile_activations[-1]) == float(acts.max())
    assert torch.equal(result.quantile_examples, x[result.quantile_indices])
    # per-class means
    for c in range(10):
        sel = y == c
        assert int(result.class_counts[c]) == int(sel.sum())
        assert float(result.class_means[c]) == pytest.approx(
            float(acts[sel].double().mean()), rel=1e-6
        )
    # the logit of class 3 is largest on average for class 3
    assert int(result.class_means.argmax()) == 3


def test_activation_range_is_band_of_top_quantile(setup):
    model, x, _, logits, _ = setup
    result = _profile(model, x)
    z1, z2 = result.activation_range(0.99, 1.0)
    acts = logits[:, 3].double().numpy()
    assert z1 == pytest.approx(np.quantile(acts, 0.99), rel=1e-9)
    assert z2 == pytest.approx(acts.max(), rel=1e-9)
    inside = ((acts >= z1) & (acts <= z2)).mean()
    assert 0.005 <= inside <= 0.02
    assert result.activation_range(0.5, None)[1] == float("inf")
    with pytest.raises(ValueError, match="low and high"):
        result.activation_range(0.9, 0.5)


def test_streaming_dataloader_equals_in_memory(setup):
    model, x, y, _, _ = setup
    in_memory = _profile(model, x, target=y, batch_size=17)
    loader = DataLoader(TensorDataset(x, y), batch_size=17, shuffle=False)
    streamed = _profile(model, loader)
    compared = 0
    for f in NeuronProfileResult.field_names():
        a, b = getattr(in_memory, f), getattr(streamed, f)
        if torch.is_tensor(a):
            assert torch.equal(a, b), f
            compared += 1
    assert compared >= 13
    # batch size does not change the statistics beyond float rounding
    one_batch = _profile(model, x, target=y, batch_size=1000)
    assert torch.allclose(one_batch.activations, in_memory.activations, atol=1e-5)
    assert torch.equal(one_batch.top_indices, in_memory.top_indices)


def test_shuffled_dataloader_is_refused(setup):
    model, x, y, _, _ = setup
    loader = DataLoader(
        TensorDataset(x, y),
        batch_size=50,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    with pytest.raises(ValueError, match="fixed order"):
        _profile(model, loader)
    assert count_hooks(model) == 0


def test_channel_selectors_and_layer_input(setup):
    model, x, _, _, relu3 = setup
    channel_sum = NeuronProfile(model, model.relu3).interpret(
        x, (5, slice(None), slice(None)), k=3
    )
    assert torch.allclose(channel_sum.activations, relu3[:, 5].sum((1, 2)), atol=1e-5)
    channel_mean = NeuronProfile(model, model.relu3).interpret(
        x, lambda out: out[:, 5].mean((1, 2)), k=3
    )
    assert torch.allclose(channel_mean.activations, relu3[:, 5].mean((1, 2)), atol=1e-6)
    # the input of relu3 is conv3's output; a ReLU only clips it
    pre = NeuronProfile(model, model.relu3).interpret(
        x, (5, 1, 1), attribute_to_neuron_input=True, k=3
    )
    assert torch.allclose(pre.activations.clamp_min(0), relu3[:, 5, 1, 1], atol=1e-5)
    assert bool((pre.activations < 0).any())


def test_ties_break_by_lower_index():
    model = nn.Sequential(nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 0.0]]))
        model[0].bias.zero_()
    x = torch.tensor([[1.0, 0], [2, 0], [2, 1], [1, 1], [2, 2], [0, 0]])
    result = NeuronProfile(model, model[0]).interpret(
        x, 0, k=3, batch_size=2, quantiles=()
    )
    assert result.top_indices.tolist() == [1, 2, 4]
    assert result.bottom_indices.tolist() == [5, 0, 3]
    assert result.quantile_examples is None


def test_hist_range_excludes_outside_values(setup):
    model, x, _, logits, _ = setup
    result = _profile(model, x, hist_range=(0.0, 5.0))
    acts = logits[:, 3].double().numpy()
    counts, _ = np.histogram(acts, bins=13, range=(0.0, 5.0))
    np.testing.assert_array_equal(result.histogram.numpy(), counts)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"k": 0}, "k must"),
        ({"quantiles": (0.5, 1.5)}, "quantiles"),
        ({"n_bins": -1}, "n_bins"),
        ({"hist_range": (3.0, 1.0)}, "hist_range"),
        ({"target": torch.zeros(5, dtype=torch.long)}, "target"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_raise_value_error(setup, kwargs, match):
    model, x, _, _, _ = setup
    with pytest.raises(ValueError, match=match):
        NeuronProfile(model, model.fc2).interpret(x, 3, **kwargs)
    assert count_hooks(model) == 0


def test_out_of_range_selector_raises_and_leaves_no_hooks(setup):
    model, x, _, _, _ = setup
    with pytest.raises((AssertionError, IndexError)):
        NeuronProfile(model, model.fc2).interpret(x, 10)
    assert count_hooks(model) == 0


def test_plot_and_save_load(setup, tmp_path):
    model, x, y, _, _ = setup
    result = _profile(model, x, target=y)
    fig, axes = result.plot()
    assert axes.shape == (2, 3)
    assert len(axes[0, 0].patches) == 13  # one bar per bin
    path = result.save(str(tmp_path / "profile.pt"))
    loaded = NeuronProfileResult.load(path)
    assert torch.equal(loaded.histogram, result.histogram)
    assert torch.equal(loaded.top_examples, result.top_examples)
    assert loaded.n_examples == 200
    assert loaded.activation_range(0.9, 1.0) == result.activation_range(0.9, 1.0)


def test_interpret_is_the_verb_and_attribute_a_deprecated_alias(setup):
    from captum.attr import Attribution

    model, x, y, _, _ = setup
    profile = NeuronProfile(model, model.fc2)
    assert not isinstance(profile, Attribution)
    new = profile.interpret(x, 3, target=y, k=3)
    with pytest.warns(FutureWarning, match="interpret"):
        old = profile.attribute(x, 3, target=y, k=3)
    assert torch.equal(new.activations, old.activations)
    assert torch.equal(new.class_means, old.class_means)


def test_selector_must_give_one_value_per_example(setup):
    # the package's one selector rule: before, 5 on a conv output was summed
    # over the 4x4 positions silently; now it is refused and the sum is
    # asked for with slices (or a callable)
    model, x, _, _, relu3 = setup
    profile = NeuronProfile(model, model.relu3)
    with pytest.raises(ValueError, match="one value per example"):
        profile.interpret(x, 5, k=3)
    with pytest.raises(ValueError, match="one value per example"):
        profile.interpret(x, lambda out: out[:, 5], k=3)
    summed = profile.interpret(x, (5, slice(None), slice(None)), k=3)
    assert torch.allclose(summed.activations, relu3[:, 5].sum((1, 2)), atol=1e-5)
    assert count_hooks(model) == 0


def test_layer_called_twice_gives_captums_layer_activation():
    from captum.attr import LayerActivation

    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.shared = nn.Linear(3, 3)

        def forward(self, x):
            return self.shared(torch.relu(self.shared(x)))

    torch.manual_seed(0)
    model = Twice()
    x = torch.randn(20, 3)
    result = NeuronProfile(model, model.shared).interpret(x, 1, quantiles=())
    expected = LayerActivation(model, model.shared).attribute(x)[:, 1]
    assert torch.equal(result.activations, expected)


def test_old_names_are_deprecated_aliases(setup):
    model, x, y, _, _ = setup
    profile = NeuronProfile(model, model.relu3)
    new = profile.interpret(x, (5, 1, 1), target=y, attribute_to_neuron_input=True)
    with pytest.warns(FutureWarning, match="labels= is deprecated, use target="):
        old = profile.interpret(x, (5, 1, 1), labels=y, attribute_to_neuron_input=True)
    assert torch.equal(new.class_means, old.class_means)
    with pytest.warns(FutureWarning, match="attribute_to_neuron_input="):
        old = profile.interpret(x, (5, 1, 1), target=y, attribute_to_layer_input=True)
    assert torch.equal(new.activations, old.activations)
    with pytest.raises(TypeError, match="both"):
        profile.interpret(x, 3, labels=y, target=y)


def test_layer_given_by_dotted_name(setup):
    model, x, y, _, _ = setup
    by_name = NeuronProfile(model, "fc2").interpret(x, 3, target=y, k=3)
    by_module = NeuronProfile(model, model.fc2).interpret(x, 3, target=y, k=3)
    assert torch.equal(by_name.activations, by_module.activations)
    with pytest.raises(ValueError, match="layer 'fc9' is not a submodule"):
        NeuronProfile(model, "fc9")
    with pytest.raises(ValueError, match="only when forward_func is an nn.Module"):
        NeuronProfile(lambda t: model(t), "fc2")
