"""Layers given as modules or as dotted names (``"layer1.0.conv1"``).

Captum's layer methods take a module; Captum's TCAV and this package's E-GBAS
also take the module's dotted name in the model (``model.named_modules()``).
:func:`resolve_layer` accepts both for every class, with an error naming the
argument and listing close names when the name is not in the model.
"""

from typing import Any

from torch import nn

from .captum_compat import get_module_from_name
from .validation import check_module

__all__ = ["resolve_layer"]


def resolve_layer(
    model: Any, layer: Any, name: str = "layer", model_name: str = "forward_func"
) -> nn.Module:
    """``layer`` as a module of ``model``: a module is returned as it is, a
    string is looked up as a dotted name (which needs ``model`` to be an
    ``nn.Module``). Raises a ``ValueError`` naming ``name`` otherwise."""
    if not isinstance(layer, str):
        return check_module(name, layer)
    if not isinstance(model, nn.Module):
        raise ValueError(
            f"{name} can be a name ({layer!r}) only when {model_name} is an "
            "nn.Module; pass the module itself"
        )
    try:
        module = get_module_from_name(model, layer) if layer else None
    except AttributeError:
        module = None
    if not isinstance(module, nn.Module) or module is model:
        leaf = layer.split(".")[-1]
        close = [n for n, _ in model.named_modules() if n and leaf and leaf in n][:5]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise ValueError(f"{name} {layer!r} is not a submodule of {model_name}{hint}")
    return module
