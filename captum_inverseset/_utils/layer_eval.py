"""The one layer evaluation of the package, on Captum's ``_forward_layer_eval``.

Every class that reads a layer's activations (inverse sets, profiles,
activation maximisation, dissection, E-GBAS, the Neuron Shapley game's
measurements) goes through :func:`layer_eval`, so a layer called twice in one
forward pass gives the value Captum's ``LayerActivation`` gives (its last
call), DataParallel outputs are gathered as Captum gathers them
(``device_ids``), and the hooks are Captum's, removed in its ``finally``.

:func:`select_neuron_values` is the one rule for neuron selectors, shared by
every class: Captum's selection (an int or a tuple of ints and slices, slices
summed per example, or a callable), which must give exactly one value per
example.
"""

from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

from .captum_compat import NeuronSelector, forward_layer_eval, select_neuron

__all__ = [
    "LayerNotCalledError",
    "layer_eval",
    "neuron_values",
    "normalize_selector",
    "select_neuron_values",
]

_CAPTUM_NOT_CALLED = "Forward hook did not obtain any outputs"


class LayerNotCalledError(ValueError):
    """The layer did not run during the forward pass."""


def layer_eval(
    forward_func: Callable,
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    layer: Union[nn.Module, Sequence[nn.Module]],
    additional_forward_args: Any = None,
    attribute_to_layer_input: bool = False,
    grad_enabled: bool = False,
    device_ids: Optional[List[int]] = None,
) -> Any:
    """The output (or input) of ``layer`` on ``inputs``, through Captum.

    Returns a tuple of tensors (a layer's output may be a tuple), or a list of
    such tuples when ``layer`` is a list. ``grad_enabled`` keeps the graph, so
    the activations can be differentiated with respect to ``inputs``.
    """
    layers = list(layer) if isinstance(layer, (list, tuple)) else layer
    try:
        return forward_layer_eval(
            forward_func,
            inputs,
            layers,
            additional_forward_args=additional_forward_args,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_enabled=grad_enabled,
            device_ids=device_ids,
        )
    except AssertionError as err:
        if _CAPTUM_NOT_CALLED not in str(err):
            raise
        raise LayerNotCalledError(
            "layer was not called during the forward pass: is it a submodule "
            "that forward_func uses?"
        ) from None
    except KeyError as err:
        # Captum indexes its saved outputs by layer, then device: a layer of a
        # list that did not run is missing there.
        if (
            isinstance(layers, list)
            and err.args
            and isinstance(err.args[0], torch.device)
        ):
            raise LayerNotCalledError(
                "a layer was not called during the forward pass: is every "
                "layer a submodule that forward_func uses?"
            ) from None
        raise


def normalize_selector(
    neuron_selector: Any, name: str = "neuron_selector"
) -> NeuronSelector:
    """Check a neuron selector's form; a bare ``slice`` becomes ``(slice,)``
    and a list becomes a tuple. Out-of-range indices are left for Captum's
    selection to refuse, as Captum's own classes do."""
    if callable(neuron_selector):
        return neuron_selector
    if isinstance(neuron_selector, slice):
        return (neuron_selector,)
    if isinstance(neuron_selector, list):
        neuron_selector = tuple(neuron_selector)
    if isinstance(neuron_selector, bool):
        raise ValueError(f"{name} must be an int, a tuple or a callable, got a bool")
    if isinstance(neuron_selector, int):
        return neuron_selector
    if isinstance(neuron_selector, tuple) and neuron_selector:
        for part in neuron_selector:
            if isinstance(part, bool) or not isinstance(part, (int, slice)):
                raise ValueError(
                    f"{name} must hold ints and slices, got {neuron_selector!r}"
                )
        return neuron_selector
    raise ValueError(
        f"{name} must be an int, a tuple of ints and slices, or a callable, got "
        f"{neuron_selector!r}"
    )


def select_neuron_values(
    layer_output: Union[Tensor, Tuple[Tensor, ...]],
    neuron_selector: NeuronSelector,
    n: int,
    name: str = "neuron_selector",
) -> Tensor:
    """One value per example, ``(n,)``, by Captum's selection rule.

    An int or tuple must index one unit (slices in the tuple sum a region,
    as in Captum); a callable receives the layer output and returns one value
    per example. Anything else raises a ``ValueError`` naming ``name``;
    out-of-range indices raise Captum's own errors.
    """
    selector = normalize_selector(neuron_selector, name)
    if isinstance(layer_output, list):
        layer_output = tuple(layer_output)
    values = select_neuron(layer_output, selector)
    if not torch.is_tensor(values):
        raise ValueError(
            f"{name} (a callable) must return a tensor, got {type(values).__name__}"
        )
    if values.dim() == 0 or values.shape[0] != n or values[0].numel() != 1:
        shape = (
            tuple(layer_output.shape)
            if torch.is_tensor(layer_output)
            else [tuple(t.shape) for t in layer_output]
        )
        raise ValueError(
            f"{name} must select one value per example, got shape "
            f"{tuple(values.shape)} from a layer output of shape {shape}: give "
            "one index per unit dimension, slices to sum a region (as in "
            "Captum), or a callable"
        )
    return values.reshape(n)


def neuron_values(
    forward_func: Callable,
    inputs: Union[Tensor, Tuple[Tensor, ...]],
    neurons: Sequence[Tuple[nn.Module, NeuronSelector, bool]],
    additional_forward_args: Any = None,
    grad_enabled: bool = False,
    device_ids: Optional[List[int]] = None,
) -> Tensor:
    """``(N, len(neurons))`` values of several neurons in as few forward
    passes as possible (one per kind: layer outputs, layer inputs).

    ``neurons`` lists ``(layer, neuron_selector, attribute_to_layer_input)``.
    """
    first = inputs if torch.is_tensor(inputs) else inputs[0]
    n = first.shape[0]
    columns: List[Optional[Tensor]] = [None] * len(neurons)
    for to_input in (False, True):
        wanted = [i for i, nrn in enumerate(neurons) if bool(nrn[2]) == to_input]
        if not wanted:
            continue
        layers: List[nn.Module] = []
        for i in wanted:
            if not any(neurons[i][0] is m for m in layers):
                layers.append(neurons[i][0])
        evals = layer_eval(
            forward_func,
            inputs,
            layers,
            additional_forward_args,
            attribute_to_layer_input=to_input,
            grad_enabled=grad_enabled,
            device_ids=device_ids,
        )
        for i in wanted:
            layer, selector, _ = neurons[i]
            out = evals[next(j for j, m in enumerate(layers) if m is layer)]
            columns[i] = select_neuron_values(out, selector, n)
    return torch.stack(columns, dim=1)  # type: ignore[arg-type]
