r"""Lucent's objectives on activations captured with this package's hooks.

A Lucent objective is a function of a lookup ``T``: ``T("layer2_0_conv1")``
returns that module's activation (module paths joined by underscores),
``T("input")`` the model input and ``T("labels")`` the model output. It
returns a *loss* to minimise, e.g. :math:`-\operatorname{mean}(a_{:, c})` for
:func:`channel`. Objectives compose with ``+ - * /``.

Lucent builds ``T`` with hooks on every module that are never removed. Here
:func:`capture_activations` registers hooks only for the duration of a ``with``
block (through :func:`~captum_inverseset._utils.hooks.capture_layer`) and
:func:`evaluate_objective` runs one forward pass and evaluates an objective.

The factories of Lucent (:func:`neuron`, :func:`channel`, :func:`diversity`,
:func:`direction`, ...) are re-exported unchanged; :func:`deepdream`,
:func:`class_logit` and :func:`total_variation` are added in the same
convention.
"""

from contextlib import ExitStack, contextmanager
from typing import Any, Callable, Dict, Iterator, Optional, Sequence

import torch
from lucent.optvis.objectives import (
    Objective,
    as_objective,
    channel,
    direction,
    diversity,
    neuron,
    wrap_objective,
)
from torch import Tensor, nn

from ._utils.hooks import capture_layer
from ._utils.validation import check_module

__all__ = [
    "ActivationLookup",
    "Objective",
    "as_objective",
    "capture_activations",
    "channel",
    "class_logit",
    "deepdream",
    "direction",
    "diversity",
    "evaluate_objective",
    "frequency_penalty",
    "module_names",
    "neuron",
    "total_variation",
    "total_variation_penalty",
    "wrap_objective",
]


def module_names(model: nn.Module) -> Dict[str, nn.Module]:
    """Lucent's names of a model's submodules: dotted paths with ``_``.

    Examples::

        >>> sorted(module_names(torchvision.models.resnet18()))[:2]
        ['avgpool', 'bn1']
    """
    return {
        name.replace(".", "_"): module
        for name, module in model.named_modules()
        if name != ""
    }


class ActivationLookup:
    """The ``T`` of a Lucent objective, filled by :func:`capture_activations`.

    ``lookup(name)`` returns the most recent output of the module ``name``
    (underscore or dotted path), ``lookup("input")`` the first model input
    and ``lookup("labels")`` the model output, once they are set.
    """

    def __init__(self, captures: Dict[str, Any]) -> None:
        self._captures = captures
        self.input: Optional[Tensor] = None
        self.output: Optional[Tensor] = None

    def __call__(self, name: str) -> Tensor:
        if name == "input":
            if self.input is None:
                raise RuntimeError("the model input was not recorded")
            return self.input
        if name == "labels":
            if self.output is None:
                raise RuntimeError("the model output was not recorded")
            return self.output
        key = name.replace(".", "_")
        if key not in self._captures:
            raise ValueError(
                f"unknown layer {name!r}: not among the captured modules "
                f"({', '.join(sorted(self._captures)[:10])}, ...)"
            )
        return self._captures[key].output


@contextmanager
def capture_activations(
    model: nn.Module, names: Optional[Sequence[str]] = None
) -> Iterator[ActivationLookup]:
    """Record the outputs of ``model``'s modules inside the block.

    Args:
        model (nn.Module): the model.
        names (sequence of str, optional): Lucent names (or dotted paths) of
            the modules to record. Default: None (every submodule, as Lucent)

    Yields:
        ActivationLookup: call it with a module name after a forward pass. All
        hooks are removed when the block exits, also on errors.

    Examples::

        >>> with capture_activations(model, ["conv3"]) as T:
        ...     model(x)
        ...     loss = channel("conv3", 0)(T)
    """
    check_module("model", model)
    available = module_names(model)
    if names is None:
        selected = available
    else:
        selected = {}
        for name in names:
            key = name.replace(".", "_")
            if key not in available:
                raise ValueError(f"names: {name!r} is not a submodule of the model")
            selected[key] = available[key]
    with ExitStack() as stack:
        captures = {
            key: stack.enter_context(capture_layer(module))
            for key, module in selected.items()
        }
        yield ActivationLookup(captures)


