import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset import (
    NeuronShapley,
    NeuronShapleyResult,
    NeuronShapleyWarning,
)
from captum_inverseset._utils.hooks import count_hooks

from ._shapley_models import brute_force_shapley, make_mlp


def run(ns, *args, **kwargs):
    """The values as ``attribute`` returns them (one tensor, or one per layer
    for several layers) and the :class:`NeuronShapleyResult` of ``interpret``."""
    result = ns.interpret(*args, **kwargs)
    values = tuple(v.float() for v in result.values_per_layer())
    return (values if len(values) > 1 else values[0]), result


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
    values, stats = run(ns, x, target=y, metric=metric, removal=removal, exact=True)
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
    values, stats = run(ns, x, target=y, metric="loss", n_permutations=300, seed=3)
    assert stats.n_permutations == 300
    assert (stats.counts == 300).all()
    assert (stats.standard_errors > 0).all()
    err = (values - exact).abs()
    assert (err <= 4 * stats.standard_errors.float() + 1e-6).all(), (err, stats)
    # untruncated permutations telescope: efficiency holds exactly
    total = stats.values.sum().item()
    assert abs(total - (stats.value_full - stats.value_empty)) < 1e-9
    # fewer permutations give larger standard errors (1/sqrt(n) scaling)
    _, few = run(ns, x, target=y, metric="loss", n_permutations=20, seed=3)
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
    # class_accuracy only looks at the examples of one class (none of class 1
    # is classified right, with or without the players: a trivial game)
    with pytest.warns(NeuronShapleyWarning, match="V\\(N\\) == V\\(empty\\)"):
        v_cls, st = run(
            ns, x, target=y, metric="class_accuracy", metric_class=1, exact=True
        )
    sel = y == 1
    expected_full = (model(x)[sel].argmax(1) == 1).double().mean().item()
    assert abs(st.value_full - expected_full) < 1e-12


