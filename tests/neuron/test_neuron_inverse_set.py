"""Tests of NeuronInverseSet on analytic models and the shipped digits models."""

import math

import pytest
import torch
from torch import nn

from captum_inverseset._core.neuron.inverse_set import (
    InverseSetResult,
    NeuronConstraint,
    NeuronInverseSet,
    PooledEncoder,
    RunningSpread,
)
from captum_inverseset._utils.distance import mean_pairwise_distance
from captum_inverseset._utils.hooks import capture_layer, count_hooks

D = 6
WEIGHT = torch.tensor([[3.0, -2.0, 1.0, 0.5, -1.0, 2.0]])
BIAS = -1.5


class Logistic(nn.Module):
    """sigmoid(w.x + b): its inverse set in [0, 1]^d is a slab of the cube."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, 1)
        self.sigmoid = nn.Sigmoid()
        with torch.no_grad():
            self.linear.weight.copy_(WEIGHT)
            self.linear.bias.fill_(BIAS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.sigmoid(self.linear(x))


def exact_logistic(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x.double() @ WEIGHT.double().t() + BIAS)[:, 0]


@pytest.fixture(scope="module")
def logistic():
    return Logistic()


@pytest.fixture(scope="module")
def digits():
    from captum_inverseset.zoo import (
        digits_classifier,
        digits_encoder,
        digits_generator,
    )

    torch.manual_seed(0)
    return digits_classifier(), digits_generator(), digits_encoder()


def _band_from_generator(model, generator, layer, unit, q=(0.6, 0.8)):
    """A band the generator reaches for some but not all codes (weights-agnostic)."""
    codes = torch.randn(256, 8, generator=torch.Generator().manual_seed(5))
    with torch.no_grad(), capture_layer(layer) as cap:
        model(generator(codes))
    a = cap.output[:, unit]
    lo, hi = torch.quantile(a, torch.tensor(q)).tolist()
    return lo, hi


def _most_variable_unit(model, generator, layer):
    codes = torch.randn(256, 8, generator=torch.Generator().manual_seed(6))
    with torch.no_grad(), capture_layer(layer) as cap:
        model(generator(codes))
    return int(cap.output.std(0).argmax())


# ---------------------------------------------------------------- analytic


def test_logistic_samples_in_box_in_band_and_spread(logistic):
    z1, z2 = 0.7, 0.9
    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    res = sampler.sample(0, (z1, z2), n_samples=60, batch_size=10, input_shape=(D,))
    assert isinstance(res, InverseSetResult)
    assert res.inputs.shape == (60, D) and res.codes.shape == (60, D)
    assert res.inputs.min() >= 0 and res.inputs.max() <= 1
    exact = exact_logistic(res.inputs)
    assert bool(res.feasible.all())
    assert bool(((exact >= z1) & (exact <= z2)).all())
    torch.testing.assert_close(res.activations.double(), exact, atol=1e-5, rtol=0)
    # Uniform rejection sampling from the same set is the baseline coverage.
    u = torch.rand(100_000, D, generator=torch.Generator().manual_seed(1))
    a = exact_logistic(u)
    accepted = u[(a >= z1) & (a <= z2)][:1000]
    assert len(accepted) == 1000
    ours = mean_pairwise_distance(res.inputs)
    assert ours >= mean_pairwise_distance(accepted)


@pytest.mark.parametrize("band", [(0.85, None), (None, 0.05), (-math.inf, 0.05)])
def test_open_bands(logistic, band):
    res = NeuronInverseSet(logistic, logistic.sigmoid).sample(
        0, band, n_samples=12, batch_size=4, input_shape=(D,)
    )
    exact = exact_logistic(res.inputs)
    lo = -math.inf if band[0] is None else band[0]
    hi = math.inf if band[1] is None else band[1]
    assert bool(res.feasible.all())
    assert bool(((exact >= lo) & (exact <= hi)).all())


def test_band_reached_from_both_sides(logistic):
    # Starting points below and above the band: the augmented Lagrangian
    # must pull both groups in (a one-sided hinge would not push back).
    below = torch.zeros(4, D)
    above = torch.ones(4, D) * torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    x0 = torch.cat([below, above])
    a0 = exact_logistic(x0)
    assert bool((a0[:4] < 0.45).all()) and bool((a0[4:] > 0.55).all())
    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    out = sampler.attribute(x0, 0, activation_range=(0.45, 0.55))
    assert out.shape == x0.shape
    exact = exact_logistic(out)
    assert bool(((exact >= 0.45) & (exact <= 0.55)).all())


def test_unreachable_band_is_flagged_not_dropped(logistic):
    res = NeuronInverseSet(logistic, logistic.sigmoid).sample(
        0,
        (0.999999, 1.0),
        n_samples=5,
        batch_size=5,
        input_shape=(D,),
        max_steps=15,
    )
    assert res.inputs.shape[0] == 5
    assert not bool(res.feasible.any())
    assert bool((res.steps == 15).all())
    assert res.feasible_fraction == 0.0


def test_attribute_passes_sampler_options_and_rejects_unknown_ones(logistic):
    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    x0 = torch.zeros(3, D)
    # An unreachable band runs until max_steps: the option reaches the loop.
    res = sampler.attribute(
        x0, 0, activation_range=(0.999999, 1.0), max_steps=7, return_result=True
    )
    assert bool((res.steps == 7).all())
    with pytest.raises(TypeError, match="'max_step'"):
        sampler.attribute(x0, 0, activation_range=(0.4, 0.6), max_step=7)
    with pytest.raises(ValueError, match="max_steps"):
        sampler.attribute(x0, 0, activation_range=(0.4, 0.6), max_steps=0)


def test_spread_closed_form_matches_pairwise_sum():
    g = torch.Generator().manual_seed(0)
    e = torch.randn(5, 3, generator=g, dtype=torch.float64)
    earlier = torch.randn(40, 3, generator=g, dtype=torch.float64)
    got = RunningSpread.raw(e, earlier.sum(0), earlier.pow(2).sum(), earlier.shape[0])
    brute = (
        torch.cdist(e, e).pow(2).sum(1) + torch.cdist(e, earlier).pow(2).sum(1)
    ) / (4 + 40)
    torch.testing.assert_close(got, brute)


def test_mean_pairwise_distance_chunks():
    x = torch.randn(37, 4, generator=torch.Generator().manual_seed(0))
    full = torch.cdist(x.double(), x.double()).sum() / (37 * 36)
    assert mean_pairwise_distance(x, chunk_size=5) == pytest.approx(float(full))


def test_seeded_runs_are_reproducible(logistic):
    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    kw = dict(n_samples=8, batch_size=4, input_shape=(D,))
    a = sampler.sample(0, (0.3, 0.6), seed=3, **kw)
    b = sampler.sample(0, (0.3, 0.6), seed=3, **kw)
    c = sampler.sample(0, (0.3, 0.6), seed=4, **kw)
    assert torch.equal(a.inputs, b.inputs) and torch.equal(a.codes, b.codes)
    assert not torch.equal(a.inputs, c.inputs)


def test_neuron_input_and_output_agree(logistic):
    """The sigmoid's input is the linear layer's output."""
    x = torch.rand(3, D, generator=torch.Generator().manual_seed(0))
    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    res = sampler.attribute(
        x,
        0,
        activation_range=(0.0, 1.0),
        attribute_to_neuron_input=True,
        return_result=True,
    )
    expected = (res.inputs @ WEIGHT.t() + BIAS)[:, 0]
    torch.testing.assert_close(res.activations, expected, atol=1e-5, rtol=0)
    assert bool(((expected >= 0) & (expected <= 1)).all())


def test_tuple_inputs_give_tuple_outputs(logistic):
    x = torch.rand(2, D, generator=torch.Generator().manual_seed(0))
    out = NeuronInverseSet(logistic, logistic.sigmoid).attribute(
        (x,), 0, activation_range=(0.2, 0.8)
    )
    assert isinstance(out, tuple) and out[0].shape == x.shape


def test_save_load_and_plot(logistic, tmp_path):
    res = NeuronInverseSet(logistic, logistic.sigmoid).sample(
        0, (0.3, 0.6), n_samples=6, batch_size=3, input_shape=(D,)
    )
    path = res.save(str(tmp_path / "inv.pt"))
    back = InverseSetResult.load(path)
    assert torch.equal(back.inputs, res.inputs)
    assert torch.equal(back.feasible, res.feasible)
    assert back.activation_range == (0.3, 0.6)
    assert back.constraint_method == "augmented_lagrangian"
    fig, ax = res.plot()
    assert len(ax.collections) >= 1


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(activation_range=(2.0, 1.0)), "z1"),
        (dict(activation_range=(0.1, 0.5), n_samples=0), "n_samples"),
        (dict(activation_range=(0.1, 0.5), batch_size=0), "batch_size"),
        (dict(activation_range=(0.1, 0.5), input_shape=None), "input_shape"),
        (dict(activation_range=(float("nan"), 0.5)), "activation_range"),
        (dict(activation_range=(0.1, 0.5), max_steps=0), "max_steps"),
        (dict(activation_range=(0.1, 0.5), repel_from="x"), "repel_from"),
    ],
)
def test_invalid_arguments(logistic, kwargs, match):
    args = dict(n_samples=4, batch_size=2, input_shape=(D,))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        NeuronInverseSet(logistic, logistic.sigmoid).sample(0, **args)


def test_generator_and_encoder_shape_mismatch(logistic):
    gen = nn.Linear(3, 5)  # outputs 5 values, the model takes 6
    sampler = NeuronInverseSet(
        logistic, logistic.sigmoid, generator=gen, latent_shape=(3,)
    )
    with pytest.raises(ValueError, match="generator"):
        sampler.sample(0, (0.1, 0.5), n_samples=2, input_shape=(D,))
    bad_encoder = nn.Linear(4, 2)  # cannot take 6-dim inputs
    sampler = NeuronInverseSet(logistic, logistic.sigmoid, encoder=bad_encoder)
    # The encoder's own error goes up unchanged (API rule 4), with a note.
    with pytest.raises(RuntimeError, match="mat1 and mat2") as info:
        sampler.sample(0, (0.1, 0.5), n_samples=2, input_shape=(D,))
    notes = getattr(info.value, "__notes__", ["encoder"])  # notes: Python 3.11+
    assert any("encoder" in note for note in notes)


def test_nan_activations_raise():
    class NaNModel(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(D, 2)

        def forward(self, x):
            return self.linear(x) * float("nan")

    model = NaNModel()
    with pytest.raises(ValueError, match="NaN"):
        NeuronInverseSet(model, model).sample(
            0, (0.0, 1.0), n_samples=2, input_shape=(D,)
        )
    assert count_hooks(model) == 0


def test_out_of_range_selector_fails_like_captum(logistic):
    with pytest.raises((AssertionError, IndexError)):
        NeuronInverseSet(logistic, logistic.sigmoid).sample(
            5, (0.1, 0.5), n_samples=2, input_shape=(D,)
        )
    assert count_hooks(logistic) == 0


def test_pooled_encoder():
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.float32).reshape(2, 3, 8, 8)
    e = PooledEncoder(4)(x)
    assert e.shape == (2, 48)
    assert e[0, 0] == x[0, 0, :2, :2].mean()
    assert PooledEncoder()(torch.ones(3, 7)).shape == (3, 7)


# ---------------------------------------------------------------- digits


def test_digits_generator_samples_are_feasible_when_recomputed(digits):
    model, generator, encoder = digits
    unit = _most_variable_unit(model, generator, model.fc1)
    lo, hi = _band_from_generator(model, generator, model.fc1, unit)
    sampler = NeuronInverseSet(model, model.fc1, generator=generator, encoder=encoder)
    res = sampler.sample(unit, (lo, hi), n_samples=24, batch_size=8, seed=0)
    assert res.inputs.shape == (24, 1, 8, 8) and res.codes.shape == (24, 8)
    assert res.encodings.shape == (24, 8)
    assert res.feasible_fraction >= 0.75
    with torch.no_grad():
        torch.testing.assert_close(generator(res.codes), res.inputs)
        with capture_layer(model.fc1) as cap:
            model(res.inputs)
    a = cap.output[:, unit]
    ok = res.feasible
    assert bool(((a[ok] >= lo) & (a[ok] <= hi)).all())
    assert not bool(((a[~ok] >= lo) & (a[~ok] <= hi)).any())
    # Distinct samples, not one point repeated.
    assert res.mean_pairwise_distance("encodings", feasible_only=True) > 0.1


def test_digits_intersection_of_two_layers(digits):
    model, generator, encoder = digits
    unit = _most_variable_unit(model, generator, model.fc1)
    lo, hi = _band_from_generator(model, generator, model.fc1, unit, q=(0.4, 0.9))

    def channel_mean(out):
        return out[:, 5].mean(dim=(1, 2))

    codes = torch.randn(256, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), capture_layer(model.conv3) as cap:
        model(generator(codes))
    c = channel_mean(cap.output)
    clo, chi = torch.quantile(c, torch.tensor([0.3, 0.9])).tolist()
    other = NeuronConstraint(model.conv3, channel_mean, (clo, chi))
    sampler = NeuronInverseSet(model, model.fc1, generator=generator, encoder=encoder)
    res = sampler.sample(
        unit, (lo, hi), n_samples=16, batch_size=8, additional_constraints=[other]
    )
    assert res.constraint_activations.shape == (16, 2)
    assert res.feasible_fraction >= 0.75
    with (
        torch.no_grad(),
        capture_layer(model.fc1) as c1,
        capture_layer(model.conv3) as c3,
    ):
        model(res.inputs)
    a1, a3 = c1.output[:, unit], channel_mean(c3.output)
    ok = res.feasible
    assert bool(((a1[ok] >= lo) & (a1[ok] <= hi)).all())
    assert bool(((a3[ok] >= clo) & (a3[ok] <= chi)).all())
    assert count_hooks(model) == 0


def test_digits_input_space_fft_parameterization(digits):
    model, _, _ = digits
    sampler = NeuronInverseSet(model, model.conv2)
    res = sampler.sample(
        (3, 4, 4), (0.5, None), n_samples=6, batch_size=3, input_shape=(1, 8, 8)
    )
    assert res.inputs.shape == (6, 1, 8, 8)
    assert res.inputs.min() >= 0 and res.inputs.max() <= 1
    assert bool(res.feasible.all())
    with torch.no_grad(), capture_layer(model.conv2) as cap:
        model(res.inputs)
    assert bool((cap.output[:, 3, 4, 4] >= 0.5).all())
    fig, ax = res.plot()
    assert ax.images


# ---------------------------------------------------------------- torchvision


def test_resnet18_layer_with_fft_images():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    layer = model.layer1[0].conv2
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture_layer(layer) as cap:
        model(x)
    a = cap.output[:, 7].mean(dim=(1, 2))
    band = (float(a.max()) + 0.05, None)  # above every random image

    def channel(out):
        return out[:, 7].mean(dim=(1, 2))

    res = NeuronInverseSet(model, layer).sample(
        channel,
        band,
        n_samples=4,
        batch_size=2,
        input_shape=(3, 32, 32),
        max_steps=150,
    )
    assert res.inputs.shape == (4, 3, 32, 32)
    with torch.no_grad(), capture_layer(layer) as cap:
        model(res.inputs)
    recomputed = channel(cap.output)
    assert bool(res.feasible.all())
    assert bool((recomputed >= band[0]).all())
    assert count_hooks(model) == 0


def test_googlenet_inception_branch():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.googlenet(
        weights=None, aux_logits=False, init_weights=False
    ).eval()
    layer = model.inception3a.branch2[1]

    def channel(out):
        return out[:, 3].mean(dim=(1, 2))

    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), capture_layer(layer) as cap:
        model(x)
    band = (1.5 * float(channel(cap.output).max()), None)
    res = NeuronInverseSet(model, layer).sample(
        channel,
        band,
        n_samples=2,
        batch_size=2,
        input_shape=(3, 32, 32),
        max_steps=150,
    )
    with torch.no_grad(), capture_layer(layer) as cap:
        model(res.inputs)
    assert bool(res.feasible.all())
    assert bool((channel(cap.output) >= band[0]).all())
    assert count_hooks(model) == 0


def test_top_range_is_fraction_of_maximum(logistic):
    from captum_inverseset.param import BoxParameterization

    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    z1, z2 = sampler.top_range(0, fraction=0.8, input_shape=(D,), seed=0)
    assert z2 is None
    # Same draw as the method: seed 0, 8 starting codes of the [0, 1] box.
    gen = torch.Generator().manual_seed(0)
    starts = BoxParameterization((D,)).random_codes(8, generator=gen)
    a0 = float(exact_logistic(torch.sigmoid(starts)).median())
    a_max = float(torch.sigmoid(WEIGHT.clamp(min=0).sum() + BIAS))
    # The true maximum is sigmoid(sum of positive weights + b); 100 Adam steps
    # through the box's sigmoid get within a few thousandths of it.
    expected = a0 + 0.8 * (a_max - a0)
    assert expected - 5e-3 <= z1 <= expected + 1e-6
    res = sampler.sample(0, "top", n_samples=6, batch_size=3, input_shape=(D,))
    assert res.activation_range[0] == pytest.approx(z1)
    assert bool(res.feasible.all())
    assert bool((exact_logistic(res.inputs) >= z1).all())
    with pytest.raises(ValueError, match="fraction"):
        sampler.sample(0, ("top", 1.5), n_samples=2, input_shape=(D,))


def test_repel_from_seeds_and_progress_bar(logistic):
    sampler = NeuronInverseSet(logistic, logistic.sigmoid)
    kw = dict(n_samples=9, batch_size=3, input_shape=(D,), seed=2)
    seeds_only = sampler.sample(0, (0.3, 0.6), repel_from="seeds", **kw)
    everyone = sampler.sample(0, (0.3, 0.6), show_progress=True, **kw)
    assert bool(seeds_only.feasible.all()) and bool(everyone.feasible.all())
    # Same seeds; later batches differ only through what they are repelled from.
    assert torch.equal(seeds_only.inputs[:3], everyone.inputs[:3])
    assert not torch.equal(seeds_only.inputs[6:], everyone.inputs[6:])


class TwoBumps(nn.Module):
    """f(x) = bump at 0.2 (height 1) + bump at 0.8 (height 2), x in [0, 1]."""

    def __init__(self) -> None:
        super().__init__()
        self.out = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.exp(-((x - 0.2) ** 2) / 0.02) + 2 * torch.exp(
            -((x - 0.8) ** 2) / 0.02
        )
        return self.out(f)


def test_restarts_escape_a_local_maximum():
    model = TwoBumps()
    sampler = NeuronInverseSet(model, model.out)
    kw = dict(n_samples=16, batch_size=16, input_shape=(1,), max_steps=200, seed=0)
    stuck = sampler.sample(0, (1.5, None), restart_every=None, **kw)
    # Without restarts the samples that climbed the lower bump stay there.
    assert 0 < int(stuck.feasible.sum()) < 16
    assert bool((stuck.inputs[~stuck.feasible] < 0.5).all())
    res = sampler.sample(0, (1.5, None), **kw)
    assert bool(res.feasible.all())
    assert bool((res.inputs > 0.5).all())
