import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset import NeuronShapley
from captum_inverseset._core.layer.neuron_shapley import NeuronShapleyResult
from captum_inverseset._utils.hooks import count_hooks

from ._shapley_models import brute_force_shapley, make_mlp


def _data(n=40, seed=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


@pytest.mark.parametrize("metric", ["accuracy", "loss"])
@pytest.mark.parametrize("removal", ["mean", "zero"])
def test_exact_equals_brute_force_by_hand(metric, removal):
    model = make_mlp()
    x, y = _data()
    expected = brute_force_shapley(model, x, y, metric, removal)
    ns = NeuronShapley(model, model.relu)
    values, stats = ns.attribute(
        x, target=y, metric=metric, removal=removal, exact=True, return_stats=True
    )
    assert values.shape == (5,)
    torch.testing.assert_close(stats.values, expected, atol=1e-6, rtol=0)
    # efficiency: values sum to V(all) - V(none)
    assert (
        abs(stats.values.sum().item() - (stats.value_full - stats.value_empty)) < 1e-9
    )
    assert expected.abs().max() > 1e-3  # the game is not trivial


def test_monte_carlo_converges_within_standard_errors():
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    exact = ns.attribute(x, target=y, metric="loss", exact=True)
    values, stats = ns.attribute(
        x, target=y, metric="loss", n_permutations=300, seed=3, return_stats=True
    )
    assert stats.n_permutations == 300
    assert (stats.counts == 300).all()
    assert (stats.standard_errors > 0).all()
    err = (values - exact).abs()
    assert (err <= 4 * stats.standard_errors.float() + 1e-6).all(), (err, stats)
    # untruncated permutations telescope: efficiency holds exactly
    total = stats.values.sum().item()
    assert abs(total - (stats.value_full - stats.value_empty)) < 1e-9
    # fewer permutations give larger standard errors (1/sqrt(n) scaling)
    _, few = ns.attribute(
        x, target=y, metric="loss", n_permutations=20, seed=3, return_stats=True
    )
    assert few.standard_errors.mean() > stats.standard_errors.mean()


def test_symmetric_duplicates_equal_and_dead_neuron_zero():
    model = make_mlp(hidden=5)
    with torch.no_grad():
        model.fc1.weight[1] = model.fc1.weight[0]
        model.fc1.bias[1] = model.fc1.bias[0]
        model.fc2.weight[:, 1] = model.fc2.weight[:, 0]
        model.fc1.weight[4] = 0.0
        model.fc1.bias[4] = -1.0  # relu output always 0
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    exact = ns.attribute(x, target=y, metric="loss", removal="zero", exact=True)
    assert abs(exact[0].item() - exact[1].item()) < 1e-9
    assert exact[4].item() == 0.0
    assert exact[0].abs() > 1e-3
    mc = ns.attribute(x, target=y, metric="loss", removal="zero", n_permutations=8)
    assert mc[4].item() == 0.0


def test_callable_and_class_accuracy_metrics():
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    calls = []

    def metric(out, target):
        calls.append(out.shape[0])
        return out[:, 0].mean()

    v = ns.attribute(x, target=y, metric=metric, exact=True, removal="zero")
    # additive game: output 0 is linear in the kept units, so phi_j is the
    # unit's own mean contribution
    with torch.no_grad():
        h = model.relu(model.fc1(x))
    expected = (h * model.fc2.weight[0]).mean(0)
    torch.testing.assert_close(v, expected, atol=1e-5, rtol=0)
    assert set(calls) == {40}
    # class_accuracy only looks at the examples of one class
    v_cls, st = ns.attribute(
        x,
        target=y,
        metric="class_accuracy",
        metric_class=1,
        exact=True,
        return_stats=True,
    )
    sel = y == 1
    expected_full = (model(x)[sel].argmax(1) == 1).double().mean().item()
    assert abs(st.value_full - expected_full) < 1e-12


def test_target_none_uses_model_predictions():
    model = make_mlp()
    x, _ = _data()
    ns = NeuronShapley(model, model.relu)
    _, st = ns.attribute(x, exact=True, return_stats=True)
    assert st.value_full == 1.0


def test_dataloader_equals_tensor_inputs():
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    a = ns.attribute(x, target=y, metric="loss", n_permutations=6, seed=5)
    loader = DataLoader(TensorDataset(x, y), batch_size=15)
    b = ns.attribute(loader, metric="loss", n_permutations=6, seed=5)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    c = ns.attribute(
        x,
        target=y,
        metric="loss",
        n_permutations=6,
        seed=5,
        batch_size=7,
        coalitions_per_batch=2,
    )
    torch.testing.assert_close(a, c, atol=1e-6, rtol=0)


def test_dataloader_of_inputs_only_takes_target():
    """A loader yielding inputs only: ``target=`` gives the labels in the
    loader's order (or one int); a loader yielding labels takes none."""
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    a = ns.attribute(x, target=y, metric="loss", n_permutations=6, seed=5)
    inputs_only = DataLoader(x, batch_size=15)
    b = ns.attribute(inputs_only, target=y, metric="loss", n_permutations=6, seed=5)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    c = ns.attribute(x, target=2, metric="loss", n_permutations=6, seed=5)
    d = ns.attribute(inputs_only, target=2, metric="loss", n_permutations=6, seed=5)
    torch.testing.assert_close(c, d, atol=1e-6, rtol=0)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="target must be None"):
        ns.attribute(DataLoader(TensorDataset(x, y), batch_size=15), target=y)


