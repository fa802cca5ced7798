"""Checks every public method class must pass (written for this project).

A :class:`Case` says how to build a model, a method instance on one of its
layers, a successful call and a call with an out-of-range neuron selector. The
checks raise ``AssertionError`` with a message naming what was left behind.
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
from torch import nn

from captum_inverseset._utils.captum_compat import get_module_from_name
from captum_inverseset._utils.hooks import count_hooks

# What Captum's own selection raises for an out-of-range selector: an
# IndexError from indexing, or the AssertionError of ``_verify_select_column``
# for too many indices. Anything else (a TypeError from our own code, a
# RuntimeError from a shape mismatch) means the selector was not handled as
# Captum handles it.
CAPTUM_SELECTOR_ERRORS = (IndexError, AssertionError)


@dataclass
class Case:
    """One method on one model.

    Attributes:
        id: test id.
        make_model: () -> model whose state must be preserved (the classifier,
            or the generator for generator-side methods).
        layer: dotted name of the layer inside the model.
        make_method: (model, layer) -> method instance.
        call: (method, model, seed) -> result (tensor, tuple or result object).
        call_bad_selector: (method, model) -> None; must raise. For a method
            with a neuron selector, an out-of-range selector; for one without,
            an out-of-range argument. None when there is no such call.
        bad_call_errors: the exception types ``call_bad_selector`` may raise:
            Captum's selector errors by default, ``(ValueError,)`` for an
            out-of-range argument of a method without a selector.
        extra_models: () -> dict of other modules the method receives (e.g. a
            generator) whose state must be preserved too; built once per check
            and passed to make_method through ``case.extras``.
    """

    id: str
    make_model: Callable[[], nn.Module]
    layer: str
    make_method: Callable[..., Any]
    call: Callable[..., Any]
    call_bad_selector: Optional[Callable[..., Any]] = None
    bad_call_errors: Tuple[type, ...] = CAPTUM_SELECTOR_ERRORS
    make_extras: Callable[[], Dict[str, nn.Module]] = field(default=lambda: {})


_GLOBAL_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_backward_pre_hooks",
    "_global_buffer_registration_hooks",
    "_global_module_registration_hooks",
    "_global_parameter_registration_hooks",
)


def _global_hooks() -> Dict[str, int]:
    """Hooks registered for every module (``nn.modules.module.register_module_*``)."""
    from torch.nn.modules import module as module_mod

    return {
        name: len(getattr(module_mod, name))
        for name in _GLOBAL_HOOK_DICTS
        if hasattr(module_mod, name)
    }


def _snapshot(models: List[nn.Module]) -> dict:
    return {
        "params": [
            {n: p.detach().clone() for n, p in m.named_parameters()} for m in models
        ],
        "buffers": [
            {n: b.detach().clone() for n, b in m.named_buffers()} for m in models
        ],
        "training": [[sub.training for sub in m.modules()] for m in models],
        "requires_grad": [[p.requires_grad for p in m.parameters()] for m in models],
        "hooks": [count_hooks(m) for m in models],
        "global_hooks": _global_hooks(),
        "grad_enabled": torch.is_grad_enabled(),
    }


def _assert_same_state(before: dict, after: dict, what: str) -> None:
    assert before["hooks"] == after["hooks"], (
        f"{what}: hooks left behind (counts before {before['hooks']}, "
        f"after {after['hooks']})"
    )
    assert before["global_hooks"] == after["global_hooks"], (
        f"{what}: global module hooks left behind ({before['global_hooks']} -> "
        f"{after['global_hooks']})"
    )
    for key in ("params", "buffers"):
        for mb, ma in zip(before[key], after[key], strict=True):
            added, removed = set(ma) - set(mb), set(mb) - set(ma)
            assert not added and not removed, (
                f"{what}: {key} added {sorted(added)} / removed {sorted(removed)}"
            )
            for name, tb in mb.items():
                ta = ma[name]
                assert tb.shape == ta.shape and torch.equal(tb, ta), (
                    f"{what}: {key[:-1]} {name} changed"
                )
    assert before["training"] == after["training"], f"{what}: training flag changed"
    assert before["requires_grad"] == after["requires_grad"], (
        f"{what}: requires_grad changed"
    )
    assert before["grad_enabled"] == after["grad_enabled"], (
        f"{what}: torch.is_grad_enabled() changed"
    )


def _prepare(case: Case, device: Optional[torch.device] = None):
    torch.manual_seed(0)
    model = case.make_model()
    extras = case.make_extras()
    if device is not None:
        model = model.to(device)
        extras = {k: m.to(device) for k, m in extras.items()}
    models = [model, *extras.values()]
    # Unusual starting state: train mode and one frozen parameter, so a method
    # that forces eval()/requires_grad and forgets to restore is caught.
    for m in models:
        m.train()
        params = list(m.parameters())
        if params:
            params[0].requires_grad_(False)
    layer = get_module_from_name(model, case.layer) if case.layer else None
    method = case.make_method(model, layer, **extras)
    return model, models, method


def _flatten(result: Any) -> List[torch.Tensor]:
    if torch.is_tensor(result):
        return [result]
    if isinstance(result, (tuple, list)):
        out: List[torch.Tensor] = []
        for r in result:
            out.extend(_flatten(r))
        return out
    if hasattr(result, "tensors"):
        return _flatten(result.tensors())
    if hasattr(result, "__dict__"):
        out = []
        for v in vars(result).values():
            if torch.is_tensor(v):
                out.append(v)
        return out
    return []


def check_success(case: Case, device: Optional[torch.device] = None) -> None:
    """Hooks, parameters, buffers, flags unchanged; same result twice.

    With ``device``, the models are moved there first and every tensor of the
    result must be on that device or on the CPU (statistics).
    """
    model, models, method = _prepare(case, device)
    before = _snapshot(models)
    first = case.call(method, model, 0)
    _assert_same_state(before, _snapshot(models), "after a successful call")
    second = case.call(method, model, 0)
    a, b = _flatten(first), _flatten(second)
    assert a, "the call returned no tensors to compare"
    if device is not None:
        stray = {t.device.type for t in a} - {torch.device(device).type, "cpu"}
        assert not stray, f"result tensors on unexpected devices: {stray}"
    assert len(a) == len(b), "results of two seeded calls differ in structure"
    for ta, tb in zip(a, b):
        assert ta.shape == tb.shape and torch.allclose(
            ta.float(), tb.float(), atol=1e-6, equal_nan=True
        ), "two calls with the same seed gave different results"


def check_bad_selector(case: Case, device: Optional[torch.device] = None) -> None:
    """An out-of-range neuron selector raises Captum's error and leaves nothing
    behind."""
    if case.call_bad_selector is None:
        return
    model, models, method = _prepare(case, device)
    before = _snapshot(models)
    raised = None
    try:
        case.call_bad_selector(method, model)
    except case.bad_call_errors as err:
        raised = err
    assert raised is not None, "an out-of-range neuron selector did not raise"
    _assert_same_state(before, _snapshot(models), "after a bad neuron selector")


class _LayerError(RuntimeError):
    pass


def check_layer_error(case: Case, device: Optional[torch.device] = None) -> None:
    """A layer that raises mid-forward leaves no hooks or state changes."""
    model, models, method = _prepare(case, device)
    layer = get_module_from_name(model, case.layer) if case.layer else model
    before = _snapshot(models)

    def boom(module, args):
        raise _LayerError("deliberate failure inside the layer")

    handle = layer.register_forward_pre_hook(boom)
    raised = False
    try:
        case.call(method, model, 0)
    except _LayerError:
        raised = True
    finally:
        handle.remove()
    assert raised, "the layer's error was swallowed instead of propagated"
    _assert_same_state(before, _snapshot(models), "after an erroring layer")


def check_global_rng(case: Case, device: Optional[torch.device] = None) -> None:
    """The call draws its randomness from its own ``torch.Generator`` (its
    seed), not from the global generator: the user's random stream is left
    where it was."""
    model, models, method = _prepare(case, device)
    state = torch.random.get_rng_state()
    case.call(method, model, 0)
    assert torch.equal(state, torch.random.get_rng_state()), (
        "the call consumed the global torch random generator"
    )


ALL_CHECKS = [check_success, check_bad_selector, check_layer_error, check_global_rng]
