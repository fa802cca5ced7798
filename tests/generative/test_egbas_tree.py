"""E-GBAS's fast path: forwards stopped at the layer, batched tree passes,
outputs only for accepted samples, and what the results report."""

import warnings

import pytest
import torch
from captum.attr import LayerActivation
from torch import nn

from captum_inverseset import EGBAS
from captum_inverseset._core.generative.egbas import tree as tree_module
from captum_inverseset._core.generative.egbas.region import LayerSplit
from captum_inverseset._core.generative.egbas.result import tree_depths
from captum_inverseset._utils.distance import mean_pairwise_distance
from captum_inverseset._utils.hooks import capture_layer, count_hooks, stop_after_layer


class RowCounter(nn.Module):
    """Identity that counts the rows it sees (how many latents reached it)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows = 0

    def forward(self, x):
        self.rows += x.shape[0]
        return x


def make_mlp(hidden: int = 16) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(4, hidden),
        nn.ReLU(),
        nn.Linear(hidden, hidden),
        nn.ReLU(),
        nn.Linear(hidden, 6),
        RowCounter(),
    ).eval()


# -- stop_after_layer --------------------------------------------------------
def test_stop_after_layer_ends_the_forward_and_cleans_up():
    gen = make_mlp()
    z = torch.randn(5, 4)
    with capture_layer(gen[2]) as full:
        gen(z)
    counter = gen[5]
    counter.rows = 0
    with stop_after_layer(gen[2]) as cap:
        gen(z)
        pytest.fail("the forward call returned instead of stopping")
    assert counter.rows == 0  # nothing after the layer ran
    assert torch.equal(cap.output, full.output)
    assert count_hooks(gen) == 0

    class Swallowing(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = make_mlp()

        def forward(self, z):
            try:
                return self.inner(z)
            except Exception:  # a model's own error handling
                return None

    model = Swallowing()
    with stop_after_layer(model.inner[0]) as cap:
        assert model(z) is not None, "unreachable"
    assert cap.output.shape == (5, 16) and model.inner[5].rows == 0
    # Errors raised inside the block propagate; the hook is removed.
    with pytest.raises(KeyError), stop_after_layer(gen[0]):
        raise KeyError("user error")
    assert count_hooks(gen) == 0


def test_stop_after_layer_nests():
    gen = make_mlp()
    with stop_after_layer(gen[4]) as outer:
        with stop_after_layer(gen[0]) as inner:
            gen(torch.randn(2, 4))
        gen(torch.randn(3, 4))
    assert inner.output.shape == (2, 16) and outer.output.shape == (3, 6)
    assert count_hooks(gen) == 0


# -- layer evaluation ----------------------------------------------------------
class CalledTwice(nn.Module):
    def __init__(self):
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, z):
        return self.out(torch.relu(self.shared(torch.relu(self.shared(z)))))


def test_pre_activations_match_the_full_forward_and_captum():
    gen = make_mlp()
    split = LayerSplit(gen, gen[2])
    z = torch.randn(7, 4)
    pre, out = split.run(z)
    assert split.calls_per_forward == 1
    assert torch.equal(split.pre_activations(z), pre)
    torch.testing.assert_close(out, gen(z))
    # A layer called twice per forward: Captum's value (its last call), not
    # the first call an early stop would see.
    twice = CalledTwice()
    split = LayerSplit(twice, twice.shared)
    pre, _ = split.run(z)
    assert split.calls_per_forward == 2
    captum = LayerActivation(twice, twice.shared).attribute(z)
    torch.testing.assert_close(split.pre_activations(z), captum)
    torch.testing.assert_close(pre, captum)


def test_candidates_never_run_the_layers_above_a_cheap_layer():
    """fc at the bottom: the tree tests candidates with forwards stopped at the
    layer, and the whole generator runs once per accepted sample."""
    gen = make_mlp()
    egbas = EGBAS(gen, gen[0])
    z0 = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.ones(16, dtype=torch.bool)
    gen[5].rows = 0
    res = egbas.sample(z0, n_samples=50, mask=mask, step_size=0.2)
    assert res.complete and res.n_proposed > 50
    # the query, the FLOP count's probe, then one row per accepted sample
    assert gen[5].rows == 1 + 1 + 50
    torch.testing.assert_close(res.outputs, gen(res.latents))


def test_a_layer_near_the_output_keeps_the_candidates_outputs():
    """The last hidden layer holds most of the FLOPs: each candidate pass runs
    the whole generator and the accepted ones keep their outputs."""
    torch.manual_seed(0)
    gen = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 1)
    )
    gen.append(RowCounter())
    egbas = EGBAS(gen.eval(), gen[2])
    z0 = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(256, dtype=torch.bool)
    mask[:32] = True
    res = egbas.sample(z0, n_samples=40, mask=mask, step_size=0.1)
    assert res.complete and egbas._split.partial_share > 0.5
    assert gen[5].rows == 1 + 1 + res.n_proposed  # no second pass for outputs
    torch.testing.assert_close(res.outputs, gen(res.latents))


class CallCounter(RowCounter):
    """Counts the forward calls that reach it as well as the rows."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return super().forward(x)