def test_truncation_saves_evaluations_and_bounds_efficiency():
    model = make_mlp(hidden=8)
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    _, plain = ns.attribute(
        x,
        target=y,
        n_permutations=10,
        seed=0,
        coalitions_per_batch=1,
        return_stats=True,
    )
    tol = 0.1
    _, trunc = ns.attribute(
        x,
        target=y,
        n_permutations=10,
        seed=0,
        truncation_tolerance=tol,
        coalitions_per_batch=1,
        return_stats=True,
    )
    assert plain.n_evaluations == 10 * 7
    assert trunc.n_evaluations < plain.n_evaluations
    gap = trunc.value_full - trunc.value_empty
    assert abs(trunc.values.sum().item() - gap) <= tol + 1e-9


def test_bandit_top_k_finds_exact_top_k_with_fewer_evaluations():
    model = make_mlp(hidden=8, seed=1)
    with torch.no_grad():
        model.fc2.weight[:, :2] *= 4  # two clearly important units
    x, _ = _data(n=60)
    ns = NeuronShapley(model, model.relu)
    kw = dict(metric="loss", n_permutations=300, coalitions_per_batch=4)
    exact = ns.attribute(x, metric="loss", exact=True)
    _, plain = ns.attribute(x, return_stats=True, **kw)
    _, bandit = ns.attribute(x, top_k=2, return_stats=True, **kw)
    assert bandit.top_k_settled
    assert bandit.n_permutations < 300  # stopped early
    top_exact = set(torch.argsort(exact, descending=True)[:2].tolist())
    top_bandit = set(torch.argsort(bandit.values, descending=True)[:2].tolist())
    assert top_bandit == top_exact
    assert bandit.n_evaluations < 0.6 * plain.n_evaluations
    assert (bandit.counts < plain.counts).any()
    assert (bandit.lower_bounds <= bandit.values).all()
    assert (bandit.upper_bounds >= bandit.values).all()


