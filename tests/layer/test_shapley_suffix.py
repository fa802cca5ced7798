import torch
import torchvision
from torch import nn

from captum_inverseset._core.layer._shapley_game import group_mask
from captum_inverseset._core.layer._shapley_suffix import split_at_layer, verify_split


def test_resnet_split_inside_residual_block_carries_the_skip():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    x = torch.rand(2, 3, 32, 32)
    layer = model.layer2[0].conv1
    split = split_at_layer(model, layer, [model.layer3[1].conv2])
    assert split is not None
    assert split.n_cut >= 2  # layer output + the block's skip input
    assert verify_split(split, model, (x,))
    with torch.no_grad():
        cut = split.prefix(x)
        assert torch.equal(cut[0], layer(model.layer1(model.maxpool(
            model.relu(model.bn1(model.conv1(x)))))))  # fmt: skip


def test_untraceable_model_returns_none():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(3, 3)

        def forward(self, x):
            h = self.fc(x)
            if h.sum() > 0:  # data-dependent control flow
                return h
            return -h

    m = Branchy()
    assert split_at_layer(m, m.fc) is None


def test_group_mask_is_per_group_even_when_groups_equal_channels():
    out = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(4, 2, 2, 1)
    keep = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # G == C == H == 2
    fill = torch.full((2, 2, 1), -1.0)
    masked = group_mask(out, keep, fill)
    assert torch.equal(masked[:2, 0], out[:2, 0]) and (masked[:2, 1] == -1).all()
    assert (masked[2:, 0] == -1).all() and torch.equal(masked[2:, 1], out[2:, 1])


def test_prefix_without_cache_gives_the_same_values():
    from captum_inverseset._core.layer._shapley_game import NeuronGame
    from captum_inverseset.zoo import digits_classifier

    model = digits_classifier().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 1, 8, 8, generator=g)
    batches = [((x[:6],), torch.arange(6), None), ((x[6:],), torch.arange(4), None)]
    games = [
        NeuronGame(
            model,
            [model.conv2, model.conv3],
            batches,
            "loss",
            None,
            "mean",
            True,
            3,
            cache_bytes=limit,
        )  # fmt: skip
        for limit in (2**30, 0)
    ]
    assert games[0]._cuts and not games[1]._cuts
    assert games[0].uses_prefix_cache and games[1].uses_prefix_cache
    masks = (torch.rand(7, 64, generator=g) > 0.5).float()
    with torch.no_grad():
        a, b = games[0].evaluate(masks), games[1].evaluate(masks)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    hooks = NeuronGame(model, [model.conv2, model.conv3], batches, "loss", None,
                       "mean", False, 3)  # fmt: skip
    torch.testing.assert_close(a, hooks.evaluate(masks), atol=1e-5, rtol=0)
