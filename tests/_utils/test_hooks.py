import pytest
import torch
from torch import nn

from captum_inverseset._utils.hooks import (
    apply_unit_mask,
    capture_layer,
    count_hooks,
    mask_layer_units,
    preserve_model_state,
    replace_layer_output,
)


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten())


def test_apply_unit_mask_channel_mask_exact():
    out = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).reshape(2, 3, 2, 2)
    keep = torch.tensor([1.0, 0.0, 1.0])
    fill = torch.full((3, 2, 2), -1.0)
    res = apply_unit_mask(out, keep, fill)
    assert torch.equal(res[:, 0], out[:, 0])
    assert torch.equal(res[:, 2], out[:, 2])
    assert torch.equal(res[:, 1], torch.full((2, 2, 2), -1.0))


def test_apply_unit_mask_per_group_masks():
    # 2 coalitions x batch of 2 examples, 3 channels.
    out = torch.ones(4, 3) * torch.tensor([1.0, 2.0, 3.0])
    keep = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    res = apply_unit_mask(out, keep, 0.0)
    expected = torch.tensor(
        [[1.0, 0.0, 3.0], [1.0, 0.0, 3.0], [0.0, 2.0, 0.0], [0.0, 2.0, 0.0]]
    )
    assert torch.equal(res, expected)


def test_apply_unit_mask_rejects_bad_group_count():
    with pytest.raises(ValueError, match="multiple"):
        apply_unit_mask(torch.ones(5, 3), torch.ones(2, 3))


def test_capture_and_mask_hooks_removed_after_error():
    model = _model()
    x = torch.rand(2, 1, 4, 4)
    base = count_hooks(model)
    with pytest.raises(RuntimeError, match="inside"):
        with capture_layer(model[0]), mask_layer_units(model[0], torch.ones(3)):
            model(x)
            raise RuntimeError("error inside the block")
    assert count_hooks(model) == base


def test_mask_layer_units_changes_output_and_restores():
    model = _model()
    x = torch.rand(2, 1, 4, 4)
    ref = model(x)
    with mask_layer_units(model[0], torch.tensor([0.0, 0.0, 0.0])):
        masked = model(x)
    assert torch.equal(masked, torch.zeros_like(masked))
    assert torch.equal(model(x), ref)


def test_capture_layer_records_every_call():
    model = _model()
    with capture_layer(model[0], capture_input=True) as cap:
        model(torch.rand(1, 1, 4, 4))
        model(torch.rand(3, 1, 4, 4))
    assert [o.shape[0] for o in cap.outputs] == [1, 3]
    assert cap.input.shape == (3, 1, 4, 4)
    empty = capture_layer(model[0])
    with empty as cap2:
        pass
    with pytest.raises(RuntimeError, match="not called"):
        _ = cap2.output


def test_replace_layer_output():
    model = _model()
    with replace_layer_output(model[1], lambda o: o * 0 + 7):
        out = model(torch.rand(1, 1, 4, 4))
    assert torch.all(out == 7)


def test_preserve_model_state_restores_on_error():
    model = _model()
    model.train()
    model[0].bias.requires_grad_(False)
    with pytest.raises(KeyError):
        with preserve_model_state(model):
            assert not model.training
            assert not any(p.requires_grad for p in model.parameters())
            raise KeyError("x")
    assert model.training and all(m.training for m in model.modules())
    assert model[0].weight.requires_grad and not model[0].bias.requires_grad