def test_bandit_walks_the_same_coalitions_for_players_it_still_samples():
    # The bandit skips the evaluations of settled players, not the order of
    # removal: a player sampled in every permutation gets the same
    # contributions as in plain Monte Carlo with the same seed.
    model = make_mlp(hidden=8, seed=1)
    with torch.no_grad():
        model.fc2.weight[:, :2] *= 4
    x, _ = _data(n=60)
    ns = NeuronShapley(model, model.relu)
    kw = dict(metric="loss", seed=3, return_stats=True)
    _, bandit = ns.attribute(x, top_k=2, n_permutations=120, **kw)
    # the same permutations, wherever the bandit stopped
    _, plain = ns.attribute(x, n_permutations=bandit.n_permutations, **kw)
    always = bandit.counts == bandit.n_permutations
    assert bool(always.any()) and not bool(always.all())
    torch.testing.assert_close(
        bandit.values[always], plain.values[always], rtol=0, atol=1e-6
    )
    assert bandit.n_evaluations < plain.n_evaluations


def test_round_callback_sees_statistics_and_can_stop_the_run():
    model = make_mlp(hidden=6, seed=0)
    x, _ = _data(n=20)
    ns = NeuronShapley(model, model.relu)
    seen = []

    def callback(stats):
        seen.append((stats.n_permutations, stats.counts.clone()))
        return stats.n_permutations >= 8

    ns._round_callback = callback
    _, st = ns.attribute(
        x, n_permutations=40, permutations_per_round=4, return_stats=True
    )
    assert [n for n, _ in seen] == [4, 8]
    assert st.n_permutations == 8
    assert torch.equal(seen[-1][1], st.counts)


def test_multi_layer_digits_prefix_cache_matches_hooks():
    from captum_inverseset.zoo import digits_classifier, load_digits_dataset

    model = digits_classifier()
    data = load_digits_dataset()
    x, y = data.test_inputs[:24], data.test_labels[:24]
    layers = [model.conv1, model.conv3]
    fast = NeuronShapley(model, layers)
    slow = NeuronShapley(model, layers, prefix_cache=False)
    a, sa = fast.attribute(x, target=y, n_permutations=2, return_stats=True)
    b, sb = slow.attribute(x, target=y, n_permutations=2, return_stats=True)
    assert sa.prefix_cache and not sb.prefix_cache
    assert [t.shape for t in a] == [torch.Size([16]), torch.Size([32])]
    for ta, tb in zip(a, b):
        torch.testing.assert_close(ta, tb, atol=1e-6, rtol=0)
    assert sa.layer_names == ["conv1", "conv3"] and sa.layer_sizes == [16, 32]
    assert abs(sa.values.sum().item() - (sa.value_full - sa.value_empty)) < 1e-9
    assert count_hooks(model) == 0


def _three_paths(model, layers, x, y, **kwargs):
    """Values and stats of the segment, first-layer prefix and hook paths."""
    out = []
    for cache, segments in [(True, True), (True, False), (False, False)]:
        ns = NeuronShapley(model, layers, prefix_cache=cache)
        ns._segment_cache = segments
        out.append(ns.attribute(x, target=y, return_stats=True, **kwargs))
    return out


@pytest.mark.parametrize("coalitions_per_batch", [None, 5])
def test_segment_cache_digits_walk_equals_hooks(coalitions_per_batch):
    from captum_inverseset.zoo import digits_classifier, load_digits_dataset

    model = digits_classifier()
    data = load_digits_dataset()
    x, y = data.test_inputs[:30], data.test_labels[:30]
    layers = [model.conv1, model.conv2, model.conv3]
    (a, sa), (b, sb), (c, sc) = _three_paths(
        model,
        layers,
        x,
        y,
        metric="loss",
        n_permutations=3,
        coalitions_per_batch=coalitions_per_batch,
    )
    assert sa.segment_cache and sa.prefix_cache
    assert not sb.segment_cache and sb.prefix_cache
    assert not sc.segment_cache and not sc.prefix_cache
    for ta, tb, tc in zip(a, b, c):
        torch.testing.assert_close(ta, tc, atol=1e-6, rtol=0)
        torch.testing.assert_close(tb, tc, atol=1e-6, rtol=0)
    assert abs(sa.values.sum().item() - (sa.value_full - sa.value_empty)) < 1e-9
    assert sa.n_evaluations == sc.n_evaluations
    assert count_hooks(model) == 0


