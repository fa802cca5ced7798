"""Incremental linear fronts (``_shapley_additive``) and the depth-first path."""

import pytest
import torch
from torch import nn

from captum_inverseset import NeuronShapley
from captum_inverseset._core.layer.neuron_shapley.engines import incremental
from captum_inverseset._core.layer.neuron_shapley.engines.additive import (
    AdditiveStage,
    split_linear_front,
)
from captum_inverseset._core.layer.neuron_shapley.engines.cpu_kernels import (
    TiledMaxPool2d,
)
from captum_inverseset._core.layer.neuron_shapley.engines.fx_split import split_chain
from captum_inverseset._core.layer.neuron_shapley.engines.segments import (
    split_channelwise_head,
)
from captum_inverseset._utils.hooks import count_hooks
from captum_inverseset._utils.hooks import mask_units as group_mask

from ._shapley_models import make_mlp


def _front(model, layers, index):
    segments = split_chain(model, layers)
    head, rest = split_channelwise_head(segments[index + 1])
    return head, split_linear_front(rest)


@pytest.mark.parametrize("removal_fill", [0.0, "tensor"])
def test_channel_deltas_add_up_to_the_direct_output(removal_fill):
    from captum_inverseset.zoo import digits_classifier

    torch.manual_seed(0)
    model = digits_classifier().eval()
    layers = [model.conv1, model.conv2, model.conv3]
    for index, expected in [(0, nn.Conv2d), (1, nn.Conv2d), (2, nn.Linear)]:
        head, front = _front(model, layers, index)
        assert front is not None and isinstance(front.module, expected)
        c = layers[index].out_channels
        h = torch.randn(6, c, 8 if index == 0 else (8 if index == 1 else 4),
                        8 if index == 0 else (8 if index == 1 else 4))  # fmt: skip
        if head is not None:
            h = head(h)
        fill = removal_fill if removal_fill == 0.0 else torch.randn(h.shape[1:])
        stage = AdditiveStage(front, fill, tuple(h.shape[1:]))
        keep = (torch.rand(c) > 0.4).float()
        with torch.no_grad():
            direct = stage.direct(group_mask(h, keep.unsqueeze(0), fill))
            full = stage.direct(h)
            incremental = full.clone()
            for ch in torch.nonzero(keep == 0).flatten().tolist():
                incremental -= stage.channel_delta(h, ch)
        assert stage.out_shape == tuple(direct.shape[1:])
        torch.testing.assert_close(incremental, direct, atol=1e-5, rtol=1e-5)
        # and the tail finishes the segment as the original module chain did
        with torch.no_grad():
            seg_out = front.tail(direct)
        assert seg_out.shape[0] == 6


@pytest.mark.parametrize(
    "conv",
    [
        dict(kernel_size=3, padding=1),
        dict(kernel_size=3, padding=0),
        dict(kernel_size=(3, 2), padding=(1, 0), stride=(2, 1)),
        dict(kernel_size=5, padding=2, stride=2),
        dict(kernel_size=3, padding=2, dilation=2),  # the convolution fallback
    ],
    ids=["k3p1", "k3p0", "k32s21", "k5p2s2", "dilated"],
)
def test_channel_delta_equals_a_one_channel_convolution(conv):
    torch.manual_seed(0)
    module = nn.Conv2d(4, 5, **conv).eval()
    front = split_linear_front(
        torch.fx.symbolic_trace(nn.Sequential(module, nn.ReLU()))
    )
    fill = torch.randn(4, 9, 7)
    stage = AdditiveStage(front, fill, (4, 9, 7))
    h = torch.randn(3, 4, 9, 7)
    with torch.no_grad():
        for c in range(4):
            only_c = torch.zeros_like(h)
            only_c[:, c] = h[:, c] - fill[c]
            expected = nn.functional.conv2d(
                only_c, module.weight, None, module.stride, module.padding,
                module.dilation,
            )  # fmt: skip
            torch.testing.assert_close(
                stage.channel_delta(h, c), expected, atol=1e-5, rtol=1e-5
            )


