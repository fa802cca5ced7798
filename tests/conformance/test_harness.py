"""The harness itself: it must catch methods that misbehave."""

import pytest
import torch
from torch import nn

from captum_inverseset._utils.captum_compat import forward_layer_eval, select_neuron
from captum_inverseset._utils.hooks import capture_layer, preserve_model_state

from .harness import (
    Case,
    check_bad_selector,
    check_global_rng,
    check_layer_error,
    check_success,
)


def _tiny():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))


X = torch.rand(5, 4, generator=torch.Generator().manual_seed(1))


class GoodMethod:
    def __init__(self, model, layer):
        self.model, self.layer = model, layer

    def attribute(self, inputs, neuron_selector, seed=0):
        with preserve_model_state(self.model):
            (out,) = forward_layer_eval(self.model, inputs, self.layer)
            return select_neuron(out, neuron_selector)


class LeakyHookMethod(GoodMethod):
    """Leaves a forward hook behind: the harness must notice."""

    def attribute(self, inputs, neuron_selector, seed=0):
        self.layer.register_forward_hook(lambda m, i, o: None)
        return super().attribute(inputs, neuron_selector, seed)


class LeakOnErrorMethod(GoodMethod):
    """Removes its hook on success only (no ``finally``)."""

    def attribute(self, inputs, neuron_selector, seed=0):
        with preserve_model_state(self.model):
            handle = self.layer.register_forward_hook(lambda m, i, o: None)
            out = self.model(inputs)
            handle.remove()
            return select_neuron(out, neuron_selector)


class ForgetsTrainingFlag(GoodMethod):
    def attribute(self, inputs, neuron_selector, seed=0):
        self.model.eval()
        with torch.no_grad():
            return select_neuron(self.model(inputs), neuron_selector)


class ChangesWeights(GoodMethod):
    def attribute(self, inputs, neuron_selector, seed=0):
        with preserve_model_state(self.model), torch.no_grad():
            self.model[0].weight.add_(1e-3)
            return select_neuron(self.model(inputs), neuron_selector)


class UnseededMethod(GoodMethod):
    def attribute(self, inputs, neuron_selector, seed=0):
        return super().attribute(inputs, neuron_selector) + torch.rand(())


class SwallowsErrors(GoodMethod):
    def attribute(self, inputs, neuron_selector, seed=0):
        try:
            return super().attribute(inputs, neuron_selector)
        except Exception:
            return torch.zeros(len(inputs))


class AddsParameter(GoodMethod):
    """Registers a new parameter: comparing parameters pairwise with zip
    would not see it."""

    def attribute(self, inputs, neuron_selector, seed=0):
        if not hasattr(self.model, "extra"):
            self.model.register_parameter("extra", nn.Parameter(torch.zeros(1)))
        return super().attribute(inputs, neuron_selector, seed)


class GlobalHookLeak(GoodMethod):
    """Leaves a global forward hook (on every module) behind."""

    def attribute(self, inputs, neuron_selector, seed=0):
        from torch.nn.modules.module import register_module_forward_hook

        register_module_forward_hook(lambda m, i, o: None)
        return super().attribute(inputs, neuron_selector, seed)


class WrongSelectorError(GoodMethod):
    """Refuses a bad selector with its own TypeError, not Captum's error."""

    def attribute(self, inputs, neuron_selector, seed=0):
        if neuron_selector[0] >= 3:
            raise TypeError("bad selector")
        return super().attribute(inputs, neuron_selector, seed)


class ConsumesGlobalRNG(GoodMethod):
    def attribute(self, inputs, neuron_selector, seed=0):
        torch.manual_seed(seed)
        return super().attribute(inputs, neuron_selector, seed) + 0 * torch.rand(())


class LeavesGradDisabled(GoodMethod):
    def attribute(self, inputs, neuron_selector, seed=0):
        torch.set_grad_enabled(False)
        return super().attribute(inputs, neuron_selector, seed)


def _case(cls):
    return Case(
        id=cls.__name__,
        make_model=_tiny,
        layer="0",
        make_method=cls,
        call=lambda m, model, seed: m.attribute(X, (1,), seed=seed),
        call_bad_selector=lambda m, model: m.attribute(X, (7,)),
    )


def test_good_method_passes_all_checks():
    case = _case(GoodMethod)
    check_success(case)
    check_bad_selector(case)
    check_layer_error(case)
    check_global_rng(case)


@pytest.mark.parametrize(
    "cls, check, message",
    [
        (LeakyHookMethod, check_success, "hooks left behind"),
        (LeakOnErrorMethod, check_layer_error, "hooks left behind"),
        (ForgetsTrainingFlag, check_success, "training flag changed"),
        (ChangesWeights, check_success, "changed"),
        (UnseededMethod, check_success, "same seed"),
        (SwallowsErrors, check_layer_error, "swallowed"),
        (AddsParameter, check_success, r"params added \['extra'\]"),
        (GlobalHookLeak, check_success, "global module hooks left behind"),
        (WrongSelectorError, check_bad_selector, "bad selector"),
        (ConsumesGlobalRNG, check_global_rng, "global torch random generator"),
        (LeavesGradDisabled, check_success, "is_grad_enabled"),
    ],
)
def test_harness_catches_broken_method(cls, check, message):
    from torch.nn.modules import module as module_mod

    global_hooks = dict(module_mod._global_forward_hooks)
    grad = torch.is_grad_enabled()
    try:
        with pytest.raises((AssertionError, TypeError), match=message):
            check(_case(cls))
    finally:
        module_mod._global_forward_hooks.clear()
        module_mod._global_forward_hooks.update(global_hooks)
        torch.set_grad_enabled(grad)


def test_capture_layer_removes_hook_on_error():
    model = _tiny()
    with pytest.raises(ZeroDivisionError):
        with capture_layer(model[0]):
            raise ZeroDivisionError("inside the block")
    assert not model[0]._forward_hooks
