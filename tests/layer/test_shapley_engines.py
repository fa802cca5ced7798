"""Every Neuron Shapley engine returns the reference engine's values.

Property test with seeded random cases: random models (chains of
convolutions, BatchNorm, activations and pooling; residual blocks; MLPs),
random player layers among them, random removal, metric and batching, and
random masks (independent coin flips at several densities and the
coalitions of permutation walks, the engines' real workload). Every engine
that applies must give :class:`HookEngine`'s values.
"""

import random

import pytest
import torch
from torch import nn

from captum_inverseset._core.layer.neuron_shapley.engines import ENGINES
from captum_inverseset._core.layer.neuron_shapley.game import ShapleyGame
from captum_inverseset._core.layer.neuron_shapley.metrics import resolve_metric
from captum_inverseset._core.layer.neuron_shapley.removal import resolve_removal
from captum_inverseset._utils.hooks import count_hooks

N_CASES = 40


class Residual(nn.Module):
    """conv-bn-relu-conv-bn plus the input, then relu (a ResNet basic block)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)
        self.out = nn.ReLU()

    def forward(self, x):
        return self.out(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))) + x)


def _randomize_bn(model: nn.Module, rng: random.Random) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)


def random_case(seed: int):
    """(model, candidate player layers, input shape, n_classes, is_chain)."""
    rng = random.Random(seed)
    torch.manual_seed(seed)
    n_classes = rng.choice([3, 5])
    if rng.random() < 0.2:
        width = rng.choice([4, 6])
        layers = [nn.Linear(5, width), nn.ReLU(), nn.Linear(width, width), nn.Tanh()]
        model = nn.Sequential(*layers, nn.Linear(width, n_classes)).eval()
        players = [m for m in model if not isinstance(m, nn.Tanh)]
        return model, players, (5,), n_classes, True
    c = rng.choice([3, 4])
    modules, chain = [nn.Conv2d(2, c, 3, padding=1)], True
    size = 8
    for _ in range(rng.randint(2, 4)):
        kind = rng.choice(["conv", "conv_bn", "pool", "residual"])
        if kind == "pool" and size >= 4:
            pool = rng.choice(
                [nn.MaxPool2d(2), nn.AvgPool2d(2), nn.MaxPool2d(3, 2, padding=1)]
            )
            modules += [nn.ReLU(), pool]
            size = (size - 2) // 2 + 1 if pool.kernel_size == 3 else size // 2
        elif kind == "residual":
            modules.append(Residual(c))
            chain = False
        else:
            modules.append(nn.Conv2d(c, c, rng.choice([1, 3]), padding="same"))
            if kind == "conv_bn":
                modules.append(nn.BatchNorm2d(c))
            modules.append(rng.choice([nn.ReLU(), nn.LeakyReLU(0.1), nn.GELU()]))
    modules += [nn.AdaptiveAvgPool2d(rng.choice([1, 2])), nn.Flatten()]
    model = nn.Sequential(*modules)
    with torch.no_grad():
        flat = model(torch.zeros(1, 2, 8, 8)).shape[1]
    model = nn.Sequential(*modules, nn.Linear(flat, n_classes)).eval()
    _randomize_bn(model, rng)
    players = [
        m
        for m in model.modules()
        if isinstance(m, (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.GELU))
        and m is not getattr(model, "out", None)
    ]
    return model, players, (2, 8, 8), n_classes, chain


def random_masks(gen: torch.Generator, n_players: int) -> torch.Tensor:
    rows = [torch.ones(n_players), torch.zeros(n_players)]
    for p in (0.2, 0.5, 0.8):
        rows += list((torch.rand(3, n_players, generator=gen) < p).float())
    perm = torch.randperm(n_players, generator=gen)
    rank_of = torch.empty(n_players, dtype=torch.long)
    rank_of[perm] = torch.arange(n_players)
    walk = (rank_of.unsqueeze(0) >= torch.arange(1, n_players).unsqueeze(1)).float()
    return torch.cat([torch.stack(rows), walk])


def _game(model, layers, batches, metric, removal, engine, rows, budget=None):
    return ShapleyGame(
        model, layers, batches, resolve_metric(metric), resolve_removal(removal),
        engine=engine, rows_per_pass=rows, memory_budget=budget,
    )  # fmt: skip


@pytest.mark.parametrize("seed", range(N_CASES))
def test_every_engine_returns_the_reference_values(seed):
    model, candidates, shape, n_classes, chain = random_case(seed)
    rng = random.Random(1000 + seed)
    layers = rng.sample(candidates, rng.randint(1, min(3, len(candidates))))
    n = rng.choice([5, 12])
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.randint(0, n_classes, (n,), generator=gen)
    split = rng.choice([n, 4])
    batches = [
        ((x[i : i + split],), y[i : i + split], None) for i in range(0, n, split)
    ]
    metric = rng.choice(
        ["loss", "accuracy", lambda out, t: out.softmax(1)[:, 0].mean()]
    )
    removal = rng.choice(["mean", "zero"])
    rows = rng.choice([3, 64])
    reference = _game(model, layers, batches, metric, removal, "hooks", rows)
    masks = random_masks(gen, reference.n_players)
    expected = reference.evaluate(masks)
    applied = []
    for name in ENGINES:
        try:
            game = _game(model, layers, batches, metric, removal, name, rows)
        except ValueError as err:
            assert "does not apply" in str(err)
            continue
        applied.append(name)
        game.start_walk()
        got = game.evaluate(masks)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5, msg=name)
    # every random model is traceable
    assert "prefix" in applied and "graph" in applied
    # the segment engines apply exactly when the model is a chain through
    # the player layers (the residual block's skip crosses its layers)
    call_order = [m for m in model.modules() if any(m is layer for layer in layers)]
    if chain:
        assert "segments" in applied
    if not chain and any(
        any(m is sub for sub in block.modules())
        for block in model.modules()
        if isinstance(block, Residual)
        for m in call_order
    ):
        assert "segments" not in applied
    assert count_hooks(model) == 0


def test_the_property_test_covers_every_engine():
    """Over the random cases, every engine applies somewhere (otherwise the
    property test above would check nothing for it)."""
    seen = set()
    for seed in range(N_CASES):
        model, candidates, shape, n_classes, _ = random_case(seed)
        rng = random.Random(1000 + seed)
        layers = rng.sample(candidates, rng.randint(1, min(3, len(candidates))))
        x = torch.randn(4, *shape)
        batches = [((x,), torch.zeros(4, dtype=torch.long), None)]
        for name in ENGINES:
            try:
                _game(model, layers, batches, "loss", "mean", name, 8)
                seen.add(name)
            except ValueError:
                pass
    assert seen == set(ENGINES), seen


@pytest.mark.parametrize("seed", [0, 3, 7, 11])
def test_graph_engine_under_a_tiny_memory_budget_splits_and_keeps_the_values(seed):
    """A budget below one coalition's activations: the passes are split down
    to single coalitions and slices of the examples, with the same values."""
    model, candidates, shape, n_classes, _ = random_case(seed)
    layers = candidates[:3]
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(9, *shape, generator=gen)
    batches = [((x,), torch.randint(0, n_classes, (9,), generator=gen), None)]
    reference = _game(model, layers, batches, "loss", "mean", "hooks", 64)
    masks = random_masks(gen, reference.n_players)
    expected = reference.evaluate(masks)
    roomy = _game(model, layers, batches, "loss", "mean", "graph", 64)
    tight = _game(model, layers, batches, "loss", "mean", "graph", 64, budget=2000)
    plan = tight.engine.plan(masks)
    assert len(plan.detail) == masks.shape[0]  # one coalition per sub-pass
    assert max(sub.example_slices for sub in plan.detail) > 1
    assert len(roomy.engine.plan(masks).detail) == 1
    for game in (roomy, tight):
        torch.testing.assert_close(game.evaluate(masks), expected, atol=1e-5, rtol=1e-5)


TORCHVISION = {
    "resnet18": dict(),
    "resnet50": dict(),
    "vgg11": dict(),
    "googlenet": dict(aux_logits=False, init_weights=True),
    "inception_v3": dict(aux_logits=False, init_weights=True),
}


@pytest.mark.parametrize("arch", sorted(TORCHVISION))
def test_graph_engine_on_torchvision_architectures_with_every_conv_filter(arch):
    """All convolution filters as one player set (weights=None, tiny inputs):
    the graph engine applies and equals the hook engine on walk coalitions."""
    import warnings

    import torchvision

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision.models, arch)(weights=None, **TORCHVISION[arch])
    model = model.eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    size = 75 if arch == "inception_v3" else 32
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        y = model(x).argmax(1)
    batches = [((x,), y, None)]
    graph = _game(model, convs, batches, "loss", "mean", "graph", 16)
    assert graph.engine_name == "graph"
    auto = _game(model, convs, batches, "loss", "mean", "auto", 16)
    assert auto.engine_name in ("graph", "segments", "incremental")
    hooks = _game(model, convs, batches, "loss", "mean", "hooks", 16)
    gen = torch.Generator().manual_seed(1)
    p = graph.n_players
    rank_of = torch.empty(p, dtype=torch.long)
    rank_of[torch.randperm(p, generator=gen)] = torch.arange(p)
    masks = rank_of.unsqueeze(0) >= torch.linspace(0, p, 6).long().unsqueeze(1)
    masks = torch.cat([masks.float(), (torch.rand(2, p, generator=gen) < 0.5).float()])
    torch.testing.assert_close(
        graph.evaluate(masks), hooks.evaluate(masks), atol=1e-4, rtol=1e-4
    )
    assert count_hooks(model) == 0


@pytest.mark.parametrize("seed", [1, 4, 9, 16, 23])
def test_every_engine_rebound_to_other_examples_returns_the_reference_values(seed):
    """``on_examples`` (the game on a subset of the examples, used per
    permutation) rebinds each engine without rebuilding it: its values are
    the reference's on the new examples, and nothing of the old batches'
    caches leaks in."""
    model, candidates, shape, n_classes, _ = random_case(seed)
    layers = candidates[len(candidates) // 2 :][:2]  # a prefix to cache
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(12, *shape, generator=gen)
    y = torch.randint(0, n_classes, (12,), generator=gen)
    other = torch.randn(7, *shape, generator=gen)
    other_y = torch.randint(0, n_classes, (7,), generator=gen)
    new_batches = [((other[:4],), other_y[:4], None), ((other[4:],), other_y[4:], None)]
    reference = _game(model, layers, new_batches, "loss", "mean", "hooks", 8)
    parent = _game(model, layers, [((x,), y, None)], "loss", "mean", "hooks", 8)
    masks = random_masks(gen, reference.n_players)
    # the removal values come from the parent's examples, in every game
    reference.fills = parent.fills
    reference.engine = reference.engine.rebind(reference)
    expected = reference.evaluate(masks)
    for name in ENGINES:
        try:
            game = _game(model, layers, [((x,), y, None)], "loss", "mean", name, 8)
        except ValueError:
            continue
        game.evaluate(masks)  # fill the caches with the old examples
        sub = game.on_examples(new_batches)
        assert sub.engine is not game.engine and sub.engine.name == name
        torch.testing.assert_close(sub.evaluate(masks), expected, atol=1e-5,
                                   rtol=1e-5, msg=name)  # fmt: skip
