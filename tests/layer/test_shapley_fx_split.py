import torch
import torchvision
from torch import nn

from captum_inverseset._core.layer.neuron_shapley.engines.fx_split import (
    split_at_layer,
    split_chain,
    verify_chain,
    verify_split,
)
from captum_inverseset._core.layer.neuron_shapley.engines.segments import (
    split_channelwise_head,
)
from captum_inverseset._utils.hooks import mask_units as group_mask


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
    from captum_inverseset._core.layer.neuron_shapley.game import ShapleyGame
    from captum_inverseset._core.layer.neuron_shapley.metrics import resolve_metric
    from captum_inverseset._core.layer.neuron_shapley.removal import resolve_removal
    from captum_inverseset.zoo import digits_classifier

    model = digits_classifier().eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(10, 1, 8, 8, generator=g)
    batches = [((x[:6],), torch.arange(6), None), ((x[6:],), torch.arange(4), None)]
    parts = (resolve_metric("loss"), resolve_removal("mean"))
    layers = [model.conv2, model.conv3]
    games = [
        ShapleyGame(model, layers, batches, *parts, engine="prefix",
                    rows_per_pass=3, cache_bytes=limit)  # fmt: skip
        for limit in (2**30, 0)
    ]
    assert games[0].engine.prefix.cached and not games[1].engine.prefix.cached
    assert games[0].engine_name == games[1].engine_name == "prefix"
    masks = (torch.rand(7, 64, generator=g) > 0.5).float()
    with torch.no_grad():
        a, b = games[0].evaluate(masks), games[1].evaluate(masks)
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)
    hooks = ShapleyGame(model, layers, batches, *parts, engine="hooks",
                        rows_per_pass=3)  # fmt: skip
    torch.testing.assert_close(a, hooks.evaluate(masks), atol=1e-5, rtol=0)


def test_chain_split_at_every_player_layer():
    from captum_inverseset.zoo import digits_classifier

    model = digits_classifier().eval()
    layers = [model.conv1, model.conv2, model.conv3]
    segments = split_chain(model, layers)
    assert segments is not None and len(segments) == 4
    x = torch.rand(5, 1, 8, 8)
    assert verify_chain(segments, model, (x,))
    with torch.no_grad():
        h1 = segments[0](x)
        assert torch.equal(h1, model.conv1(x))
        assert torch.equal(segments[1](h1), model.conv2(model.relu1(h1)))
    # Layers out of call order are no chain.
    assert split_chain(model, [model.conv2, model.conv1]) is None
    # The relu and the pooling after conv3 commute with a channel mask.
    head, rest = split_channelwise_head(segments[3])
    assert head is not None
    assert [n.target for n in head.graph.nodes if n.op == "call_module"] == [
        "relu3",
        "adaptive_pool",
    ]
    h3 = torch.randn(5, 32, 4, 4)
    with torch.no_grad():
        assert torch.equal(rest(head(h3)), segments[3](h3))


def test_chain_split_refuses_residual_connections():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    block = model.layer1[0]
    # The block input (the skip) is used after both convolutions.
    assert split_chain(model, [block.conv1, block.conv2]) is None
    assert split_chain(model, [model.conv1, block.conv1]) is None
    # A segment that starts with Flatten has no channel-wise head.
    seq = nn.Sequential(nn.Linear(4, 4), nn.Flatten(), nn.ReLU())
    segments = split_chain(seq, [seq[0]])
    assert segments is not None
    head, rest = split_channelwise_head(segments[1])
    assert head is None and rest is segments[1]


def test_same_size_adaptive_pool_is_skipped_exactly():
    from captum_inverseset._core.layer.neuron_shapley.engines.cpu_kernels import (
        SkipSameSizePool as _SkipSameSizePool,
    )
    from captum_inverseset.zoo import digits_classifier

    cases = [
        (nn.AdaptiveAvgPool2d(4), (3, 4, 4, 4)),
        (nn.AdaptiveAvgPool2d(4), (3, 4, 5, 5)),
        (nn.AdaptiveMaxPool2d((None, 3)), (3, 4, 5, 6)),
        (nn.AdaptiveAvgPool1d(7), (3, 4, 7)),
    ]
    for pool, shape in cases:
        x = torch.randn(shape)
        assert torch.equal(_SkipSameSizePool(pool)(x), pool(x))
    model = digits_classifier().eval()
    segments = split_chain(model, [model.conv3])
    head, _ = split_channelwise_head(segments[1])
    assert isinstance(head.get_submodule("adaptive_pool"), _SkipSameSizePool)
    # The model itself keeps its own module.
    assert type(model.adaptive_pool) is nn.AdaptiveAvgPool2d


def _head_targets(head):
    return [n.target for n in head.graph.nodes if n.op == "call_module"]


def test_max_pool_moves_before_non_decreasing_activations_only():
    torch.manual_seed(0)
    x = torch.randn(3, 4, 6, 6)
    cases = [
        # (modules after the player layer, head order expected)
        ([nn.ReLU(), nn.MaxPool2d(2)], ["2", "1"]),
        ([nn.LeakyReLU(0.1), nn.ReLU6(), nn.MaxPool2d(3)], ["3", "1", "2"]),
        ([nn.ReLU(), nn.AdaptiveMaxPool2d(2)], ["2", "1"]),
        # not monotone, or not a maximum: the order is kept
        ([nn.LeakyReLU(-0.5), nn.MaxPool2d(2)], ["1", "2"]),
        ([nn.GELU(), nn.MaxPool2d(2)], ["1", "2"]),
        ([nn.ReLU(), nn.AvgPool2d(2)], ["1", "2"]),
    ]
    for modules, expected in cases:
        seq = nn.Sequential(nn.Conv2d(4, 4, 1), *modules, nn.Flatten())
        segments = split_chain(seq, [seq[0]])
        assert segments is not None
        head, rest = split_channelwise_head(segments[1])
        assert head is not None
        assert _head_targets(head) == expected, modules
        with torch.no_grad():
            h = seq[0](x)
            assert torch.equal(rest(head(h)), segments[1](h)), modules
