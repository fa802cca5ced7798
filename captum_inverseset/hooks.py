"""Public hook helpers: context managers that always remove their hooks.

Re-exports :mod:`captum_inverseset._utils.hooks` under a public name so that
tutorials and user code need no private import.
"""

from ._utils.hooks import (
    LayerCapture,
    apply_unit_mask,
    capture_layer,
    count_hooks,
    mask_layer_units,
    preserve_model_state,
    replace_layer_output,
)

__all__ = [
    "LayerCapture",
    "apply_unit_mask",
    "capture_layer",
    "count_hooks",
    "mask_layer_units",
    "preserve_model_state",
    "replace_layer_output",
]