def test_linear_front_split_rules():
    # flatten -> linear -> relu: a linear front with a tail
    seq = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(12, 4), nn.ReLU())
    segments = split_chain(seq, [seq[0]])
    front = split_linear_front(segments[1])
    assert front is not None and front.flatten and front.module is seq[2]
    x = torch.randn(2, 3, 2, 2)
    with torch.no_grad():
        assert torch.equal(front.tail(front.module(x.flatten(1))), segments[1](x))
    # a grouped convolution reads several channels per group: no front
    seq = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2))
    assert split_linear_front(split_chain(seq, [seq[0]])[1]) is None
    # a module that is not linear first: no front
    seq = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3), nn.Linear(3, 2))
    assert split_linear_front(split_chain(seq, [seq[0]])[1]) is None


@pytest.mark.parametrize("shape,kernel", [((2, 3, 8, 8), 2), ((2, 3, 7, 9), 2),
                                          ((1, 2, 9, 10), 3), ((2, 2, 9, 8), (3, 2)),
                                          ((2, 2, 8, 9), (1, 3))])  # fmt: skip
def test_tiled_max_pool_equals_max_pool(shape, kernel):
    pool = nn.MaxPool2d(kernel)
    tiled = TiledMaxPool2d.wrap(pool)
    assert tiled is not None
    x = torch.randn(shape)
    assert torch.equal(tiled(x), pool(x))
    # overlapping windows or padding are left to PyTorch
    assert TiledMaxPool2d.wrap(nn.MaxPool2d(3, stride=2)) is None
    assert TiledMaxPool2d.wrap(nn.MaxPool2d(2, padding=1)) is None


@pytest.mark.parametrize("removal", ["mean", "zero"])
def test_depth_first_incremental_path_equals_direct_segments(removal):
    from captum_inverseset.zoo import digits_classifier, load_digits_dataset

    model = digits_classifier()
    data = load_digits_dataset()
    x, y = data.test_inputs[:40], data.test_labels[:40]
    layers = [model.conv1, model.conv2, model.conv3]
    out = []
    for engine in ("incremental", "segments"):
        # named explicitly, the incremental engine walks even 40 examples
        # depth first
        st = NeuronShapley(model, layers).interpret(
            x, target=y, metric="loss", removal=removal, n_permutations=3,
            coalitions_per_batch=7, engine=engine,
        )  # fmt: skip
        out.append((st.values_per_layer(), st))
    (a, sa), (b, sb) = out
    assert sa.incremental and not sb.incremental
    assert sa.segment_cache and sb.segment_cache
    for ta, tb in zip(a, b):
        torch.testing.assert_close(ta, tb, atol=1e-5, rtol=0)
    assert sa.n_evaluations == sb.n_evaluations
    # untruncated walks telescope exactly, whatever the evaluation path
    assert abs(sa.values.sum().item() - (sa.value_full - sa.value_empty)) < 1e-9
    assert count_hooks(model) == 0


def test_incremental_path_is_off_for_small_batches_and_exact():
    from captum_inverseset.zoo import digits_classifier, load_digits_dataset

    model = digits_classifier()
    data = load_digits_dataset()
    x, y = data.test_inputs[:300], data.test_labels[:300]
    ns = NeuronShapley(model, model.conv3)
    st = ns.interpret(x, target=y, n_permutations=1)
    assert st.incremental  # 300 examples per batch, on the CPU
    st = ns.interpret(x[:40], target=y[:40], n_permutations=1)
    assert not st.incremental and st.engine == "segments"
    st = ns.interpret(x, target=y, n_permutations=1, batch_size=50)
    assert not st.incremental
    st = ns.interpret(x, target=y, n_permutations=1, batch_size=100)
    assert st.incremental
    st = ns.interpret(x[:20], target=y[:20], exact=False, n_permutations=1,
                      engine="incremental")  # fmt: skip
    assert st.incremental  # named: every batch depth first


