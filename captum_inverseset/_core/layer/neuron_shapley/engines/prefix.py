"""The prefix engine: the network up to the first player layer runs once.

A coalition only changes the network *after* the first player layer (in
call order), so the model is split there with ``torch.fx``
(:func:`~.fx_split.split_at_layer`; the cut also carries the values a
residual connection needs later). The prefix runs once per evaluation batch
(:class:`~.base.PrefixActivations`) and only the suffix runs per coalition,
with the later player layers masked by hooks.
"""

from contextlib import ExitStack
from typing import Any

from torch import nn

from ....._utils.hooks import mask_units
from .base import Engine, EngineUnavailable, Plan, PrefixActivations
from .fx_split import split_at_layer, verify_split
from .hooks import masked_layers

__all__ = ["PrefixEngine", "check_splittable"]


def check_splittable(game) -> None:
    """The fx engines trace an ``nn.Module`` called on the inputs alone."""
    if not isinstance(game.forward_func, nn.Module):
        raise EngineUnavailable("forward_func is not an nn.Module (nothing to trace)")
    if any(extra is not None for _, _, extra in game.batches):
        raise EngineUnavailable("additional_forward_args are passed to the model")


class PrefixEngine(Engine):
    """The suffix after the first player layer, once per pass."""

    name = "prefix"

    def __init__(self, game, split) -> None:
        super().__init__(game)
        self.split = split
        self.first = game.call_order[0]
        self.prefix = PrefixActivations(split.prefix, game.batches, game.cache_bytes)

    @classmethod
    def build(cls, game, requested: bool) -> "PrefixEngine":
        check_splittable(game)
        split = game.structure(
            "prefix_split",
            lambda: split_at_layer(
                game.forward_func, game.layers[game.call_order[0]], game.layers
            ),
        )
        if split is None:
            raise EngineUnavailable(
                "torch.fx cannot split the model at the first player layer"
            )
        if not verify_split(split, game.forward_func, game.sample_inputs()):
            raise EngineUnavailable("the split model does not reproduce the model")
        return cls(game, split)

    def reset_batches(self) -> None:
        game = self.game
        self.prefix = PrefixActivations(
            self.split.prefix, game.batches, game.cache_bytes
        )

    def forward(self, batch_index: int, plan: Plan) -> Any:
        masks = plan.masks
        n_groups = masks.shape[0]
        game = self.game
        with ExitStack() as stack:
            masked_layers(game, stack, masks, skip=self.first)
            game.n_forward_passes += 1
            cut = self.prefix.get(batch_index)
            reps = [c.repeat(n_groups, *([1] * (c.dim() - 1))) for c in cut]
            keep = masks[:, game.offsets[self.first] : game.offsets[self.first + 1]]
            reps[0] = mask_units(reps[0], keep, game.fills[self.first])
            return self.split.suffix(*reps)