@pytest.mark.parametrize("latent_bound", [None, "typical"])
def test_the_first_pass_shares_the_query_forward(monkeypatch, latent_bound):
    """A layer near the output: the first pass's candidates run the whole
    generator in the query's own forward pass (one call less), and the tree
    is the one of separate forward passes (the reference path)."""
    torch.manual_seed(0)
    gen = nn.Sequential(
        nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 256), nn.ReLU(), nn.Linear(256, 2)
    )
    gen.append(CallCounter())
    gen.eval()
    z0 = torch.randn(1, 4, generator=torch.Generator().manual_seed(1))
    mask = torch.zeros(256, dtype=torch.bool)
    mask[::4] = True
    kwargs = dict(n_samples=60, mask=mask, step_size=0.2, latent_bound=latent_bound)

    def run():
        egbas = EGBAS(gen, gen[2])
        gen[5].calls = gen[5].rows = 0
        return egbas.sample(z0, **kwargs), gen[5].calls, gen[5].rows

    fused, fused_calls, fused_rows = run()
    monkeypatch.setattr(tree_module, "first_pass", lambda *args: None)
    plain, plain_calls, plain_rows = run()
    assert fused.complete and fused.n_passes >= 2
    # the FLOP probe, the query, then one call per pass; the query's call
    # holds the first pass in the fused run
    assert plain_calls == 1 + 1 + plain.n_passes
    assert fused_calls == plain_calls - 1
    assert fused_rows == plain_rows == 1 + 1 + fused.n_proposed
    assert torch.equal(fused.latents, plain.latents)
    assert torch.equal(fused.tree, plain.tree)
    assert fused.n_proposed == plain.n_proposed
    torch.testing.assert_close(fused.outputs, plain.outputs)
    torch.testing.assert_close(fused.outputs, gen(fused.latents))
    torch.testing.assert_close(fused.query_output, gen(z0)[0])
    assert fused.in_region.all()


# -- the tree --------------------------------------------------------------------
def test_nearest_node_search_equals_brute_force(monkeypatch):
    gen = torch.Generator().manual_seed(0)
    nodes = torch.randn(300, 5, generator=gen)
    targets = torch.randn(70, 5, generator=gen)
    expected = torch.cdist(targets, nodes).argmin(dim=1)
    sq = nodes.pow(2).sum(dim=1)
    assert torch.equal(tree_module._nearest(targets, nodes, sq), expected)
    monkeypatch.setattr(tree_module, "_CDIST_ELEMENTS", 1000)  # 3 targets/chunk
    assert torch.equal(tree_module._nearest(targets, nodes, sq), expected)


