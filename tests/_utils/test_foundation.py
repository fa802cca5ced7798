"""Masking, distances, results and validation shared by every method."""

import dataclasses

import pytest
import torch

from captum_inverseset._utils.distance import mean_pairwise_distance
from captum_inverseset._utils.hooks import apply_unit_mask, mask_units
from captum_inverseset._utils.memory import check_memory
from captum_inverseset._utils.results import InterpretationResult, result_dataclass
from captum_inverseset._utils.validation import (
    check_finite_inputs,
    check_number,
    check_positive_float,
    model_device,
)


def test_mask_units_selects_so_nan_never_leaks():
    out = torch.tensor([[1.0, float("nan"), 3.0], [4.0, 5.0, float("inf")]])
    keep = torch.tensor([[1.0, 0.0, 0.0]])
    res = mask_units(out, keep, torch.tensor([7.0, 8.0, 9.0]))
    assert torch.equal(res, torch.tensor([[1.0, 8.0, 9.0], [4.0, 8.0, 9.0]]))
    # zero fill too: a multiplication would give NaN * 0 = NaN
    res0 = mask_units(out, keep, 0.0)
    assert torch.isfinite(res0).all()


def test_mask_units_per_group_and_errors():
    out = torch.arange(12.0).reshape(4, 3)
    keep = torch.tensor([[True, False, True], [False, True, False]])
    res = mask_units(out, keep)
    assert torch.equal(res[:2, 1], torch.zeros(2)) and torch.equal(
        res[2:, 1], out[2:, 1]
    )
    with pytest.raises(ValueError, match="multiple"):
        mask_units(torch.ones(5, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match="does not match"):
        mask_units(torch.ones(4, 3), torch.ones(2, 4))


def test_apply_unit_mask_refuses_fractional_masks():
    with pytest.raises(ValueError, match="only 0 and 1"):
        apply_unit_mask(torch.ones(2, 3), torch.tensor([0.5, 1.0, 1.0]))


def test_mean_pairwise_distance_is_nan_below_two_rows():
    assert mean_pairwise_distance(torch.ones(1, 3)) != mean_pairwise_distance(
        torch.ones(1, 3)
    )
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert mean_pairwise_distance(x) == pytest.approx(5.0)


@result_dataclass
class _Demo(InterpretationResult):
    values: torch.Tensor = None
    name: str = None
    score: float = None


def test_results_are_dataclasses_with_safe_save(tmp_path):
    with pytest.raises(TypeError):
        _Demo(valuez=torch.ones(2))
    r = _Demo(values=torch.arange(3.0), name="x", score=float("nan"))
    assert dataclasses.is_dataclass(r)
    path = r.save(str(tmp_path / "r.pt"))
    back = _Demo.load(path)
    assert torch.equal(back.values, r.values) and back.name == "x"
    assert back.score != back.score  # NaN survives JSON
    assert "values=Tensor(3,)" in repr(back)


@pytest.mark.parametrize("value", ["0.5", None, True, float("nan"), float("inf")])
def test_numbers_refuse_strings_bools_and_non_finite(value):
    with pytest.raises(ValueError, match="lr must be"):
        check_positive_float("lr", value)
    with pytest.raises(ValueError, match="w must be"):
        check_number("w", value)


def test_check_number_bounds():
    assert check_number("w", 2, minimum=0) == 2.0
    with pytest.raises(ValueError, match="w must be >= 0"):
        check_number("w", -1, minimum=0)
    with pytest.raises(ValueError, match="w must be < 1"):
        check_number("w", 1, maximum=1, strict_maximum=True)


def test_check_finite_inputs_names_the_tensor():
    with pytest.raises(ValueError, match=r"inputs\[1\] contains 2 NaN"):
        check_finite_inputs("inputs", (torch.ones(2), torch.full((2,), float("nan"))))
    check_finite_inputs("inputs", (torch.ones(2), 3, torch.arange(2)))


def test_meta_models_are_refused():
    model = torch.nn.Linear(2, 2, device="meta")
    with pytest.raises(ValueError, match="meta device"):
        model_device(model)


def test_check_memory_names_the_argument():
    with pytest.raises(ValueError, match="n_bins=1000000000000 needs about"):
        check_memory("n_bins", 10**12, 8 * 10**12)
    check_memory("n_bins", 10, 80)


def test_renamed_kwargs_warn_and_forward():
    from captum_inverseset._utils.deprecation import renamed_kwargs

    @renamed_kwargs(labels="target")
    def f(target=None):
        return target

    with pytest.warns(FutureWarning, match="labels= is deprecated, use target="):
        assert f(labels=3) == 3
    with pytest.raises(TypeError, match="both"):
        f(labels=1, target=2)