def test_target_none_uses_model_predictions():
    model = make_mlp()
    x, _ = _data()
    ns = NeuronShapley(model, model.relu)
    _, st = run(ns, x, exact=True)
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
    _, plain = run(
        ns,
        x,
        target=y,
        n_permutations=10,
        seed=0,
        coalitions_per_batch=1,
    )
    tol = 0.1
    _, trunc = run(
        ns,
        x,
        target=y,
        n_permutations=10,
        seed=0,
        truncation_tolerance=tol,
        coalitions_per_batch=1,
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
    _, plain = run(ns, x, **kw)
    _, bandit = run(ns, x, top_k=2, **kw)
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
    kw = dict(metric="loss", seed=3)
    _, bandit = run(ns, x, top_k=2, n_permutations=120, **kw)
    # the same permutations, wherever the bandit stopped
    _, plain = run(ns, x, n_permutations=bandit.n_permutations, **kw)
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

    _, st = run(ns, x, n_permutations=40, permutations_per_round=4, callback=callback)
    assert [n for n, _ in seen] == [4, 8]
    assert st.n_permutations == 8
    assert torch.equal(seen[-1][1], st.counts)


def test_multi_layer_digits_prefix_cache_matches_hooks():
    from captum_inverseset.zoo import digits_classifier, load_digits_dataset

    model = digits_classifier()
    data = load_digits_dataset()
    x, y = data.test_inputs[:24], data.test_labels[:24]
    layers = [model.conv1, model.conv3]
    ns = NeuronShapley(model, layers)
    a, sa = run(ns, x, target=y, n_permutations=2)
    b, sb = run(ns, x, target=y, n_permutations=2, engine="hooks")
    assert sa.prefix_cache and not sb.prefix_cache
    assert [t.shape for t in a] == [torch.Size([16]), torch.Size([32])]
    for ta, tb in zip(a, b):
        torch.testing.assert_close(ta, tb, atol=1e-6, rtol=0)
    assert sa.layer_names == ["conv1", "conv3"] and sa.layer_sizes == [16, 32]
    assert abs(sa.values.sum().item() - (sa.value_full - sa.value_empty)) < 1e-9
    assert count_hooks(model) == 0


def _three_paths(model, layers, x, y, engines=("auto", "prefix", "hooks"), **kwargs):
    """Values and results of the default engine, the first-layer prefix
    engine and the reference hook engine."""
    ns = NeuronShapley(model, layers)
    return [run(ns, x, target=y, engine=engine, **kwargs) for engine in engines]


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
    # the skip crosses the player layers: "auto" takes the graph engine
    assert sa.engine == "graph" and sb.engine == "prefix" and sc.engine == "hooks"
    assert not sa.segment_cache and sa.prefix_cache and not sc.prefix_cache
    for ta, tb, tc in zip(a, b, c):
        torch.testing.assert_close(ta, tc, atol=1e-6, rtol=0)
        torch.testing.assert_close(tb, tc, atol=1e-6, rtol=0)
    # The block alone: its input is the skip, no prefix to split off; the
    # graph engine still applies.
    kw = dict(metric=lambda out, _: out.mean(), n_permutations=2)
    xb = torch.rand(6, 8, 4, 4)
    (d, sd), (e, _) = _three_paths(
        block, [block.conv1, block.conv2], xb, None, ("auto", "hooks"), **kw
    )
    assert not sd.segment_cache and sd.engine == "graph"
    for td, te in zip(d, e):
        torch.testing.assert_close(td, te, atol=1e-6, rtol=0)
    for engine in ("prefix", "segments", "incremental"):
        with pytest.raises(ValueError, match=f"engine='{engine}' does not apply"):
            NeuronShapley(block, [block.conv1, block.conv2]).attribute(
                xb, engine=engine, **kw
            )


def test_untraceable_forward_falls_back_to_hooks():
    model = make_mlp()
    x, y = _data()

    def forward(inp, scale):
        return model(inp) * scale

    ns = NeuronShapley(forward, model.relu)
    a, st = run(
        ns,
        x,
        target=y,
        additional_forward_args=(2.0,),
        exact=True,
        metric="accuracy",
    )
    assert not st.prefix_cache
    b = NeuronShapley(model, model.relu).attribute(x, target=y, exact=True)
    torch.testing.assert_close(a, b)


def test_result_save_load_and_plot(tmp_path):
    model = make_mlp()
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    res = ns.interpret(x, target=y, n_permutations=4)
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
    )
    ns = NeuronShapley(model, model.relu)
    _, one = run(ns, x, coalitions_per_batch=1, **kw)
    _, many = run(ns, x, coalitions_per_batch=64, **kw)
    # one round; 64 rows hold its 12 walks of 5 needed coalitions: one pass
    passes = many.n_forward_passes - 1  # minus the pass for V(all), V(none)
    assert passes == 1, passes
    # (with one coalition per pass, V(all) and V(none) take two passes)
    assert one.n_forward_passes - 2 == one.n_evaluations == many.n_evaluations
    torch.testing.assert_close(many.values, one.values, atol=1e-6, rtol=0)
    assert torch.equal(many.counts, one.counts)


def test_deprecated_forms_still_work_with_a_future_warning():
    model = make_mlp()
    x, y = _data()
    result = NeuronShapley(model, model.relu).interpret(x, target=y, n_permutations=4)
    ns = NeuronShapley(model, model.relu)
    with pytest.warns(FutureWarning, match="interpret"):
        values, stats = ns.attribute(x, target=y, n_permutations=4, return_stats=True)
    torch.testing.assert_close(stats.values, result.values, atol=0, rtol=0)
    torch.testing.assert_close(values, result.values.float(), atol=0, rtol=0)
    with pytest.warns(FutureWarning, match="interpret"):
        assert ns.last_result is stats
    with pytest.warns(FutureWarning, match="engine='hooks'"):
        hooks = NeuronShapley(model, model.relu, prefix_cache=False)
    assert hooks.interpret(x, target=y, n_permutations=4).engine == "hooks"
    with pytest.raises(TypeError, match="return_stats"):
        ns.interpret(x, target=y, return_stats=True)
    with pytest.raises(TypeError, match="n_permutation"):
        ns.interpret(x, target=y, n_permutation=4)


def test_equal_ends_warn_that_every_value_is_zero():
    model = make_mlp()
    with torch.no_grad():
        model.fc2.weight.zero_()  # the output ignores every player
    x, y = _data()
    ns = NeuronShapley(model, model.relu)
    with pytest.warns(NeuronShapleyWarning, match="V\\(N\\) == V\\(empty\\)"):
        values = ns.attribute(x, target=y, n_permutations=3)
    assert torch.equal(values, torch.zeros(5))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", NeuronShapleyWarning)
        intact = make_mlp()
        NeuronShapley(intact, intact.relu).attribute(x, target=y, n_permutations=3)