def test_segment_cache_falls_back_on_a_resnet_block():
    from torchvision.models.resnet import BasicBlock

    torch.manual_seed(0)
    block = BasicBlock(8, 8).eval()
    # Stem + block: the skip connection crosses block.conv1 and block.conv2,
    # so the model is no chain; the first-layer prefix still carries the skip.
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), block).eval()
    head = nn.Sequential(model, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4)).eval()  # fmt: skip
    x = torch.rand(12, 3, 6, 6)
    y = torch.arange(12) % 4
    (a, sa), (b, sb), (c, sc) = _three_paths(
        head, [block.conv1, block.conv2], x, y, metric="loss", n_permutations=2
    )
    assert not sa.segment_cache and sa.prefix_cache and not sc.prefix_cache
    for ta, tb, tc in zip(a, b, c):
        torch.testing.assert_close(ta, tc, atol=1e-6, rtol=0)
        torch.testing.assert_close(tb, tc, atol=1e-6, rtol=0)
    # The block alone: its input is the skip, nothing can be cached.
    (d, sd), _, (e, _) = _three_paths(
        block, [block.conv1, block.conv2], torch.rand(6, 8, 4, 4), None,
        metric=lambda out, _: out.mean(), n_permutations=2,
    )  # fmt: skip
    assert not sd.segment_cache and not sd.prefix_cache
    for td, te in zip(d, e):
        torch.testing.assert_close(td, te, atol=1e-6, rtol=0)


def test_untraceable_forward_falls_back_to_hooks():
    model = make_mlp()
    x, y = _data()

    def forward(inp, scale):
        return model(inp) * scale

    ns = NeuronShapley(forward, model.relu)
    a, st = ns.attribute(
        x,
        target=y,
        additional_forward_args=(2.0,),
        exact=True,
        metric="accuracy",
        return_stats=True,
    )
    assert not st.prefix_cache
    b = NeuronShapley(model, model.relu).attribute(x, target=y, exact=True)
    torch.testing.assert_close(a, b)


def test_result_save_load_and_plot(tmp_path):
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    ns.attribute(x, target=y, n_permutations=4)
    res = ns.last_result
    path = res.save(str(tmp_path / "r.pt"))
    back = NeuronShapleyResult.load(path)
    torch.testing.assert_close(back.values, res.values)
    assert back.layer_sizes == [5] and back.n_permutations == 4
    fig, ax = res.plot(top=3)
    assert len(ax.patches) == 3
    fig2, ax2 = res.plot(plt_fig_axis=(fig, ax))
    assert ax2 is ax
    assert res.top_players(1)[0][0] == "relu"


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(metric="f1"), "metric"),
        (dict(metric=lambda o, t: o.mean(0)), "scalar"),
        (dict(metric=lambda o, t: torch.tensor(float("nan"))), "NaN"),
        (dict(n_permutations=0), "n_permutations"),
        (dict(top_k=5), "top_k"),
        (dict(removal="noise"), "removal"),
        (dict(metric="class_accuracy"), "metric_class"),
        (dict(truncation_tolerance=-1.0), "truncation_tolerance"),
        (dict(bandit_delta=2.0), "bandit_delta"),
    ],
)
def test_validation_errors(kwargs, match):
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    with pytest.raises(ValueError, match=match):
        ns.attribute(x, target=y, **{"n_permutations": 2, **kwargs})
    assert count_hooks(model) == 0


