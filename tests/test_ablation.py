import pytest
import torch

from captum_inverseset import NeuronShapley
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset.ablation import (
    AblationCurveResult,
    ablation_curve,
    conductance_channel_scores,
    gradcam_channel_scores,
)
from captum_inverseset.zoo import digits_classifier, load_digits_dataset


@pytest.fixture(scope="module")
def digits():
    model = digits_classifier()
    data = load_digits_dataset()
    return model, data.test_inputs[:100], data.test_labels[:100]


def test_shapley_top_k_hurts_more_than_random_and_conductance(digits, tmp_path):
    model, x, y = digits
    # conv2 (32 filters): on this model, removing its top Shapley filters
    # hurts accuracy more than random ones and Conductance's top filters
    ns = NeuronShapley(model, model.conv2)
    result = ns.interpret(x, target=y, n_permutations=10, seed=0)
    shapley = result.values.float()
    conductance = conductance_channel_scores(model, model.conv2, x, y, n_steps=10)
    gradcam = gradcam_channel_scores(model, model.conv2, x, y)
    assert conductance.shape == gradcam.shape == (32,)
    ks = (0, 4, 8, 12, 16)
    curve = ablation_curve(
        model, model.conv2, x,
        {"shapley": shapley, "conductance": conductance, "gradcam": gradcam},
        target=y, ks=ks, n_random=10,
    )  # fmt: skip
    full = result.value_full
    for name in ("shapley", "conductance", "gradcam", "random"):
        assert curve.curve(name)[0].item() == pytest.approx(full)
    s, c, r = curve.curve("shapley"), curve.curve("conductance"), curve.curve("random")
    assert (s[1:] < r[1:]).all(), (s, r)
    assert s[1:].mean() < c[1:].mean(), (s, c)
    assert s[-1] < full - 0.5  # removing 16 of 32 filters costs > 50 points
    assert count_hooks(model) == 0
    fig, ax = curve.plot()
    assert len(ax.lines) == 4
    back = AblationCurveResult.load(curve.save(str(tmp_path / "a.pt")))
    torch.testing.assert_close(back.curves, curve.curves)


def test_ablation_curve_errors(digits):
    model, x, y = digits
    with pytest.raises(ValueError, match="scores"):
        ablation_curve(model, model.conv3, x, {}, target=y)
    with pytest.raises(ValueError, match="units"):
        ablation_curve(model, model.conv3, x, {"a": torch.zeros(5)}, target=y)
    with pytest.raises(ValueError, match="ks"):
        ablation_curve(
            model, model.conv3, x, {"a": torch.zeros(32)}, target=y, ks=(0, 40)
        )


def test_ablation_over_several_layers_and_filter_norm_scores(digits):
    from captum_inverseset.ablation import filter_norm_scores

    model, x, y = digits
    convs = [model.conv1, model.conv2, model.conv3]
    norms = filter_norm_scores(convs)
    assert norms.shape == (80,)
    expected = model.conv2.weight.detach().flatten(1).norm(dim=1)
    torch.testing.assert_close(norms[16:48], expected)
    per_layer = (torch.zeros(16), torch.arange(1.0, 33.0), torch.zeros(32))
    curve = ablation_curve(
        model, convs, x, {"norm": norms, "conv2 first": per_layer},
        target=y, ks=(0, 4, 32), n_random=2,
    )  # fmt: skip
    # removing all of conv2 through the multi-layer game equals removing
    # conv2's 32 units through the single-layer one
    single = ablation_curve(
        model, model.conv2, x, {"all": torch.ones(32)}, target=y, ks=(32,), n_random=1
    )
    assert curve.curve("conv2 first")[2].item() == pytest.approx(
        single.curve("all")[0].item()
    )
    with pytest.raises(ValueError, match="weight"):
        filter_norm_scores(model.relu1)