def test_each_pass_extends_many_nodes():
    """No boundary (empty mask): every candidate is accepted, and the passes
    hold 32 candidates, then about two per node (66), then the smallest pass
    (32) for the last two."""
    gen = make_mlp()
    egbas = EGBAS(gen, gen[2])
    with pytest.warns(UserWarning, match="all False"):
        res = egbas.sample(
            torch.zeros(1, 4), n_samples=100, mask=torch.zeros(16, dtype=torch.bool)
        )
    assert res.n_passes == 3 and res.n_proposed == 32 + 66 + 32
    assert res.tree_depth == 3
    depth = tree_depths(res.tree)
    assert int((depth == 1).sum()) == 32 and int((depth == 2).sum()) == 66
    # A small request gets passes of half its size, hence generations too.
    with pytest.warns(UserWarning, match="all False"):
        few = egbas.sample(
            torch.zeros(1, 4), n_samples=15, mask=torch.zeros(16, dtype=torch.bool)
        )
    assert few.n_passes == 2 and few.tree_depth == 2
    # batch_size caps a pass: a deeper tree from more, smaller passes.
    with pytest.warns(UserWarning, match="all False"):
        small = egbas.sample(
            torch.zeros(1, 4),
            n_samples=100,
            mask=torch.zeros(16, dtype=torch.bool),
            batch_size=10,
        )
    assert small.n_passes == 10 and small.tree_depth > res.tree_depth


def test_tree_depths_recomputed():
    parents = torch.tensor([-1, 0, 0, 1, -1, 3, 5])
    expected = []
    for p in parents.tolist():
        expected.append(1 if p < 0 else expected[p] + 1)
    assert tree_depths(parents).tolist() == expected == [1, 2, 2, 3, 1, 4, 5]
    assert tree_depths(torch.empty(0, dtype=torch.long)).tolist() == []


def test_latent_bound_rejected_candidates_are_not_evaluated():
    gen = make_mlp()
    egbas = EGBAS(gen, gen[0])
    z0 = torch.full((1, 4), 0.45)  # norm 0.9, just inside the bound
    counts = []
    orig = egbas._split.pre_activations

    def counting(latents):
        counts.append(latents.shape[0])
        return orig(latents)

    egbas._split.pre_activations = counting
    res = egbas.sample(
        z0,
        n_samples=30,
        mask=torch.ones(16, dtype=torch.bool),
        step_size=0.3,
        latent_bound=1.0,
    )
    assert (res.latents.norm(dim=1) <= 1.0 + 1e-6).all()
    # only in-bound candidates are evaluated (the first call is the FLOP probe)
    assert counts[0] == 1 and res.n_proposed == sum(counts[1:])


# -- results ---------------------------------------------------------------------
def test_result_spreads_depth_and_deprecated_property():
    gen = make_mlp()
    egbas = EGBAS(gen, gen[2])
    z0 = torch.randn(1, 4, generator=torch.Generator().manual_seed(1))
    res = egbas.sample(z0, n_samples=30, mask=torch.ones(16, dtype=torch.bool))
    latent = mean_pairwise_distance(res.latents)
    assert res.mean_pairwise_distance() == latent
    assert res.mean_pairwise_distance("outputs") == mean_pairwise_distance(res.outputs)
    assert res.output_diversity == res.mean_pairwise_distance(space="outputs")
    with pytest.raises(ValueError, match="space"):
        res.mean_pairwise_distance("codes")
    with pytest.warns(FutureWarning, match="is a method"):
        assert float(res.mean_pairwise_distance) == latent
    with pytest.warns(FutureWarning):
        assert res.mean_pairwise_distance >= 0.5 * latent
    with pytest.warns(FutureWarning):
        assert f"{res.mean_pairwise_distance:.6f}" == f"{latent:.6f}"
    summary = res.summary()
    assert summary["tree_depth"] == res.tree_depth == int(tree_depths(res.tree).max())
    assert summary["n_passes"] == res.n_passes and summary["acceptance_rate"] == 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # summary() uses the method, no warning
        res.summary()
    base = egbas.epsilon_sample(z0, 20, epsilon=0.1, mask=res.mask)
    assert base.tree_depth == 1
