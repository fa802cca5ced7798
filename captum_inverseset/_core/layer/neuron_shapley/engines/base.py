"""The engine interface: how the game's model is run on many coalitions.

An engine turns a pass of coalitions (binary masks over the players, one row
each) into the model's outputs on one evaluation batch, one block of
examples per coalition or per *distinct* coalition. The game applies the
metric to those outputs; the estimators never see an engine. The plain hook
engine (:class:`~.hooks.HookEngine`) is the reference: a full forward pass
with every player layer's output masked by a hook. Every other engine must
return the reference's values (up to float rounding); the property test
``tests/layer/test_shapley_engines.py`` checks it on random models and
masks.

An engine class says with :meth:`Engine.build` whether it applies to a game
(a model it cannot split, an untraceable forward, ...): it raises
:class:`EngineUnavailable` with the reason. ``engine="auto"`` takes the first
engine of :data:`AUTO_ORDER` that applies; a named engine that does not
apply is an error naming the reason.
"""

import copy
from typing import TYPE_CHECKING, Any, Callable, ClassVar, List, NamedTuple, Optional

import torch

if TYPE_CHECKING:  # pragma: no cover
    from ..game import ShapleyGame

__all__ = ["Engine", "EngineUnavailable", "Plan", "PrefixActivations"]


class EngineUnavailable(Exception):
    """An engine does not apply to this game; the message says why."""


class Plan(NamedTuple):
    """A pass of coalitions as an engine will compute it.

    Attributes:
        masks: ``(G, P)`` coalitions (1 = kept).
        n_blocks: blocks of examples the engine's outputs hold.
        inverse: block of each coalition (``(G,)``), or None when block ``g``
            is coalition ``g``.
        detail: what the engine needs besides the masks (its own plan).
    """

    masks: torch.Tensor
    n_blocks: int
    inverse: Optional[torch.Tensor] = None
    detail: Any = None


class Engine:
    """Evaluates the model of a :class:`~..game.ShapleyGame` for coalitions.

    Subclasses set :attr:`name` and implement :meth:`build` and
    :meth:`forward`; :meth:`plan` and :meth:`start_walk` have defaults.

    Attributes:
        name (str): the public name (``engine=``).
        walks_together (bool): whether the coalitions of several walks may
            share one pass. An engine that reuses a walk's previous row for
            the next one (depth first) wants one walk at a time.
    """

    name: ClassVar[str] = "engine"
    walks_together: ClassVar[bool] = True

    def __init__(self, game: "ShapleyGame") -> None:
        self.game = game

    @classmethod
    def build(cls, game: "ShapleyGame", requested: bool) -> "Engine":
        """The engine for ``game``; raises :class:`EngineUnavailable` when
        it does not apply. ``requested``: named by the user (not picked by
        ``"auto"``), so heuristics that only pick the fastest engine do not
        apply."""
        raise NotImplementedError

    def plan(self, masks: torch.Tensor) -> Plan:
        """How a pass of coalitions is computed; by default one block each."""
        return Plan(masks, masks.shape[0])

    def forward(self, batch_index: int, plan: Plan) -> Any:
        """The model's outputs on evaluation batch ``batch_index`` for the
        ``plan.n_blocks`` blocks, one block of examples after another."""
        raise NotImplementedError

    def start_walk(self) -> None:
        """A new permutation walk starts: forget per-walk state, so each
        walk's values depend on that walk only."""

    def rebind(self, game: "ShapleyGame") -> "Engine":
        """This engine for another game on the same model and players with
        other evaluation batches (:meth:`~..game.ShapleyGame.on_examples`),
        without tracing or checking it again."""
        new = copy.copy(self)
        new.game = game
        new.reset_batches()
        return new

    def reset_batches(self) -> None:
        """Drop what was computed from the previous game's batches."""

    def rows_per_pass(
        self,
        n_examples: int,
        device: torch.device,
        bytes_per_example: Optional[int],
    ) -> int:
        """Coalitions per pass when the user does not choose.

        On a CPU about 1024 examples per pass (larger passes fall out of the
        processor's cache and get slower per example), at most 128
        coalitions. On a CUDA device, as many coalitions as fill a quarter
        of the free memory (``bytes_per_example``: the activations of one
        example's forward pass), at most 512: a small model there is bound
        by the cost of launching kernels, not by arithmetic.
        """
        return examples_per_pass(n_examples, device, bytes_per_example, 1024, 128)


def examples_per_pass(
    n_examples: int,
    device: torch.device,
    bytes_per_example: Optional[int],
    cpu_examples: int,
    cpu_max_rows: int,
) -> int:
    """Coalitions per pass: ``cpu_examples`` examples (at most
    ``cpu_max_rows`` coalitions) on a CPU; on CUDA, a quarter of the free
    memory (at most 512 coalitions), or 8192 examples when the activation
    size is unknown."""
    n = max(1, n_examples)
    if device.type == "cpu":
        return max(1, min(cpu_max_rows, cpu_examples // n))
    if device.type == "cuda" and bytes_per_example and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(device)
        return max(1, min(512, int(free // 4 // (bytes_per_example * n))))
    return max(1, min(128, 8192 // n))


class PrefixActivations:
    """The output of a model's prefix (the part before the first player
    layer) on each evaluation batch, computed once and kept when all
    batches fit in ``cache_bytes``; otherwise recomputed per call (then
    shared by the coalitions of that call)."""

    def __init__(
        self,
        prefix: Callable[..., tuple],
        batches: List[tuple],
        cache_bytes: int,
    ) -> None:
        self.prefix = prefix
        self.batches = batches
        with torch.no_grad():
            first = prefix(*batches[0][0])
        per_example = sum(c.numel() * c.element_size() for c in first) / max(
            1, batches[0][0][0].shape[0]
        )
        n_total = sum(b[0][0].shape[0] for b in batches)
        self.cached: List[tuple] = []
        if per_example * n_total <= cache_bytes:
            with torch.no_grad():
                self.cached = [first] + [prefix(*b[0]) for b in batches[1:]]

    def get(self, batch_index: int) -> tuple:
        if self.cached:
            return self.cached[batch_index]
        return self.prefix(*self.batches[batch_index][0])
