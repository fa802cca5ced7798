import pytest
import torch
from captum.attr import LayerActivation
from torch import nn

from captum_inverseset._utils.layer_eval import (
    LayerNotCalledError,
    layer_eval,
    neuron_values,
    normalize_selector,
    select_neuron_values,
)


class _CalledTwice(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.shared = nn.Linear(4, 4)
        self.head = nn.Linear(4, 3)

    def forward(self, x):
        return self.head(self.shared(torch.relu(self.shared(x))))


@pytest.fixture
def twice():
    torch.manual_seed(0)
    return _CalledTwice(), torch.randn(5, 4)


def test_module_called_twice_gives_captums_layer_activation(twice):
    model, x = twice
    (ours,) = layer_eval(model, x, model.shared)
    theirs = LayerActivation(model, model.shared).attribute(x)
    assert torch.equal(ours, theirs)
    # the last call, not the first
    first = model.shared(x)
    assert not torch.allclose(ours, first)


def test_layer_input_and_lists(twice):
    model, x = twice
    (inp,) = layer_eval(model, x, model.head, attribute_to_layer_input=True)
    theirs = LayerActivation(model, model.head).attribute(
        x, attribute_to_layer_input=True
    )
    assert torch.equal(inp, theirs)
    outs = layer_eval(model, x, [model.shared, model.head])
    assert len(outs) == 2 and outs[1][0].shape == (5, 3)


def test_grad_enabled_keeps_the_graph(twice):
    model, x = twice
    x = x.clone().requires_grad_(True)
    (out,) = layer_eval(model, x, model.head, grad_enabled=True)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_layer_not_called_is_a_clear_error(twice):
    model, x = twice
    with pytest.raises(LayerNotCalledError, match="not called"):
        layer_eval(model, x, nn.Linear(2, 2))
    with pytest.raises(LayerNotCalledError, match="not called"):
        layer_eval(model, x, [model.head, nn.Linear(2, 2)])


@pytest.fixture
def conv_out():
    torch.manual_seed(0)
    return torch.randn(2, 3, 4, 4)


def test_selector_rule(conv_out):
    out = conv_out
    assert torch.equal(select_neuron_values(out, (1, 2, 3), 2), out[:, 1, 2, 3])
    region = select_neuron_values(out, (1, slice(None), slice(0, 2)), 2)
    assert torch.allclose(region, out[:, 1, :, :2].sum((1, 2)))
    # a bare slice (documented) is a one-element tuple, as in Captum
    bare = select_neuron_values(out.flatten(1), slice(0, 3), 2)
    assert torch.allclose(bare, out.flatten(1)[:, :3].sum(1))
    fn = select_neuron_values(out, lambda t: t[:, 0].amax((1, 2)), 2)
    assert torch.equal(fn, out[:, 0].amax((1, 2)))


@pytest.mark.parametrize(
    "selector, error, match",
    [
        (1, ValueError, "one value per example"),
        ((5, 0, 0), IndexError, "out of bounds"),
        ((0, 0, 0, 0), AssertionError, "Cannot choose"),
        (True, ValueError, "neuron_selector"),
        ((1.5, 0, 0), ValueError, "neuron_selector"),
        ("3", ValueError, "neuron_selector"),
        (lambda t: "x", ValueError, "must return a tensor"),
        (lambda t: t[:1, 0, 0, 0], ValueError, "one value per example"),
    ],
)
def test_selector_errors(conv_out, selector, error, match):
    with pytest.raises(error, match=match):
        select_neuron_values(conv_out, selector, 2)


def test_normalize_selector_forms():
    assert normalize_selector([1, 2]) == (1, 2)
    assert normalize_selector(slice(3)) == (slice(3),)
    assert normalize_selector(4) == 4


def test_neuron_values_mixes_inputs_and_outputs(twice):
    model, x = twice
    got = neuron_values(
        model,
        x,
        [(model.shared, 1, False), (model.head, 2, False), (model.head, 0, True)],
    )
    act = LayerActivation(model, model.shared).attribute(x)
    head_in = LayerActivation(model, model.head).attribute(
        x, attribute_to_layer_input=True
    )
    assert torch.equal(got[:, 0], act[:, 1])
    assert torch.equal(got[:, 1], model(x)[:, 2])
    assert torch.equal(got[:, 2], head_in[:, 0])
