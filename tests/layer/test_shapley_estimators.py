"""The estimators of Neuron Shapley: the bandit's bounds and the truncation
rules, on games whose values are known (a fake game with an additive value)
and on the shipped digits classifier."""

import math

import pytest
import torch

from captum_inverseset import NeuronShapley
from captum_inverseset._core.layer.neuron_shapley.estimators import (
    PermutationSampling,
    TopKBandit,
)
from captum_inverseset._core.layer.neuron_shapley.run_state import (
    RunCheckpoint,
    RunStatistics,
    permutation_seed,
)


class _Engine:
    walks_together = True


class AdditiveGame:
    """V(S) = sum of the kept players' weights: phi_i = w_i exactly."""

    def __init__(self, weights, rows_per_pass=64):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.n_players = self.weights.numel()
        self.rows_per_pass = rows_per_pass
        self.engine = _Engine()
        self.evaluated_rows = 0

    def start_walk(self):
        pass

    def evaluate(self, masks):
        self.evaluated_rows += masks.shape[0]
        return masks.double() @ self.weights


def _run(game, **kw):
    estimator = PermutationSampling(
        kw.pop("n_permutations", 20),
        kw.pop("truncation_tolerance", None),
        seed=kw.pop("seed", 0),
        per_round=kw.pop("per_round", 4),
        **kw,
    )
    full, empty = float(game.weights.sum()), 0.0
    return estimator.run(game, full, empty, RunCheckpoint(None, 1, "", 0))


def test_untruncated_sampling_of_an_additive_game_is_exact():
    game = AdditiveGame([0.5, -0.2, 0.1, 0.0, 0.3])
    fields = _run(game, n_permutations=7)
    torch.testing.assert_close(fields["values"], game.weights, atol=1e-12, rtol=0)
    assert torch.equal(fields["evaluated_counts"], torch.full((5,), 7.0))


@pytest.mark.parametrize("patience", [1, 3, 6])
def test_truncation_patience_stops_after_that_many_consecutive_close_values(patience):
    """Recompute every walk by hand: remove players in the permutation's
    order, stop at the position where ``patience`` consecutive values are
    within the tolerance of V(empty); later players get 0 (not evaluated)."""
    # two large players; once both are removed the value stays near 0
    weights = [0.02, -0.02, 0.01, 0.5, 0.01, -0.01, 0.02, 0.01, 0.01, 0.0, 0.03, 0.4]
    game = AdditiveGame(weights, rows_per_pass=2)
    tol = 0.047  # no partial sum lies within float rounding of it
    n = 60
    fields = _run(game, n_permutations=n, truncation_tolerance=tol,
                  truncation_patience=patience)  # fmt: skip
    w = game.weights
    p = w.numel()
    sums = torch.zeros(p, dtype=torch.float64)
    evaluated = torch.zeros(p, dtype=torch.float64)
    for index in range(n):
        perm = torch.randperm(
            p, generator=torch.Generator().manual_seed(permutation_seed(0, index))
        )
        values = [float(w.sum())]
        for k in range(1, p + 1):
            values.append(float(w[perm[k:]].sum()))
        streak, cut = 0, None
        for k in range(1, p):  # the known end V(empty) is not evaluated
            streak = streak + 1 if abs(values[k]) < tol else 0
            if streak >= patience:
                cut = k
                break
        for k in range(1, p + 1):
            if cut is None or k <= cut:
                sums[perm[k - 1]] += values[k - 1] - values[k]
                evaluated[perm[k - 1]] += 1
    torch.testing.assert_close(fields["values"], sums / n, atol=1e-12, rtol=0)
    assert torch.equal(fields["evaluated_counts"], evaluated)
    assert bool((evaluated < n).any())  # some walks were truncated


def test_union_bound_and_metric_range_give_intervals_that_never_collapse():
    stats = RunStatistics(4)
    for _ in range(12):  # every contribution is exactly 0: observed range 0
        stats.add(torch.arange(4), torch.zeros(4, dtype=torch.float64))
    assert torch.equal(stats.radius(0.05), torch.zeros(4))
    log_term = math.log(2 * 4 / 0.05)
    expected = 7 * 2.0 * log_term / (3 * 11)
    bandit = TopKBandit(1, 0.05, union_bound=True, value_range=2.0)
    assert bandit.player_delta(4) == pytest.approx(0.05 / 4)
    got = stats.radius(bandit.player_delta(4), bandit.value_range)
    torch.testing.assert_close(got, torch.full((4,), expected, dtype=torch.float64))
    assert TopKBandit(1, 0.05, union_bound=False).player_delta(4) == 0.05


def test_min_samples_counts_only_evaluated_contributions():
    stats = RunStatistics(3)
    # player 0: four truncated zeros, far below the others
    stats.add(torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.0, 1.1]).double(),
              torch.tensor([False, True, True]))  # fmt: skip
    for _ in range(3):
        stats.add(torch.tensor([0, 1, 2]), torch.tensor([0.0, 1.0, 1.2]).double(),
                  torch.tensor([False, True, True]))  # fmt: skip
    assert stats.counts.tolist() == [4, 4, 4] and stats.evaluated.tolist() == [0, 4, 4]
    loose = stats.settled(1, 0.05, value_range=None, min_samples=0)
    strict = stats.settled(1, 0.05, value_range=None, min_samples=1)
    assert bool(loose[0]) and not bool(strict[0])


