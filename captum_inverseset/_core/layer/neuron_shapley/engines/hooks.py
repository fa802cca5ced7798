"""The reference engine: full forward passes with the player layers masked
by hooks.

The evaluation examples are repeated once per coalition and every player
layer's output is masked per block of examples
(:func:`~captum_inverseset._utils.hooks.mask_units`, which selects, never
multiplies). It runs any ``forward_func`` (a module or a function, with
``additional_forward_args``, returning any outputs), so it is the engine
every other one is checked against.
"""

from contextlib import ExitStack
from typing import Any

from ....._utils.captum_compat import (
    expand_additional_forward_args,
    format_additional_forward_args,
)
from ....._utils.hooks import mask_units, replace_layer_output
from ..data import call_model
from .base import Engine, Plan

__all__ = ["HookEngine", "masked_layers"]


def masked_layers(game, stack: ExitStack, masks, skip: int = -1) -> None:
    """Enter, on ``stack``, hooks masking every player layer of ``game``
    (except the layer of index ``skip``) with its columns of ``masks``."""
    for i, layer in enumerate(game.layers):
        if i == skip:
            continue
        keep = masks[:, game.offsets[i] : game.offsets[i + 1]]
        stack.enter_context(
            replace_layer_output(
                layer,
                lambda out, k=keep, f=game.fills[i]: mask_units(out, k, f),
            )
        )


class HookEngine(Engine):
    """One forward pass of the whole model per pass of coalitions."""

    name = "hooks"

    @classmethod
    def build(cls, game, requested: bool) -> "HookEngine":
        return cls(game)

    def forward(self, batch_index: int, plan: Plan) -> Any:
        inputs, _, extra = self.game.batches[batch_index]
        self.game.n_forward_passes += 1
        return self.outputs_on(self.game, inputs, plan.masks, extra)

    @staticmethod
    def outputs_on(game, inputs: tuple, masks, extra: Any = None) -> Any:
        """The model's outputs on ``inputs`` for the coalitions ``masks``, one
        block of examples per coalition (other engines check themselves
        against this)."""
        n_groups = masks.shape[0]
        with ExitStack() as stack:
            masked_layers(game, stack, masks)
            rep_inputs = tuple(
                x.repeat(n_groups, *([1] * (x.dim() - 1))) for x in inputs
            )
            rep_extra = None
            if extra is not None:
                rep_extra = format_additional_forward_args(
                    expand_additional_forward_args(extra, n_groups)
                )
            return call_model(game.forward_func, rep_inputs, rep_extra)
