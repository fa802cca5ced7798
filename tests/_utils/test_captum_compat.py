import pathlib
import re

import torch
from captum.attr import LayerActivation

import captum_inverseset
from captum_inverseset._utils.captum_compat import (
    format_inputs,
    format_output,
    forward_layer_eval,
    get_module_from_name,
    select_neuron,
)
from captum_inverseset.zoo import digits_classifier


def test_only_the_compat_module_imports_captum_private_utils():
    root = pathlib.Path(captum_inverseset.__file__).parent
    offenders = []
    for path in root.rglob("*.py"):
        if path.name == "captum_compat.py":
            continue
        if re.search(r"captum\._utils|from captum import _utils", path.read_text()):
            offenders.append(str(path.relative_to(root)))
    assert offenders == []


def test_forward_layer_eval_matches_captum_layer_activation():
    model = digits_classifier()
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    (ours,) = forward_layer_eval(model, x, model.conv2)
    theirs = LayerActivation(model, model.conv2).attribute(x)
    assert torch.equal(ours, theirs)


def test_select_neuron_forms():
    out = torch.arange(2 * 3 * 2, dtype=torch.float32).reshape(2, 3, 2)
    assert torch.equal(select_neuron(out, (1, 0)), out[:, 1, 0])
    assert torch.equal(select_neuron(out, (1, slice(0, 2))), out[:, 1].sum(1))
    assert torch.equal(select_neuron(out, lambda o: o[:, 2, 1]), out[:, 2, 1])


def test_select_neuron_out_of_range_raises_like_captum():
    out = torch.zeros(2, 3)
    try:
        select_neuron(out, (5,))
    except (IndexError, AssertionError):
        return
    raise AssertionError("out-of-range selector did not raise")


def test_formatting_and_module_lookup():
    x = torch.zeros(2)
    assert format_inputs(x) == (x,)
    assert format_output(False, (x,)) is x
    model = digits_classifier()
    assert get_module_from_name(model, "conv2") is model.conv2