def test_game_measures_activation_bytes_and_removes_hooks():
    from captum_inverseset._core.layer.neuron_shapley.engines.base import (
        examples_per_pass,
    )
    from captum_inverseset._core.layer.neuron_shapley.game import ShapleyGame
    from captum_inverseset._core.layer.neuron_shapley.metrics import resolve_metric
    from captum_inverseset._core.layer.neuron_shapley.removal import resolve_removal

    model = make_mlp(hidden=5)  # fc1 (5) -> relu (5) -> fc2 (3) floats
    x = torch.randn(7, 3)
    batches = [((x,), torch.zeros(7, dtype=torch.long), None)]
    parts = (resolve_metric("loss"), resolve_removal("mean"))
    game = ShapleyGame(model, [model.relu], batches, *parts)
    assert game.bytes_per_example == (5 + 5 + 3) * 4
    assert count_hooks(model) == 0
    assert ShapleyGame(lambda t: model(t), [model.relu], batches, *parts
                       ).bytes_per_example is None  # fmt: skip

    def boom(module, args):
        raise RuntimeError("inside the layer")

    handle = model.fc2.register_forward_pre_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="inside the layer"):
            ShapleyGame(model, [model.relu], batches, *parts)
    finally:
        handle.remove()
    assert count_hooks(model) == 0
    # CPU: a fixed number of examples per pass, capped at 128 coalitions
    cpu = torch.device("cpu")
    assert examples_per_pass(100, cpu, None, 1024, 128) == 10
    assert examples_per_pass(100, cpu, None, 8192, 128) == 81
    assert examples_per_pass(1, cpu, 4, 1024, 128) == 128


def test_bernstein_radius_is_maurer_pontil():
    """sqrt(2 var log(2/delta) / n) + 7 R log(2/delta) / (3 (n - 1))."""
    import math

    from captum_inverseset._core.layer.neuron_shapley.run_state import (
        bernstein_radius,
    )

    var = torch.tensor([0.04, 0.04, 0.0], dtype=torch.float64)
    n = torch.tensor([10.0, 1.0, 4.0], dtype=torch.float64)
    r = torch.tensor([1.0, 1.0, 0.5], dtype=torch.float64)
    got = bernstein_radius(var, n, r, delta=0.1)
    log_term = math.log(20.0)
    expected0 = math.sqrt(2 * 0.04 * log_term / 10) + 7 * log_term / 27
    assert got[0].item() == pytest.approx(expected0, rel=1e-12)
    assert math.isinf(got[1].item())  # one sample: no bound yet
    assert got[2].item() == pytest.approx(7 * 0.5 * log_term / 9, rel=1e-12)


def test_untraceable_model_warns_that_every_coalition_is_a_full_forward():
    """A forward with Python control flow on its input (ccexam's MNIST CNN
    checks the input size) cannot be traced by torch.fx, so 'auto' falls back
    to the hook engine; the user is told why and how to get the fast engines
    (the same modules as an nn.Sequential), with the same values."""
    import warnings

    from captum_inverseset import NeuronShapleyWarning

    class Checked(nn.Module):
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(),
                nn.Linear(3 * 4 * 4, 4),
            )  # fmt: skip

        def forward(self, x):
            if x.shape[-1] != 4:
                raise ValueError("4x4 inputs only")
            return self.body(x)

    torch.manual_seed(0)
    model = Checked().eval()
    x = torch.randn(6, 1, 4, 4)
    y = model(x).argmax(1)
    kw = dict(target=y, metric="loss", n_permutations=3, seed=0)
    with pytest.warns(NeuronShapleyWarning, match="torch.fx cannot trace .*Sequential"):
        slow = NeuronShapley(model, model.body[0]).interpret(x, **kw)
    assert slow.engine == "hooks"
    with warnings.catch_warnings():
        warnings.simplefilter("error", NeuronShapleyWarning)
        NeuronShapley(model, model.body[0]).interpret(x, engine="hooks", **kw)
        fast = NeuronShapley(model.body, model.body[0]).interpret(x, **kw)
    assert fast.engine != "hooks"
    torch.testing.assert_close(fast.values, slow.values)
