import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from captum_inverseset._utils.data import (
    check_target_range,
    count_batches,
    format_target,
    iter_batches,
)


def test_iter_batches_tensor_and_loader_agree():
    x, y = torch.randn(10, 3), torch.arange(10)
    a = list(iter_batches(x, y, 4, "labels"))
    b = list(iter_batches(DataLoader(TensorDataset(x, y), batch_size=4), None, 4, "l"))
    assert [t[0][0].shape[0] for t in a] == [4, 4, 2] == [t[0][0].shape[0] for t in b]
    assert count_batches(x, 4) == 3
    assert all(torch.equal(p[1], q[1]) for p, q in zip(a, b))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_iter_batches_refuses_non_finite_inputs(bad):
    x = torch.randn(6, 3)
    x[4, 1] = bad
    with pytest.raises(ValueError, match="inputs contains 1 NaN or infinite"):
        list(iter_batches(x, None, 2, "labels"))
    loader = DataLoader(TensorDataset(x), batch_size=2)
    with pytest.raises(ValueError, match="inputs contains"):
        list(iter_batches(loader, None, 2, "labels"))


def test_iter_batches_refuses_meta_inputs():
    with pytest.raises(ValueError, match="meta"):
        list(iter_batches(torch.empty(4, 2, device="meta"), None, 2, "labels"))


def test_format_target_accepts_captum_forms():
    assert torch.equal(format_target(3, 4), torch.full((4,), 3))
    assert torch.equal(format_target([0, 1, 2], 3), torch.tensor([0, 1, 2]))
    assert torch.equal(format_target(torch.tensor([1.0, 2.0]), 2), torch.tensor([1, 2]))
    assert format_target(None, 3) is None


@pytest.mark.parametrize(
    "target, match",
    [
        (3.7, "integer class indices"),
        (torch.tensor([1.0, 3.7]), "3.7"),
        (torch.tensor([1.0, float("nan")]), "integer class indices"),
        (True, "int class index"),
        (torch.tensor([True, False]), "not bools"),
        (-1, "non-negative"),
        (torch.tensor([0, 1, 2]), r"shape \(2,\)"),
        ("3", "target"),
    ],
)
def test_format_target_refuses_bad_labels(target, match):
    with pytest.raises(ValueError, match=match):
        format_target(target, 2)


def test_check_target_range_names_the_classes():
    with pytest.raises(ValueError, match="class index 99.*10 outputs"):
        check_target_range(torch.tensor([0, 99]), 10)
    check_target_range(torch.tensor([0, 9]), 10)