@pytest.mark.parametrize("dead", ["output", "outgoing_weights"])
def test_dead_neuron_gets_exactly_zero_on_the_incremental_path(dead):
    model = make_mlp(hidden=5)
    with torch.no_grad():
        if dead == "output":
            model.fc1.weight[4] = 0.0
            model.fc1.bias[4] = -1.0  # relu output always 0
        else:
            model.fc2.weight[:, 4] = 0.0  # nothing reads it
    g = torch.Generator().manual_seed(1)
    x = torch.randn(40, 3, generator=g)
    y = torch.randint(0, 3, (40,), generator=g)
    ns = NeuronShapley(model, model.relu)
    st = ns.interpret(x, target=y, metric="loss", removal="zero",
                      n_permutations=12, engine="incremental")  # fmt: skip
    values = st.values
    assert st.incremental
    assert values[4].item() == 0.0
    assert values[:4].abs().min() > 1e-4


class _AddInPlace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)
        self.fc = nn.Linear(3 * 36, 3)

    def forward(self, x):
        h = self.conv1(x)
        h.add_(1.0)  # an in-place tensor method
        return self.fc(self.conv2(h).flatten(1))


def test_in_place_activations_keep_the_fast_paths_and_the_model():
    """ReLU(inplace=True) (torchvision's habit) runs out of place inside the
    segments: the incremental path still runs and agrees with the direct
    one, and the model's modules keep inplace=True."""
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(6, 5, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
        nn.Flatten(), nn.Linear(5 * 36, 12), nn.ReLU(inplace=True),
        nn.Linear(12, 3),
    ).eval()  # fmt: skip
    x, y = torch.randn(20, 1, 6, 6), torch.randint(0, 3, (20,))
    values = []
    for depth_first in (True, False):
        ns = NeuronShapley(model, [model[0], model[2]])
        st = ns.interpret(x, target=y, metric="loss", n_permutations=6, seed=0,
                          engine="incremental" if depth_first else "segments")
        assert st.segment_cache
        assert st.incremental == depth_first
        values.append(st.values.float())
    torch.testing.assert_close(values[0], values[1], atol=1e-6, rtol=0)
    assert [m.inplace for m in model if hasattr(m, "inplace")] == [True] * 3
    # the hooks engine (no segments) gives the same values
    ns = NeuronShapley(model, [model[0], model[2]])
    out = ns.attribute(x, target=y, metric="loss", n_permutations=6, seed=0,
                       engine="hooks")  # fmt: skip
    torch.testing.assert_close(torch.cat(out), values[1], atol=1e-6, rtol=0)


def test_in_place_tensor_operations_fall_back_from_segments():
    model = _AddInPlace().eval()
    assert split_chain(model, [model.conv1, model.conv2]) is None
    x, y = torch.randn(8, 1, 6, 6), torch.randint(0, 3, (8,))
    ns = NeuronShapley(model, [model.conv1, model.conv2])
    st = ns.interpret(x, target=y, metric="loss", n_permutations=3, seed=0)
    assert not st.segment_cache
    fast = [v.float() for v in st.values_per_layer()]
    slow = ns.attribute(x, target=y, metric="loss", n_permutations=3, seed=0,
                        engine="hooks")  # fmt: skip
    torch.testing.assert_close(torch.cat(fast), torch.cat(slow), atol=1e-6, rtol=0)


def _stage_cases():
    """(segment after a player layer, player output shape) for each kind of
    linear front: convolutions with several geometries, a linear layer on
    flattened maps and a linear layer on vectors."""
    return [
        (nn.Sequential(nn.Conv2d(4, 5, 3, padding=1), nn.ReLU()), (4, 6, 6)),
        (
            nn.Sequential(nn.Conv2d(4, 5, (3, 2), stride=(2, 1), padding=(1, 0))),
            (4, 7, 5),
        ),  # fmt: skip
        (nn.Sequential(nn.Conv1d(4, 3, 3, padding=2, dilation=2)), (4, 9)),
        (nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 6), nn.ReLU()), (4, 3, 3)),
        (nn.Sequential(nn.Linear(4, 6)), (4,)),
    ]


