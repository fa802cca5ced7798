"""NetworkDissection: IoU equals a hand computation on synthetic masks."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset._core.layer.network_dissection import (
    DissectionResult,
    NetworkDissection,
)
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset.zoo import digits_classifier


def _identity_model():
    # the "layer" is the input itself, so activation maps are chosen by hand
    return nn.Sequential(nn.Identity())


def _hand_case():
    acts = torch.zeros(2, 2, 2, 2)
    acts[0, 0, 0, 0] = 1.0  # unit 0, image 0: top-left quarter
    acts[1, 0, 0, :] = 1.0  # unit 0, image 1: top half
    acts[0, 1, 1, 1] = 1.0  # unit 1, image 0: bottom-right quarter
    masks = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    masks[0, 0, :3, :3] = True  # concept 0, image 0: top-left 3x3
    masks[1, 0, 0, :] = True  # concept 0, image 1: first row
    # concept 1 is empty everywhere
    return acts, masks


def test_iou_equals_hand_computation():
    acts, masks = _hand_case()
    model = _identity_model()
    result = NetworkDissection(model, model[0]).interpret(
        acts,
        masks,
        ["corner", "nothing"],
        thresholds=torch.tensor([0.5, 0.5]),
        upsample_mode="nearest",
    )
    # unit 0 / corner: image 0: M = 2x2 block (4 px) inside L = 3x3 (9 px):
    # I = 4, U = 9; image 1: M = top half (8 px), L = first row (4 px): I = 4,
    # U = 8. IoU = 8 / 17.
    # unit 1 / corner: image 0: M = bottom-right 2x2, L = top-left 3x3 share
    # pixel (2, 2): I = 1, U = 4 + 9 - 1 = 12; image 1: M empty, U = 4.
    # IoU = 1 / 16.  Empty concept: I = 0, so IoU = 0.
    assert result.intersection.tolist() == [[8, 0], [1, 0]]
    assert result.union.tolist() == [[17, 12], [16, 4]]
    expected = torch.tensor([[8 / 17, 0.0], [1 / 16, 0.0]])
    assert torch.allclose(result.iou, expected, atol=1e-7)
    units, scores = result.rank_units("corner")
    assert units.tolist() == [0, 1]
    assert torch.allclose(scores, torch.tensor([8 / 17, 1 / 16]))
    names, best = result.best_concepts()
    assert names == ["corner", "corner"]


def test_quantile_thresholds_and_iou_equal_brute_force():
    gen = torch.Generator().manual_seed(0)
    acts = torch.randn(6, 3, 5, 5, generator=gen)
    masks = torch.rand(6, 2, 5, 5, generator=gen) > 0.7
    model = _identity_model()
    result = NetworkDissection(model, model[0]).interpret(
        acts, masks, quantile=0.9, batch_size=4
    )
    flat = acts.transpose(0, 1).reshape(3, -1)
    expected_t = torch.quantile(flat, 0.9, dim=1)
    assert torch.allclose(result.thresholds, expected_t, atol=1e-6)
    # same resolution: bilinear resampling is the identity
    active = acts > result.thresholds[None, :, None, None]
    for u in range(3):
        for k in range(2):
            inter = (active[:, u] & masks[:, k]).sum()
            union = (active[:, u] | masks[:, k]).sum()
            assert int(result.intersection[u, k]) == int(inter)
            assert int(result.union[u, k]) == int(union)
            assert float(result.iou[u, k]) == pytest.approx(float(inter / union))
    # about 10% of the positions of each unit are above its threshold
    assert torch.allclose(active.float().mean((0, 2, 3)), torch.full((3,), 0.1))


def test_dataloader_equals_tensor_and_units_subset():
    gen = torch.Generator().manual_seed(1)
    acts = torch.randn(10, 4, 3, 3, generator=gen)
    masks = torch.rand(10, 3, 6, 6, generator=gen) > 0.5
    model = _identity_model()
    method = NetworkDissection(model, model[0])
    a = method.interpret(acts, masks, units=[1, 3], quantile=0.8, batch_size=3)
    loader = DataLoader(TensorDataset(acts, masks), batch_size=4)
    b = method.interpret(loader, units=[1, 3], quantile=0.8)
    for f in ("iou", "intersection", "union", "thresholds", "units"):
        assert torch.equal(getattr(a, f), getattr(b, f)), f
    assert a.units.tolist() == [1, 3]
    full = method.interpret(acts, masks, quantile=0.8)
    assert torch.equal(full.iou[[1, 3]], a.iou)


def test_digits_layer_runs_and_leaves_model_unchanged():
    from captum_inverseset.zoo import load_digits_dataset

    model = digits_classifier()
    model.train()
    x = load_digits_dataset().test_inputs[:64]
    ink = x[:, 0] > 0.5
    result = NetworkDissection(model, model.relu2).interpret(
        x, torch.stack([ink, ~ink], 1), ["ink", "background"], quantile=0.95
    )
    assert result.iou.shape == (32, 2)
    assert bool((result.iou >= 0).all() and (result.iou <= 1).all())
    assert model.training and count_hooks(model) == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"units": [7]}, "units"),
        ({"quantile": 1.0}, "quantile"),
        ({"upsample_mode": "cubic"}, "upsample_mode"),
        ({"concept_names": ["a"]}, "concept_names"),
        ({"thresholds": torch.zeros(3)}, "thresholds"),
        ({"concept_masks": torch.full((2, 2, 4, 4), 2)}, "binary"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs, match):
    acts, masks = _hand_case()
    model = _identity_model()
    kwargs.setdefault("concept_masks", masks)
    with pytest.raises(ValueError, match=match):
        NetworkDissection(model, model[0]).interpret(acts, **kwargs)
    assert count_hooks(model) == 0


def test_plot_and_save_load(tmp_path):
    acts, masks = _hand_case()
    model = _identity_model()
    result = NetworkDissection(model, model[0]).interpret(
        acts, masks, thresholds=torch.tensor([0.5, 0.5]), upsample_mode="nearest"
    )
    fig, ax = result.plot("concept_0", k=2)
    assert len(ax.patches) == 2
    result.plot()
    loaded = DissectionResult.load(result.save(str(tmp_path / "dissection.pt")))
    assert torch.equal(loaded.iou, result.iou)
    assert loaded.concept_names == ["concept_0", "concept_1"]
    assert loaded.rank_units(0)[0].tolist() == [0, 1]


def test_interpret_is_the_verb_and_attribute_a_deprecated_alias():
    from captum.attr import Attribution

    acts, masks = _hand_case()
    model = _identity_model()
    method = NetworkDissection(model, model[0])
    assert not isinstance(method, Attribution)
    kw = dict(thresholds=torch.tensor([0.5, 0.5]), upsample_mode="nearest")
    new = method.interpret(acts, masks, **kw)
    with pytest.warns(FutureWarning, match="interpret"):
        old = method.attribute(acts, masks, **kw)
    assert torch.equal(new.iou, old.iou)


def test_layer_and_neuron_packages_do_not_import_each_other():
    import inspect

    import captum_inverseset._core.layer.network_dissection as module

    source = inspect.getsource(module)
    assert "_core.neuron" not in source and "..neuron" not in source


def test_linear_layer_iou_compares_examples():
    # a linear layer: each unit has one value per example, each concept one
    # bit per example; IoU compares the examples above T_u with the concept's
    acts = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 1.0], [0.0, 0.0]])
    masks = torch.tensor([[1, 0], [1, 1], [0, 0], [1, 0]], dtype=torch.bool)
    model = _identity_model()
    result = NetworkDissection(model, model[0]).interpret(
        acts, masks, thresholds=torch.tensor([0.5, 0.5])
    )
    # unit 0 active on {0, 1}; concept 0 on {0, 1, 3}: I = 2, U = 3
    # unit 0 / concept 1 on {1}: I = 1, U = 2
    # unit 1 active on {1, 2}; concept 0: I = 1, U = 4; concept 1: I = 1, U = 2
    assert result.intersection.tolist() == [[2, 1], [1, 1]]
    assert result.union.tolist() == [[3, 2], [4, 2]]
    assert torch.allclose(result.iou, torch.tensor([[2 / 3, 0.5], [0.25, 0.5]]))
    # one concept without its K dimension
    single = NetworkDissection(model, model[0]).interpret(
        acts, masks[:, 0], thresholds=torch.tensor([0.5, 0.5])
    )
    assert torch.equal(single.iou[:, 0], result.iou[:, 0])


def test_conv1d_layer_iou_equals_brute_force_with_resampling():
    gen = torch.Generator().manual_seed(2)
    acts = torch.randn(5, 3, 4, generator=gen)  # (N, C, L)
    masks = torch.rand(5, 2, 8, generator=gen) > 0.5  # (N, K, 2L)
    model = _identity_model()
    result = NetworkDissection(model, model[0]).interpret(
        acts, masks, quantile=0.8, upsample_mode="nearest"
    )
    expected_t = torch.quantile(acts.transpose(0, 1).reshape(3, -1), 0.8, dim=1)
    assert torch.allclose(result.thresholds, expected_t, atol=1e-6)
    up = acts.repeat_interleave(2, dim=2)  # nearest resampling of L to 2L
    active = up > result.thresholds[None, :, None]
    for u in range(3):
        for k in range(2):
            inter = int((active[:, u] & masks[:, k]).sum())
            union = int((active[:, u] | masks[:, k]).sum())
            assert int(result.intersection[u, k]) == inter
            assert int(result.union[u, k]) == union
    linear = NetworkDissection(model, model[0]).interpret(
        acts, masks, quantile=0.8, upsample_mode="linear"
    )
    assert linear.iou.shape == (3, 2)


def test_real_conv1d_and_linear_layers_by_name():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv1d(2, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(32, 6)
    )
    x = torch.randn(10, 2, 8)
    conv = NetworkDissection(model, "1").interpret(x, torch.rand(10, 3, 8) > 0.5)
    assert conv.iou.shape == (4, 3)
    head = NetworkDissection(model, "3").interpret(x, torch.rand(10, 3) > 0.5)
    assert head.iou.shape == (6, 3)
    with pytest.raises(ValueError, match=r"concept_masks must be \(N, K\)"):
        NetworkDissection(model, "3").interpret(x, torch.rand(10, 3, 8) > 0.5)
    assert count_hooks(model) == 0
