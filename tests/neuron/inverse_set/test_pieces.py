"""The inverse set's pieces on their own: constraints, solvers, spread, options."""

import inspect
import math
import warnings

import pytest
import torch
from captum.attr import LayerActivation
from torch import nn

from captum_inverseset import NeuronInverseSet
from captum_inverseset._core.neuron.inverse_set import (
    AugmentedLagrangian,
    ConstraintSet,
    ConstraintSolver,
    NeuronConstraint,
    RunningSpread,
    register_solver,
)
from captum_inverseset._core.neuron.inverse_set import solvers as solvers_module
from captum_inverseset._core.neuron.inverse_set.options import (
    DEFAULTS,
    SamplerOptions,
)


class Twice(nn.Module):
    """``lin`` runs twice per forward: Captum reports its last call."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.lin = nn.Linear(3, 3)

    def forward(self, x):
        return self.lin(torch.relu(self.lin(x)))


def test_constraint_values_match_captum_layer_activation():
    model = Twice()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(1))
    cs = ConstraintSet(
        [
            NeuronConstraint(model.lin, 1, (None, None)),
            NeuronConstraint(model.lin, slice(0, 2), (None, None)),
        ],
        model,
    )
    ours = cs.values(x)
    captum = LayerActivation(model, model.lin).attribute(x)
    torch.testing.assert_close(ours[:, 0], captum[:, 1])
    # A bare slice sums the units it selects (Captum's rule).
    torch.testing.assert_close(ours[:, 1], captum[:, :2].sum(1))


def test_violations_and_inside_are_exact():
    model = Twice()
    cs = ConstraintSet(
        [
            NeuronConstraint(model.lin, 0, (1.0, 3.0)),
            NeuronConstraint(model.lin, 1, (2.0, None)),
        ],
        model,
    )
    acts = torch.tensor([[2.0, 5.0], [0.0, 5.0], [2.0, 1.0], [4.0, 2.5]])
    assert cs.inside(acts).tolist() == [True, False, False, False]
    g = cs.violations(acts)
    # Band 0 has width 2, margin 2e-3 per end; band 1 is open above, its
    # scale the magnitude of its finite end (2), margin 1e-4 * 2.
    lo0, hi0 = 1.0 + 2e-3, 3.0 - 2e-3
    torch.testing.assert_close(
        g[1, 0], torch.tensor([(lo0 - 0.0) / 2, (0.0 - hi0) / 2])
    )
    torch.testing.assert_close(g[2, 1, 0], torch.tensor((2.0 + 2e-4 - 1.0) / 2))
    assert float(g[2, 1, 1]) == -1.0 / 2  # the open end never pulls
    torch.testing.assert_close(cs.distance(acts), torch.tensor([0.0, 0.5, 0.5, 0.5]))


def test_augmented_lagrangian_penalty_and_updates():
    o = SamplerOptions(initial_penalty=2.0, penalty_growth=3.0, multiplier_every=1)
    al = AugmentedLagrangian(o)
    state = al.start(1, 1, torch.device("cpu"))
    g = torch.tensor([[[0.5, -1.5]]])
    # lam = 0: penalty = mu/2 * max(0, g)^2 summed.
    assert float(al.penalty(state, g)) == pytest.approx(2.0 / 2 * 0.25)
    state = al.update(state, g, step=0)
    assert state["lam"].flatten().tolist() == [1.0, 0.0] and state["mu"] == 6.0
    # (max(0, 1 + 6 g)^2 - 1) / 12 at g = 0.5 and the inactive end.
    assert float(al.penalty(state, g)) == pytest.approx((16 - 1) / 12)
    reset = al.reset(state, torch.tensor([True]))
    assert float(reset["lam"].abs().sum()) == 0.0


def test_a_registered_solver_is_used_without_touching_the_loop():
    calls = []

    @register_solver("test_quadratic")
    class Quadratic(ConstraintSolver):
        def start(self, k, m, device, inherit=None):
            calls.append("start")
            return None

        def penalty(self, state, g):
            calls.append("penalty")
            return 100.0 * torch.relu(g).pow(2).sum((1, 2))

        def update(self, state, g, step):
            return state

        def reset(self, state, mask):
            return state

        def keep(self, state, rows):
            return None

    try:
        model = Twice()
        res = NeuronInverseSet(model, model.lin).sample(
            0,
            (0.05, 0.1),
            n_samples=4,
            batch_size=2,
            input_shape=(3,),
            constraint_method="test_quadratic",
        )
        assert res.constraint_method == "test_quadratic"
        assert calls.count("start") == 2 and "penalty" in calls
        assert bool(res.feasible.all())
    finally:
        solvers_module._SOLVERS.pop("test_quadratic")
    with pytest.raises(ValueError, match="constraint_method"):
        NeuronInverseSet(model, model.lin).sample(
            0, (0.2, 0.4), n_samples=2, input_shape=(3,), constraint_method="nope"
        )


def test_running_spread_equals_brute_force_and_repels_from_seeds():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3)]
    for repel_from in ("all", "seeds"):
        spread = RunningSpread(repel_from)
        for i, e in enumerate(batches):
            earlier = batches[:i] if repel_from == "all" else batches[: min(i, 1)]
            brute = torch.cdist(e, e).pow(2).sum(1)
            n_earlier = sum(b.shape[0] for b in earlier)
            if earlier:
                brute = brute + torch.cdist(e, torch.cat(earlier)).pow(2).sum(1)
            torch.testing.assert_close(spread(e), brute / (3 + n_earlier))
            spread.add(e)


def test_each_default_is_spelled_once():
    params = inspect.signature(NeuronInverseSet.sample).parameters
    for name in SamplerOptions.names():
        assert params[name].default == getattr(DEFAULTS, name), name
    assert (
        inspect.signature(NeuronInverseSet.top_range).parameters["lr"].default
        == DEFAULTS.lr
    )


def test_attribute_returns_tensors_and_return_result_is_deprecated():
    model = Twice()
    sampler = NeuronInverseSet(model, model.lin)
    x = torch.rand(3, 3, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = sampler.attribute(x, 0, activation_range=(0.0, 1.0), max_steps=5)
    assert torch.is_tensor(out) and out.shape == x.shape
    with pytest.warns(FutureWarning, match="return_result"):
        res = sampler.attribute(
            x, 0, activation_range=(0.0, 1.0), max_steps=5, return_result=True
        )
    torch.testing.assert_close(res.inputs, out)
    with pytest.warns(FutureWarning, match="attribute_to_neuron_input"):
        sampler.attribute(
            x, 0, activation_range=(None, None), attribute_to_layer_input=True
        )
    assert math.isfinite(float(out.sum()))