@pytest.mark.parametrize("case", range(5))
@pytest.mark.parametrize("removal_fill", [0.0, "tensor"])
def test_masked_weight_equals_direct_on_masked_activations(case, removal_fill):
    segment, unit = _stage_cases()[case]
    torch.manual_seed(case)
    front = split_linear_front(torch.fx.symbolic_trace(segment.eval()))
    assert front is not None
    fill = 0.0 if removal_fill == 0.0 else torch.randn(unit)
    stage = AdditiveStage(front, fill, unit)
    h = torch.randn(5, *unit)
    for keep in ([1, 0, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [0, 1, 0, 1]):
        keep = torch.tensor(keep, dtype=torch.float32)
        with torch.no_grad():
            expected = stage.direct(group_mask(h, keep.unsqueeze(0), fill))
            got = stage.masked(h, keep)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_live_channels_are_those_with_a_nonzero_contribution():
    segment, unit = _stage_cases()[0]
    front = split_linear_front(torch.fx.symbolic_trace(segment.eval()))
    torch.manual_seed(0)
    with torch.no_grad():
        front.module.weight[:, 2] = 0.0  # channel 2 is read by nobody
    fill = torch.randn(unit)
    stage = AdditiveStage(front, fill, unit)
    h = torch.randn(5, *unit)
    h[:, 1] = fill[1]  # channel 1 always equals its removal value
    live = stage.live_channels(h)
    assert live == [0, 3]
    with torch.no_grad():
        for c in range(4):
            assert bool(stage.channel_delta(h, c).any()) == (c in live)


def test_leaves_run_the_tail_on_groups_of_rows_in_row_order():
    calls = []

    def tail(x):
        calls.append(x.shape[0])
        return x * 2

    rows = [torch.full((3, 2), float(r)) for r in range(7)]
    leaves = incremental.Leaves(7, group_bytes=3 * 2 * 4 * 3)  # 3 rows a group
    order = [4, 0, 6, 2, 1, 5, 3]
    for r in order:
        if r == 5:
            leaves.add(r, rows[r] * 2)  # a row that comes finished
        else:
            leaves.add(r, rows[r], tail)
    out = leaves.result()
    assert torch.equal(out, torch.cat(rows) * 2)
    assert calls == [9, 9]  # two groups of three rows; no empty flush


def test_a_wide_player_layer_walks_depth_first_with_few_examples():
    """Few examples but thousands of players: the breadth-first engine would
    pay for every channel of the next layer on every row, so "auto" walks
    depth first (same values as breadth first); a narrow layer with as few
    examples stays breadth first."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=g)
    y = torch.randint(0, 3, (16,), generator=g)
    kw = dict(target=y, metric="loss", n_permutations=1, seed=0)
    torch.manual_seed(0)
    wide = nn.Sequential(nn.Linear(6, 2048), nn.ReLU(), nn.Linear(2048, 3)).eval()
    ns = NeuronShapley(wide, wide[0])
    auto = ns.interpret(x, **kw)
    assert auto.engine == "incremental"
    breadth = ns.interpret(x, engine="segments", **kw)
    torch.testing.assert_close(auto.values, breadth.values, atol=1e-6, rtol=0)
    narrow = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3)).eval()
    assert NeuronShapley(narrow, narrow[0]).interpret(x, **kw).engine == "segments"


def test_a_wrong_incremental_path_is_caught_by_the_check(monkeypatch):
    """The incremental engine compares itself with direct evaluation on a
    few examples before it is used: a wrong incremental path does not apply
    ("auto" then runs the breadth-first segments, with their values; named
    explicitly, it is an error)."""
    from captum_inverseset._core.layer.neuron_shapley.engines import additive

    model = make_mlp(hidden=5)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(120, 3, generator=g)
    y = torch.randint(0, 3, (120,), generator=g)
    kw = dict(target=y, metric="loss", n_permutations=4, seed=0)
    ns = NeuronShapley(model, model.fc1)
    right = ns.interpret(x, **kw)
    assert right.engine == "incremental"
    direct = ns.attribute(x, engine="segments", **kw)
    torch.testing.assert_close(right.values.float(), direct, atol=1e-6, rtol=0)
    real = additive.AdditiveStage.channel_delta
    monkeypatch.setattr(
        additive.AdditiveStage,
        "channel_delta",
        lambda self, h, c: 2 * real(self, h, c),
    )
    st = ns.interpret(x, **kw)
    assert st.segment_cache and not st.incremental
    assert torch.equal(st.values.float(), direct)
    with pytest.raises(ValueError, match="does not reproduce the direct one"):
        ns.attribute(x, engine="incremental", **kw)