def evaluate_objective(
    objective: Callable,
    model: nn.Module,
    inputs: Tensor,
    names: Optional[Sequence[str]] = None,
) -> Tensor:
    """Forward ``inputs`` through ``model`` and evaluate a Lucent objective.

    Returns the objective's loss (Lucent's sign: lower is better), with the
    graph kept for ``backward``. Hooks live only during the call.
    """
    objective = as_objective(objective)
    with capture_activations(model, names) as lookup:
        lookup.input = inputs
        lookup.output = model(inputs)
        return objective(lookup)


@wrap_objective()
def deepdream(layer: str, batch: Optional[int] = None):
    r"""Olah et al.'s layer objective :math:`\operatorname{mean}(a^2)` (DeepDream).

    Args:
        layer (str): Lucent name of the layer.
        batch (int, optional): only this example of the batch. Default: None
    """

    def inner(lookup):
        acts = lookup(layer)
        if batch is not None:
            acts = acts[batch : batch + 1]
        return -(acts**2).mean()

    return inner


@wrap_objective()
def class_logit(k: int, layer: str = "labels", batch: Optional[int] = None):
    r"""Pre-softmax score of class ``k``: :math:`\operatorname{mean}(y_{:, k})`.

    Args:
        k (int): class index.
        layer (str, optional): the layer holding the logits. Default: "labels"
            (the model output)
        batch (int, optional): only this example of the batch. Default: None
    """

    def inner(lookup):
        logits = lookup(layer)
        if batch is not None:
            logits = logits[batch : batch + 1]
        return -logits[:, k].mean()

    return inner


@wrap_objective()
def total_variation(layer: str = "input"):
    r"""Total variation of a layer (default: the input image), as a loss.

    .. math::
        \mathrm{TV}(x) = \frac{1}{N} \sum_{n, c, i, j}
        |x_{n,c,i+1,j} - x_{n,c,i,j}| + |x_{n,c,i,j+1} - x_{n,c,i,j}|

    Add it with a positive weight to penalise high-frequency noise, e.g.
    ``channel("conv3", 0) + 1e-2 * total_variation()``.
    """

    def inner(lookup):
        return total_variation_penalty(lookup(layer)).mean()

    return inner


def total_variation_penalty(x: Tensor) -> Tensor:
    """Per-example anisotropic total variation of ``(N, C, H, W)`` images."""
    if x.dim() != 4:
        raise ValueError(f"total variation needs (N, C, H, W) images, got {x.dim()}-D")
    dh = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().flatten(1).sum(1)
    dw = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().flatten(1).sum(1)
    return dh + dw


def frequency_penalty(x: Tensor) -> Tensor:
    r"""Per-example high-frequency energy of ``(N, C, H, W)`` images.

    .. math::
        F(x) = \sum_{c, u, v} (f_u^2 + f_v^2)\,|\hat x_{c,u,v}|^2

    summed over the half spectrum of the real FFT, with :math:`\hat x` the
    orthonormal 2-D FFT and :math:`f` frequencies in
    cycles per pixel; constant images cost nothing.
    """
    if x.dim() != 4:
        raise ValueError(
            f"frequency penalty needs (N, C, H, W) images, got {x.dim()}-D"
        )
    h, w = x.shape[-2:]
    spectrum = torch.fft.rfft2(x, norm="ortho")
    fu = torch.fft.fftfreq(h, device=x.device, dtype=x.dtype)[:, None]
    fv = torch.fft.rfftfreq(w, device=x.device, dtype=x.dtype)[None, :]
    weight = fu**2 + fv**2
    return (weight * spectrum.abs() ** 2).flatten(1).sum(1)
