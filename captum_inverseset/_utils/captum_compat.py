"""The one place where Captum's private helpers are imported.

Captum keeps its layer-evaluation, input-formatting and neuron-selection helpers
in ``captum._utils``, which is not a public API. Every other module of this
package imports them from here, so a change in Captum is fixed in one file.
"""

from typing import Any, Callable, Tuple, Union

import torch
from captum._utils.common import (
    _expand_additional_forward_args,
    _expand_target,
    _format_additional_forward_args,
    _format_output,
    _format_tensor_into_tuples,
    _get_module_from_name,
    _is_tuple,
    _run_forward,
    _select_targets,
    _verify_select_neuron,
)
from captum._utils.gradient import _forward_layer_eval
from captum._utils.typing import TargetType, TensorOrTupleOfTensorsGeneric

NeuronSelector = Union[int, Tuple[Union[int, slice], ...], Callable]

__all__ = [
    "NeuronSelector",
    "TargetType",
    "TensorOrTupleOfTensorsGeneric",
    "expand_additional_forward_args",
    "expand_target",
    "format_additional_forward_args",
    "format_inputs",
    "format_output",
    "forward_layer_eval",
    "get_module_from_name",
    "is_tuple",
    "run_forward",
    "select_neuron",
    "select_targets",
]


def format_inputs(inputs: Any) -> Tuple[torch.Tensor, ...]:
    """Tensor or tuple of tensors -> tuple of tensors (Captum's convention)."""
    return _format_tensor_into_tuples(inputs)


def format_output(is_inputs_tuple: bool, output: Tuple[torch.Tensor, ...]) -> Any:
    """Return a tuple for tuple inputs and a single tensor otherwise."""
    return _format_output(is_inputs_tuple, output)


def is_tuple(inputs: Any) -> bool:
    return _is_tuple(inputs)


def format_additional_forward_args(args: Any) -> Any:
    return _format_additional_forward_args(args)


def expand_additional_forward_args(args: Any, n_steps: int) -> Any:
    return _expand_additional_forward_args(args, n_steps)


def expand_target(target: Any, n_steps: int) -> Any:
    return _expand_target(target, n_steps)


def run_forward(
    forward_func: Callable,
    inputs: Any,
    target: TargetType = None,
    additional_forward_args: Any = None,
) -> torch.Tensor:
    """Captum's forward call: formats inputs/args and selects ``target``."""
    return _run_forward(forward_func, inputs, target, additional_forward_args)


def select_targets(output: torch.Tensor, target: TargetType) -> torch.Tensor:
    return _select_targets(output, target)


def select_neuron(
    layer_output: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
    neuron_selector: NeuronSelector,
) -> torch.Tensor:
    """Apply a Captum neuron selector to a layer output.

    Accepts exactly what Captum's ``NeuronAttribution`` classes accept: an int,
    a tuple of ints/slices (slices are summed per example) or a callable. An
    out-of-range index raises the same error as Captum's own selectors.
    """
    if isinstance(layer_output, torch.Tensor):
        layer_output = (layer_output,)
    return _verify_select_neuron(layer_output, neuron_selector)


def forward_layer_eval(
    forward_func: Callable,
    inputs: Any,
    layer: Any,
    additional_forward_args: Any = None,
    attribute_to_layer_input: bool = False,
    grad_enabled: bool = False,
    device_ids: Any = None,
) -> Any:
    """Layer output (or input) for ``inputs`` via Captum's own hooks; a list
    of layers gives a list of tuples. Use
    :func:`captum_inverseset._utils.layer_eval.layer_eval`, which adds clear
    errors."""
    return _forward_layer_eval(
        forward_func,
        inputs,
        layer,
        additional_forward_args=additional_forward_args,
        device_ids=device_ids,
        attribute_to_layer_input=attribute_to_layer_input,
        grad_enabled=grad_enabled,
    )


def get_module_from_name(model: torch.nn.Module, layer_name: str) -> Any:
    """Resolve a dotted layer name (``"layer1.0.conv1"``) as Captum/TCAV do."""
    return _get_module_from_name(model, layer_name)
