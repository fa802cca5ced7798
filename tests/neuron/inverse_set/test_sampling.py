"""Issue 16's inverse-set items: diversity against the dataset baseline,
warnings for infeasible samples, the box parameterization's learning rate,
progress over steps, tuple and DataLoader inputs."""

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset import (
    BandUnreachableWarning,
    InfeasibleSamplesWarning,
    NeuronInverseSet,
)
from captum_inverseset._core.neuron.inverse_set import loop as loop_module
from captum_inverseset._core.neuron.inverse_set import probe as probe_module
from captum_inverseset._core.neuron.inverse_set.starts import farthest_point_order
from captum_inverseset._utils.distance import mean_pairwise_distance

D = 6
WEIGHT = torch.tensor([[3.0, -2.0, 1.0, 0.5, -1.0, 2.0]])


class Logistic(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(D, 1)
        self.sigmoid = nn.Sigmoid()
        self.calls = 0
        with torch.no_grad():
            self.linear.weight.copy_(WEIGHT)
            self.linear.bias.fill_(-1.5)

    def forward(self, x):
        self.calls += 1
        return self.sigmoid(self.linear(x))


class TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a, self.b = nn.Linear(3, 1), nn.Linear(2, 1)
        self.out = nn.Identity()

    def forward(self, x, y):
        return self.out(self.a(x) + self.b(y))


@pytest.fixture(scope="module")
def digits():
    from captum_inverseset.zoo import (
        digits_classifier,
        digits_encoder,
        digits_generator,
        load_digits_dataset,
    )

    model = digits_classifier().eval()
    train_x, _, test_x, test_y = load_digits_dataset()
    with torch.no_grad():
        own = model(test_x)[test_y == 3, 3]
    band = tuple(torch.quantile(own, torch.tensor([0.4, 0.8])).tolist())
    return model, digits_generator().eval(), digits_encoder().eval(), train_x, band


# ------------------------------------------------------------- (a) diversity


def test_farthest_point_order_picks_the_extremes_first():
    e = torch.tensor([[0.0], [1.0], [2.0], [10.0], [4.0]])
    # The first pick is the point farthest from the mean (3.4): 10; then the
    # one farthest from 10 (0), then from both (4, then 2 vs 1 ...).
    assert farthest_point_order(e, 3).tolist() == [3, 0, 4]


def test_dataset_baseline_is_what_picking_data_gives():
    model = Logistic()
    data = torch.rand(400, D, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        a = model(data)[:, 0]
    band = (0.6, 0.8)
    inside = data[(a >= 0.6) & (a <= 0.8)]
    res = NeuronInverseSet(model, model.sigmoid).sample(
        0, band, n_samples=10, batch_size=5, input_shape=(D,), data=data
    )
    base = res.data_baseline
    assert base["n_examined"] == 400 and base["n_in_band"] == inside.shape[0]
    assert base["covers_band"] and any("covers the band" in n for n in res.notes)
    far = inside[farthest_point_order(inside, 10)]  # encodings = inputs here
    assert base["farthest"]["inputs"] == pytest.approx(mean_pairwise_distance(far))
    assert base["farthest"]["encodings"] >= base["random"]["encodings"]
    assert res.starts == ["data"] and bool(res.feasible.all())
    # Starting from the farthest in-band examples and spreading from there.
    assert res.mean_pairwise_distance() >= base["farthest"]["encodings"]


def test_shipped_models_beat_the_farthest_data_pick(digits):
    model, generator, encoder, train_x, band = digits
    sampler = NeuronInverseSet(model, model.fc2, generator=generator, encoder=encoder)
    for data in (None, train_x):
        res = sampler.sample(3, band, n_samples=32, batch_size=8, seed=0, data=data)
        assert res.feasible_fraction == 1.0
        if data is not None:
            far = res.data_baseline["farthest"]["encodings"]
    with_data = res.mean_pairwise_distance()
    assert with_data >= far
    summary = res.summary()
    assert summary["fraction_in_band"] == 1.0
    assert summary["spread_encodings"] == pytest.approx(with_data)


def test_spread_phase_spends_steps_on_spread_with_the_band_kept():
    model = Logistic()
    sampler = NeuronInverseSet(model, model.sigmoid)
    kw = dict(n_samples=12, batch_size=6, input_shape=(D,), seed=0, diversity_weight=1)
    early = sampler.sample(0, (0.4, 0.6), spread_steps=0, **kw)
    spread = sampler.sample(0, (0.4, 0.6), spread_steps=40, **kw)
    assert bool(early.feasible.all()) and bool(spread.feasible.all())
    assert int(spread.steps.min()) >= 40
    assert spread.mean_pairwise_distance() > 1.05 * early.mean_pairwise_distance()


def test_screen_starts_from_prior_draws_in_the_band(digits):
    model, generator, encoder, _, band = digits
    sampler = NeuronInverseSet(model, model.fc2, generator=generator, encoder=encoder)
    kw = dict(n_samples=8, batch_size=8, spread_steps=0, seed=0)
    res = sampler.sample(3, band, **kw)
    cold = sampler.sample(3, band, screen=0, **kw)
    # Started from the screened draws nearest the band: in it sooner.
    assert res.starts == ["screen"] and cold.starts == ["random"]
    assert int(res.steps.max()) < int(cold.steps.max())
    assert res.feasible_fraction == 1.0


# ------------------------------------------------------- (b) warnings


def test_infeasible_samples_warn_in_sample_and_attribute():
    model = Logistic()
    sampler = NeuronInverseSet(model, model.sigmoid)
    with pytest.warns(InfeasibleSamplesWarning, match="5 of 5"):
        sampler.sample(0, (0.999999, 1.0), n_samples=5, input_shape=(D,), max_steps=30)
    with pytest.warns(InfeasibleSamplesWarning, match="3 of 3"):
        sampler.attribute(torch.zeros(3, D), 0, (0.999999, 1.0), max_steps=30)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sampler.sample(0, (0.3, 0.6), n_samples=4, input_shape=(D,))


def test_unreachable_band_warns_within_the_first_steps():
    model = Logistic()
    seen = []

    def record(message, category, *args, **kwargs):
        seen.append((category, model.calls))

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        NeuronInverseSet(model, model.sigmoid).sample(
            0, (1.5, 2.0), n_samples=4, batch_size=4, input_shape=(D,)
        )
    early = [calls for cat, calls in seen if cat is BandUnreachableWarning]
    # A sigmoid never reaches 1.5: the warning comes ~20 steps in, out of 300.
    assert early and early[0] < 60
    assert any(cat is InfeasibleSamplesWarning for cat, _ in seen)


# ------------------------------------------------ (c) box and learning rate


def test_learning_rate_reaches_the_box_codes():
    """A band out of reach for max_steps = restart_every: the samples used to
    be fresh noise restarted at the last step, the same for every lr."""
    model = Logistic()
    sampler = NeuronInverseSet(model, model.sigmoid)
    kw = dict(n_samples=4, batch_size=4, input_shape=(D,), max_steps=50)
    warnings.simplefilter("ignore", InfeasibleSamplesWarning)
    slow = sampler.sample(0, (0.999999, 1.0), lr=0.01, **kw)
    fast = sampler.sample(0, (0.999999, 1.0), lr=0.5, **kw)
    assert not torch.equal(slow.inputs, fast.inputs)
    # Each run returns its closest iterate, and a larger step gets closer.
    assert float(fast.activations.mean()) > float(slow.activations.mean())


def test_box_on_resnet18_climbs_like_activation_maximisation():
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    layer = model.layer2[0].conv2

    def channel(out):
        return out[:, 7].mean(dim=(1, 2))

    sampler = NeuronInverseSet(model, layer)
    shape = (3, 32, 32)
    a0, _ = sampler.top_range(
        channel,
        fraction=1e-9,
        input_shape=shape,
        image_parameterization="box",
        transforms=None,
        n_starts=2,
        n_steps=1,
    )
    top, _ = sampler.top_range(
        channel,
        fraction=1.0,
        input_shape=shape,
        image_parameterization="box",
        transforms=None,
        n_starts=2,
        n_steps=50,
    )
    warnings.simplefilter("ignore", InfeasibleSamplesWarning)
    res = sampler.sample(
        channel,
        (top + 10 * (top - a0), None),
        n_samples=2,
        batch_size=2,
        input_shape=shape,
        image_parameterization="box",
        transforms=None,
        max_steps=50,
        lr=0.1,
        diversity_weight=2.0,
    )
    # Out of reach, but the samples climbed well away from their start (a box
    # that stalls, or restarts from noise at the end, is returned near a0);
    # the band's pull and the spread term make them slower than plain
    # activation maximisation. Random transforms are off in both runs, so the
    # comparison does not depend on which jitters and rotations were drawn.
    assert float(res.activations.min()) > a0 + 0.25 * (top - a0)


# ----------------------------------------------------------- (d) progress


class _Bar:
    bars = []

    def __init__(self, total, show, desc):
        self.total, self.n, self.desc = total, 0, desc
        _Bar.bars.append(self)

    def update(self, n=1):
        self.n += n

    def set_postfix(self, **kw):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        pass


def test_progress_bars_count_optimisation_steps(monkeypatch):
    monkeypatch.setattr(loop_module, "progress", _Bar)
    monkeypatch.setattr(probe_module, "progress", _Bar)
    _Bar.bars = []
    model = Logistic()
    sampler = NeuronInverseSet(model, model.sigmoid)
    sampler.sample(
        0,
        "top",
        n_samples=6,
        batch_size=3,
        input_shape=(D,),
        max_steps=40,
        show_progress=True,
    )
    top, main = _Bar.bars
    assert top.total == 100 and top.n == 100  # top_range's Adam steps
    assert main.total == 2 * 40 and main.n == main.total
    assert "steps" in main.desc


# ------------------------------------------------ (e) tuples and DataLoaders


def test_tuple_inputs_are_optimised_together():
    model = TwoInputs()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, generator=g), torch.rand(4, 2, generator=g)
    with torch.no_grad():
        spread = model(torch.rand(500, 3, generator=g), torch.rand(500, 2, generator=g))
    lo, hi = torch.quantile(spread[:, 0], torch.tensor([0.7, 0.75])).tolist()
    out = NeuronInverseSet(model, model.out).attribute(
        (x, y), 0, activation_range=(lo, hi)
    )
    assert (
        isinstance(out, tuple) and out[0].shape == x.shape and out[1].shape == y.shape
    )
    with torch.no_grad():
        value = model(*out)[:, 0]
    assert bool(((value >= lo) & (value <= hi)).all())
    assert 0 <= float(torch.cat(out, 1).min()) and float(torch.cat(out, 1).max()) <= 1


def test_dataloader_inputs_equal_tensor_inputs():
    model = Logistic()
    sampler = NeuronInverseSet(model, model.sigmoid)
    x = torch.rand(6, D, generator=torch.Generator().manual_seed(0))
    loader = DataLoader(TensorDataset(x, torch.zeros(6)), batch_size=3)
    from_loader = sampler.attribute(loader, 0, activation_range=(0.4, 0.6))
    from_tensor = sampler.attribute(x, 0, activation_range=(0.4, 0.6), batch_size=3)
    torch.testing.assert_close(from_loader, from_tensor)
