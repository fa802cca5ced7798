"""Hook lifetimes as context managers.

Every hook this package registers goes through one of these context managers,
so it is removed when the ``with`` block ends, also when the block raises.
:func:`preserve_model_state` restores what a method may touch on the model
(``training`` flags and ``requires_grad``) the same way.
"""

from contextlib import contextmanager
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Union

import torch
from torch import nn

__all__ = [
    "LayerCapture",
    "capture_layer",
    "count_hooks",
    "mask_layer_units",
    "mask_units",
    "preserve_model_state",
    "replace_layer_output",
    "stop_after_layer",
]


class LayerCapture:
    """Holds what :func:`capture_layer` recorded during the ``with`` block.

    Attributes:
        outputs (list of Tensor): one entry per forward call of the layer, in
            call order (a layer called twice in one forward appears twice).
        inputs (list of tuple of Tensor): the layer's positional inputs, only
            when ``capture_input=True``.
    """

    def __init__(self) -> None:
        self.outputs: List[torch.Tensor] = []
        self.inputs: List[tuple] = []

    @property
    def output(self) -> torch.Tensor:
        """The output of the most recent call of the layer."""
        if not self.outputs:
            raise RuntimeError(
                "The layer was not called during the forward pass: is it a "
                "submodule used by the forward function?"
            )
        return self.outputs[-1]

    @property
    def input(self) -> torch.Tensor:
        """The first positional input of the most recent call of the layer."""
        if not self.inputs:
            raise RuntimeError("The layer was not called during the forward pass.")
        return self.inputs[-1][0]

    def clear(self) -> None:
        self.outputs.clear()
        self.inputs.clear()


@contextmanager
def capture_layer(
    layer: nn.Module, capture_input: bool = False, detach: bool = False
) -> Iterator[LayerCapture]:
    """Record a layer's output (and optionally its input) on every forward call.

    Args:
        layer (nn.Module): the module to watch.
        capture_input (bool, optional): also record the positional inputs.
            Default: False
        detach (bool, optional): store detached tensors (no graph kept).
            Default: False

    Examples::

        >>> with capture_layer(model.conv1) as cap:
        ...     model(x)
        >>> cap.output.shape
    """
    record = LayerCapture()

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if capture_input:
            record.inputs.append(
                tuple(a.detach() if detach and torch.is_tensor(a) else a for a in args)
            )
        record.outputs.append(output.detach() if detach else output)

    handle = layer.register_forward_hook(hook)
    try:
        yield record
    finally:
        handle.remove()


class _StopForward(BaseException):
    """Ends a forward pass at a layer (see :func:`stop_after_layer`).

    A ``BaseException``, so that a model's own ``except Exception`` blocks do
    not swallow it."""


@contextmanager
def stop_after_layer(layer: nn.Module, detach: bool = True) -> Iterator[LayerCapture]:
    """Record ``layer``'s output and end the forward pass right there.

    The forward call inside the ``with`` block does not return: the hook
    raises as soon as the layer has run, the block is left at that call, and
    the exception is swallowed when the block ends, so the layers after
    ``layer`` never run. Put nothing after the forward call in the block. If
    the layer is not called, the forward runs to its end and ``outputs`` is
    empty. Only the layer's *first* call is seen: for a layer called more
    than once per forward use :func:`capture_layer` (or ``layer_eval``).

    Args:
        layer (nn.Module): the module whose output is wanted.
        detach (bool, optional): store a detached output. Default: True

    Examples::

        >>> with stop_after_layer(model.features) as cap:
        ...     model(x)  # stops after model.features
        >>> cap.output.shape
    """
    record = LayerCapture()
    token = object()  # tells this block's stop from a nested block's

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        record.outputs.append(output.detach() if detach else output)
        raise _StopForward(token)

    handle = layer.register_forward_hook(hook)
    try:
        yield record
    except _StopForward as stop:
        if stop.args[0] is not token:
            raise
    finally:
        handle.remove()