def test_input_errors():
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    with pytest.raises(ValueError, match="empty"):
        ns.attribute(x[:0], target=y[:0])
    with pytest.raises(ValueError, match="target"):
        ns.attribute(x, target=y[:5])
    with pytest.raises(ValueError, match="metric_class"):
        ns.attribute(
            x,
            target=torch.zeros(40, dtype=torch.long),
            metric="class_accuracy",
            metric_class=2,
            n_permutations=1,
        )
    big = make_mlp(hidden=21)
    with pytest.raises(ValueError, match="exact"):
        NeuronShapley(big, big.relu).attribute(x, target=y, exact=True)
    with pytest.raises(ValueError, match="submodule"):
        NeuronShapley(model, nn.ReLU())


def test_show_progress_does_not_change_values(capsys):
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    a = ns.attribute(x, target=y, n_permutations=4, show_progress=True)
    assert "NeuronShapley" in capsys.readouterr().err
    b = ns.attribute(x, target=y, n_permutations=4)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_round_of_walks_in_shared_passes_equals_one_coalition_per_pass():
    """Without truncation a round's walks share passes; with one coalition
    per pass (the sequential scheme) the values and counts are the same."""
    model = make_mlp(hidden=6, seed=3)
    x, y = _data(n=25, seed=5)
    kw = dict(
        target=y,
        metric="loss",
        n_permutations=12,
        permutations_per_round=12,
        seed=2,
        return_stats=True,
    )
    ns = NeuronShapley(model, model.relu)
    _, one = ns.attribute(x, coalitions_per_batch=1, **kw)
    _, many = ns.attribute(x, coalitions_per_batch=64, **kw)
    # one round; 64 rows hold its 12 walks of 5 needed coalitions: one pass
    passes = many.n_forward_passes - 1  # minus the pass for V(all), V(none)
    assert passes == 1, passes
    # (with one coalition per pass, V(all) and V(none) take two passes)
    assert one.n_forward_passes - 2 == one.n_evaluations == many.n_evaluations
    torch.testing.assert_close(many.values, one.values, atol=1e-6, rtol=0)
    assert torch.equal(many.counts, one.counts)


def test_activation_bytes_per_example_counts_leaf_outputs_and_removes_hooks():
    from captum_inverseset._core.layer._shapley_game import (
        activation_bytes_per_example,
        auto_coalitions_per_batch,
    )

    model = make_mlp(hidden=5)  # fc1 (5) -> relu (5) -> fc2 (3) floats
    x = torch.randn(7, 3)
    assert activation_bytes_per_example(model, (x,), None) == (5 + 5 + 3) * 4
    assert count_hooks(model) == 0
    assert activation_bytes_per_example(lambda t: model(t), (x,), None) is None

    def boom(module, args):
        raise RuntimeError("inside the layer")

    handle = model.fc2.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="inside the layer"):
            activation_bytes_per_example(model, (x,), None)
    finally:
        handle.remove()
    assert count_hooks(model) == 0
    # CPU: a fixed number of examples per pass, capped at 128 coalitions
    assert auto_coalitions_per_batch(100) == 10
    assert auto_coalitions_per_batch(100, segment_cache=True) == 81
    assert auto_coalitions_per_batch(1, bytes_per_example=4) == 128


def test_bernstein_radius_is_maurer_pontil():
    """sqrt(2 var log(2/delta) / n) + 7 R log(2/delta) / (3 (n - 1))."""
    import math

    from captum_inverseset._core.layer.neuron_shapley import _bernstein_radius

    var = torch.tensor([0.04, 0.04, 0.0], dtype=torch.float64)
    n = torch.tensor([10.0, 1.0, 4.0], dtype=torch.float64)
    r = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    got = _bernstein_radius(var, n, r, delta=0.1)
    log_term = math.log(20.0)
    expected0 = math.sqrt(2 * 0.04 * log_term / 10) + 7 * log_term / 27
    assert got[0].item() == pytest.approx(expected0, rel=1e-12)
    assert math.isinf(got[1].item())  # one sample: no bound yet
    assert got[2].item() == pytest.approx(7 * 0.5 * log_term / 9, rel=1e-12)
