"""The arguments of :meth:`NeuronShapley.attribute`, validated in one place.

:meth:`ShapleyOptions.checked` validates every argument (a ``ValueError``
naming it for strings where numbers belong, NaN, infinities, out-of-range
values) and resolves the metric and the removal strategy;
:func:`check_run_memory` refuses, before any sampling, arguments that would
make one forward pass or one round of walks larger than half the available
memory.
"""

import dataclasses
import math
import os
from typing import Any, Callable, Optional

import torch
from torch import nn

from ...._utils.memory import check_memory
from ...._utils.validation import check_number, check_positive_int
from .engines import ENGINES
from .metrics import Metric, resolve_metric
from .removal import Removal, resolve_removal

__all__ = ["ShapleyOptions", "check_run_memory"]


@dataclasses.dataclass
class ShapleyOptions:
    """Validated arguments of one Neuron Shapley run (see
    :meth:`NeuronShapley.attribute` for their meaning)."""

    metric: Metric
    removal: Removal
    n_permutations: int = 200
    truncation_tolerance: Optional[float] = None
    top_k: Optional[int] = None
    bandit_delta: float = 0.05
    bandit_tolerance: float = 0.0
    exact: bool = False
    seed: Optional[int] = 0
    batch_size: Optional[int] = None
    coalitions_per_batch: Optional[int] = None
    permutations_per_round: int = 8
    checkpoint: Optional[str] = None
    checkpoint_every: int = 8
    checkpoint_key: Optional[str] = None
    distributed: Optional[bool] = None
    show_progress: bool = False
    engine: str = "auto"
    callback: Optional[Callable[[Any], Any]] = None
    max_memory: Optional[int] = None
    truncation_patience: int = 1
    bandit_union_bound: bool = True
    bandit_min_samples: int = 10
    bandit_value_range: Any = None
    examples_per_permutation: Optional[int] = None

    @classmethod
    def checked(
        cls,
        forward_func: Any,
        metric: Any = "accuracy",
        metric_class: Optional[int] = None,
        removal: Any = "mean",
        **kwargs: Any,
    ) -> "ShapleyOptions":
        """Validate the arguments; unknown names raise a ``TypeError``."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(kwargs) - names)
        if unknown:
            raise TypeError(f"unexpected keyword argument(s): {', '.join(unknown)}")
        o = cls(
            metric=resolve_metric(metric, metric_class),
            removal=resolve_removal(removal),
            **kwargs,
        )
        o.n_permutations = check_positive_int("n_permutations", o.n_permutations)
        if o.truncation_tolerance is not None:
            o.truncation_tolerance = check_number(
                "truncation_tolerance", o.truncation_tolerance, minimum=0
            )
        if o.top_k is not None:
            o.top_k = check_positive_int("top_k", o.top_k)
        o.bandit_delta = check_number(
            "bandit_delta", o.bandit_delta, 0, 1, strict_minimum=True,
            strict_maximum=True,
        )  # fmt: skip
        o.bandit_tolerance = check_number("bandit_tolerance", o.bandit_tolerance, 0)
        for name in ("batch_size", "coalitions_per_batch"):
            if getattr(o, name) is not None:
                setattr(o, name, check_positive_int(name, getattr(o, name)))
        o.permutations_per_round = check_positive_int(
            "permutations_per_round", o.permutations_per_round
        )
        o.checkpoint_every = check_positive_int("checkpoint_every", o.checkpoint_every)
        if o.seed is not None and (
            isinstance(o.seed, bool) or not isinstance(o.seed, int)
        ):
            raise ValueError(f"seed must be an int or None, got {o.seed!r}")
        for name in ("exact", "show_progress"):
            if not isinstance(getattr(o, name), bool):
                raise ValueError(f"{name} must be True or False")
        if o.distributed is not None and not isinstance(o.distributed, bool):
            raise ValueError("distributed must be None, True or False")
        if o.engine != "auto" and o.engine not in ENGINES:
            raise ValueError(
                f"engine must be 'auto' or one of {tuple(ENGINES)}, got {o.engine!r}"
            )
        o.truncation_patience = check_positive_int(
            "truncation_patience", o.truncation_patience
        )
        if not isinstance(o.bandit_union_bound, bool):
            raise ValueError("bandit_union_bound must be True or False")
        if isinstance(o.bandit_min_samples, bool) or not (
            isinstance(o.bandit_min_samples, int) and o.bandit_min_samples >= 0
        ):
            raise ValueError(
                "bandit_min_samples must be an integer >= 0, got "
                f"{o.bandit_min_samples!r}"
            )
        o._check_value_range()
        if o.examples_per_permutation is not None:
            o.examples_per_permutation = check_positive_int(
                "examples_per_permutation", o.examples_per_permutation
            )
            if o.exact:
                raise ValueError(
                    "examples_per_permutation draws examples per permutation; "
                    "exact=True enumerates coalitions on every example"
                )
        if o.max_memory is not None:
            o.max_memory = check_positive_int("max_memory", o.max_memory)
        if o.callback is not None and not callable(o.callback):
            raise ValueError("callback must be None or a callable")
        if o.checkpoint_key is not None and not isinstance(o.checkpoint_key, str):
            raise ValueError(
                "checkpoint_key must be a string, got "
                f"{type(o.checkpoint_key).__name__}"
            )
        if o.checkpoint is not None:
            o._check_checkpoint(forward_func)
        return o

    def _check_value_range(self) -> None:
        r = self.bandit_value_range
        if r is None or r == "observed":
            return
        if not isinstance(r, (tuple, list)) or len(r) != 2:
            raise ValueError(
                "bandit_value_range must be None, 'observed' or (low, high), got "
                f"{r!r}"
            )
        lo = check_number("bandit_value_range[0]", r[0])
        hi = check_number("bandit_value_range[1]", r[1])
        if not hi > lo:
            raise ValueError(f"bandit_value_range must have low < high, got {r!r}")
        self.bandit_value_range = (lo, hi)

    def marginal_range(self) -> Optional[float]:
        """Width of the interval a marginal contribution lies in: twice the
        width of the metric's range (given or known), None when unknown or
        ``bandit_value_range="observed"`` (each player's observed range)."""
        r = self.bandit_value_range
        if r == "observed":
            return None
        if r is None:
            r = self.metric.value_range
        return None if r is None else 2.0 * (r[1] - r[0])

    def _check_checkpoint(self, forward_func: Any) -> None:
        if not isinstance(self.checkpoint, (str, os.PathLike)):
            raise ValueError(
                f"checkpoint must be a path, got {type(self.checkpoint).__name__}"
            )
        self.checkpoint = os.fspath(self.checkpoint)
        if os.path.isdir(self.checkpoint):
            raise ValueError(f"checkpoint {self.checkpoint!r} is a directory")
        if self.seed is None:
            raise ValueError(
                "checkpoint needs an int seed: seed=None draws a new seed on "
                "every call, so such a run cannot be resumed"
            )
        if self.checkpoint_key is None and not self.metric.builtin:
            raise ValueError(
                "checkpoint_key: a callable metric cannot be fingerprinted, so a "
                "checkpoint of another metric would be resumed silently; pass "
                "checkpoint_key='<a name for this metric and its version>' to "
                "use a checkpoint"
            )
        if self.checkpoint_key is None and not isinstance(forward_func, nn.Module):
            raise ValueError(
                "checkpoint_key: forward_func is not an nn.Module, so its weights "
                "cannot be fingerprinted; pass checkpoint_key='<a name for this "
                "model and its weights>' to use a checkpoint"
            )

    def fingerprint_arguments(self, seed: int) -> dict:
        """The arguments a checkpoint's fingerprint records."""
        return dict(
            n_permutations=self.n_permutations,
            removal=self.removal.name,
            truncation_tolerance=self.truncation_tolerance,
            top_k=self.top_k,
            bandit_delta=self.bandit_delta,
            bandit_tolerance=self.bandit_tolerance,
            seed=seed,
            permutations_per_round=self.permutations_per_round,
            truncation_patience=self.truncation_patience,
            bandit_union_bound=self.bandit_union_bound,
            bandit_min_samples=self.bandit_min_samples,
            bandit_value_range=self.bandit_value_range,
            examples_per_permutation=self.examples_per_permutation,
        )


def check_run_memory(
    game: Any, options: ShapleyOptions, largest: int, device: torch.device
) -> None:
    """Refuse numbers that would allocate more than half the memory: the
    coalitions of one pass (each repeats the largest batch) and the walks
    a round holds."""
    p = game.n_players
    if options.exact:
        rows_per_call = min(game.rows_per_pass * 4, 2**p)
    else:
        walks = min(options.permutations_per_round, options.n_permutations)
        rows_per_call = p * walks
        # per walk: its order, positions and a value per coalition
        check_memory(
            "permutations_per_round", options.permutations_per_round, walks * p * 64
        )
    per_example = game.bytes_per_example or sum(
        4 * math.prod(shape) for shape in game.unit_shapes
    )
    rows = min(game.rows_per_pass, rows_per_call)
    name, value = "coalitions_per_batch", options.coalitions_per_batch
    if value is None:
        name, value = "inputs (examples per batch)", largest
    check_memory(name, value, rows * largest * per_example, device)