@contextmanager
def replace_layer_output(
    layer: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor]
) -> Iterator[None]:
    """Replace ``layer``'s output by ``fn(output)`` inside the block."""

    def hook(module: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return fn(output)

    handle = layer.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def mask_units(
    output: torch.Tensor,
    keep: torch.Tensor,
    fill: Union[None, float, torch.Tensor] = None,
) -> torch.Tensor:
    """The package's one masking rule: keep units where ``keep`` is true and
    put ``fill`` in the others, *selecting* (``torch.where``), never
    multiplying, so a removed unit's value (even NaN or infinite) never leaks
    into the result.

    ``keep`` is ``(G, *unit_prefix)``: one mask per group of examples, where
    the batch is ``G`` consecutive blocks of equal size (coalition ``g``
    applies to examples ``g * B .. (g + 1) * B - 1``), and ``unit_prefix`` a
    prefix of one example's unit shape (``(C,)`` for a conv layer's channels).
    ``keep`` is read as per-group always, so ``G == C`` is never ambiguous.
    ``fill`` is None or 0 (zero), a number, or a tensor that broadcasts
    against one example's units (e.g. the mean activation, ``(C, H, W)``).
    """
    unit_shape = output.shape[1:]
    n_groups = keep.shape[0]
    if n_groups == 0 or output.shape[0] % n_groups:
        raise ValueError(
            f"keep has {n_groups} per-group masks but the layer output batch is "
            f"{output.shape[0]}, not a multiple of it"
        )
    per = tuple(keep.shape[1:])
    if per != tuple(unit_shape[: len(per)]):
        raise ValueError(
            f"keep mask shape {tuple(keep.shape)} does not match layer units "
            f"{tuple(unit_shape)}"
        )
    block = output.shape[0] // n_groups
    out = output.reshape(n_groups, block, *unit_shape)
    m = keep if keep.dtype == torch.bool else keep != 0
    m = m.to(output.device).reshape(
        n_groups, 1, *per, *([1] * (len(unit_shape) - len(per)))
    )
    if fill is None or (not torch.is_tensor(fill) and float(fill) == 0.0):
        fill_t = output.new_zeros(())
    else:
        fill_t = torch.as_tensor(fill, device=output.device, dtype=output.dtype)
    return torch.where(m, out, fill_t).reshape(output.shape)


def apply_unit_mask(
    output: torch.Tensor,
    keep: torch.Tensor,
    fill: Union[float, torch.Tensor] = 0.0,
) -> torch.Tensor:
    """Keep the units where ``keep`` is 1 and put ``fill`` elsewhere.

    ``keep`` holds 0/1 (or bools). It is either one mask for all examples,
    shaped like a prefix of the unit shape (``(C,)`` for a conv layer's
    channels, or ``(C, H, W)`` for every element), or one mask per group of
    examples, shaped ``(G, *unit_prefix)`` (see :func:`mask_units`, which
    this calls). ``fill`` broadcasts against one example's units (e.g. the
    mean activation, shape ``(C, H, W)``). Removed units are replaced, not
    multiplied by zero, so their values never leak.
    """
    if not torch.is_tensor(keep):
        raise ValueError(f"keep must be a tensor of 0/1 values, got {type(keep)}")
    if keep.dtype != torch.bool and not bool(((keep == 0) | (keep == 1)).all()):
        raise ValueError("keep must hold only 0 and 1 (or bools)")
    unit_shape = output.shape[1:]
    k = keep.dim()
    if k <= len(unit_shape) and tuple(keep.shape) == tuple(unit_shape[:k]):
        keep = keep.unsqueeze(0)
    return mask_units(output, keep, fill)


@contextmanager
def mask_layer_units(
    layer: nn.Module,
    keep: torch.Tensor,
    fill: Union[float, torch.Tensor] = 0.0,
) -> Iterator[None]:
    """Ablate units of ``layer``'s output inside the block.

    See :func:`apply_unit_mask` for the shapes of ``keep`` and ``fill``: one
    mask for the whole batch, or per-group masks so that many coalitions are
    evaluated in one forward pass.
    """
    with replace_layer_output(layer, lambda out: apply_unit_mask(out, keep, fill)):
        yield


@contextmanager
def preserve_model_state(
    modules: Union[nn.Module, Sequence[nn.Module]],
    eval_mode: bool = True,
    freeze_parameters: bool = True,
) -> Iterator[None]:
    """Put models in eval mode with frozen parameters, then restore them.

    Records every submodule's ``training`` flag and every parameter's
    ``requires_grad`` and restores them on exit, also on exceptions.

    Args:
        modules (nn.Module or sequence of nn.Module): models to guard. Other
            callables are ignored.
        eval_mode (bool, optional): call ``.eval()`` inside the block.
            Default: True
        freeze_parameters (bool, optional): set ``requires_grad=False`` on all
            parameters inside the block (gradients are taken w.r.t. inputs or
            codes only, so parameter gradients would be wasted work).
            Default: True
    """
    if isinstance(modules, nn.Module) or not isinstance(modules, (list, tuple)):
        modules = [modules]
    mods = [m for m in modules if isinstance(m, nn.Module)]
    training: Dict[nn.Module, bool] = {}
    grads: Dict[nn.Parameter, bool] = {}
    for m in mods:
        for sub in m.modules():
            training.setdefault(sub, sub.training)
        for p in m.parameters():
            grads.setdefault(p, p.requires_grad)
    try:
        for m in mods:
            if eval_mode:
                m.eval()
            if freeze_parameters:
                for p in m.parameters():
                    p.requires_grad_(False)
        yield
    finally:
        for sub, flag in training.items():
            sub.training = flag
        for p, flag in grads.items():
            p.requires_grad_(flag)


def count_hooks(model: nn.Module) -> int:
    """Number of hooks of any kind registered on ``model`` and its submodules."""
    names = [
        "_forward_hooks",
        "_forward_pre_hooks",
        "_backward_hooks",
        "_backward_pre_hooks",
        "_state_dict_hooks",
        "_load_state_dict_pre_hooks",
    ]
    total = 0
    for m in model.modules():
        for n in names:
            d: Optional[dict] = getattr(m, n, None)
            if d:
                total += len(d)
    return total