def test_the_old_bandit_rule_drops_a_clear_top_player_that_the_default_keeps():
    """The issue's failure on the digits classifier (80 conv channels, loss,
    truncation at 5% of V(N) - V(empty), top 10): with seed 21, the first
    round's walks all truncate before channel 2 (a clear top-7 channel,
    value about 0.25, before the gap after rank 7), so the old rule (no
    union bound, each player's observed range, truncated zeros as evidence)
    settles it out of the top 10 with
    an interval [0, 0] and never samples it again. The default rule needs
    evaluated contributions and a valid range before it settles anyone."""
    from captum_inverseset.zoo import digits_classifier, load_digits_dataset

    model = digits_classifier().eval()
    data = load_digits_dataset()
    x, y = data.test_inputs[:60], data.test_labels[:60]
    ns = NeuronShapley(model, [model.conv1, model.conv2, model.conv3])
    reference = ns.interpret(x, target=y, metric="loss", n_permutations=100, seed=1000)
    assert 2 in torch.argsort(reference.values, descending=True)[:7].tolist()
    tol = 0.05 * abs(reference.value_full - reference.value_empty)
    kw = dict(target=y, metric="loss", n_permutations=24, seed=21,
              truncation_tolerance=tol, top_k=10)  # fmt: skip
    old = ns.interpret(x, bandit_union_bound=False, bandit_min_samples=0,
                       bandit_value_range="observed", **kw)  # fmt: skip
    assert bool(old.settled[2]) and old.evaluated_counts[2] == 0
    assert old.values[2] == 0 and old.lower_bounds[2] == old.upper_bounds[2] == 0
    new = ns.interpret(x, **kw)
    assert not bool(new.settled[2])
    assert not bool((new.settled & (new.evaluated_counts < 10)).any())


def test_conv_bn_removal_is_the_papers_weight_rewrite():
    """removal='conv_bn' gives the values of the paper's code, which removes
    a filter by zeroing its weights and bias and its BatchNorm's scale and
    running mean (variance 1): the channel then outputs the shift beta."""
    import copy

    from torch import nn

    from captum_inverseset._core.layer.neuron_shapley.game import ShapleyGame
    from captum_inverseset._core.layer.neuron_shapley.metrics import resolve_metric
    from captum_inverseset._core.layer.neuron_shapley.removal import (
        resolve_removal,
    )

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Conv2d(4, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, 5),
    ).eval()  # fmt: skip
    with torch.no_grad():
        for bn in (model[1], model[4]):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-1, 1)
    x = torch.randn(6, 2, 5, 5)
    y = torch.arange(6) % 5
    players = [model[0], model[3]]
    game = ShapleyGame(model, players, [((x,), y, None)], resolve_metric("loss"),
                       resolve_removal("conv_bn"), engine="hooks")  # fmt: skip
    keep = torch.tensor([[1, 0, 1, 0, 0, 1, 1.0], [0, 1, 1, 1, 1, 0, 1.0]])

    def rewritten(row):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for conv, bn, cols in ((m[0], m[1], row[:4]), (m[3], m[4], row[4:])):
                for c in torch.nonzero(cols == 0).flatten().tolist():
                    conv.weight[c] = 0
                    conv.bias[c] = 0
                    bn.weight[c] = 0
                    bn.running_mean[c] = 0
                    bn.running_var[c] = 1
            return -nn.functional.cross_entropy(m(x), y).item()

    expected = torch.tensor([rewritten(row) for row in keep], dtype=torch.float64)
    torch.testing.assert_close(game.evaluate(keep), expected, atol=1e-5, rtol=0)
    bn_players = ShapleyGame(
        model,
        [model[1]],
        [((x,), y, None)],
        resolve_metric("loss"),
        resolve_removal("conv_bn"),
    )
    torch.testing.assert_close(bn_players.fills[0][:, 0, 0], model[1].bias.detach())
    with pytest.raises(ValueError, match="conv_bn"):
        ShapleyGame(model, [model[2]], [((x,), y, None)], resolve_metric("loss"),
                    resolve_removal("conv_bn"))  # fmt: skip


def test_fresh_subsets_per_permutation_are_unbiased_for_the_full_data_values():
    """Each permutation on its own random subset of the examples: the
    metric is a mean over examples, so a subset's value is unbiased for the
    full data's and so are the Shapley values; the standard errors include
    the variation between subsets."""
    from ._shapley_models import make_mlp

    model = make_mlp(hidden=5)
    g = torch.Generator().manual_seed(3)
    x = torch.randn(40, 3, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    ns = NeuronShapley(model, model.relu)
    exact = ns.interpret(x, target=y, metric="loss", exact=True)
    seen = []

    def loss(out, target):
        seen.append(out.shape[0])
        return -torch.nn.functional.cross_entropy(out, target)

    sub = ns.interpret(x, target=y, metric=loss, n_permutations=1500,
                       examples_per_permutation=10, seed=0)  # fmt: skip
    full = ns.interpret(x, target=y, metric="loss", n_permutations=1500, seed=0)
    assert set(seen) == {10, 40}  # subsets of 10; V(N), V(empty) on all 40
    err = (sub.values - exact.values).abs()
    assert bool((err <= 4 * sub.standard_errors + 1e-9).all()), (err, sub)
    assert bool((sub.standard_errors > full.standard_errors).all())
    # the same seed gives the same subsets
    again = ns.interpret(x, target=y, metric=loss, n_permutations=40,
                         examples_per_permutation=10, seed=0)  # fmt: skip
    first = ns.interpret(x, target=y, metric=loss, n_permutations=40,
                         examples_per_permutation=10, seed=0)  # fmt: skip
    assert torch.equal(again.values, first.values)
    with pytest.raises(ValueError, match="examples_per_permutation"):
        ns.interpret(x, target=y, metric="loss", examples_per_permutation=41)
