"""Engines of the Neuron Shapley game, behind one interface (:mod:`.base`).

=================  ==========================================================
``"hooks"``        the reference: full forward passes, player layers masked
                   by hooks; any ``forward_func``
``"prefix"``       the model up to the first player layer runs once per
                   batch (``torch.fx`` split), the rest per coalition
``"segments"``     a chain through the player layers split at every one of
                   them; each segment once per distinct upstream mask
``"incremental"``  the segments depth first, the linear layer after each
                   player layer updated one removed channel at a time
``"graph"``        any traced network (residual connections, branches):
                   each node once per distinct mask of the player layers
                   upstream of it, memory bounded by a budget
=================  ==========================================================

``engine="auto"`` takes the first of :data:`AUTO_ORDER` that applies.
"""

from typing import Dict, Tuple, Type

from .base import Engine, EngineUnavailable, Plan
from .graph import GraphEngine
from .hooks import HookEngine
from .incremental import IncrementalEngine
from .prefix import PrefixEngine
from .segments import SegmentEngine

__all__ = ["AUTO_ORDER", "ENGINES", "Engine", "EngineUnavailable", "Plan",
           "select_engine"]  # fmt: skip

ENGINES: Dict[str, Type[Engine]] = {
    cls.name: cls
    for cls in (HookEngine, PrefixEngine, SegmentEngine, IncrementalEngine, GraphEngine)
}
# Fastest first; the reference last, as it always applies.
AUTO_ORDER: Tuple[str, ...] = ("incremental", "segments", "graph", "prefix", "hooks")


def select_engine(game, name: str) -> Engine:
    """The engine ``name`` for ``game``, or with ``"auto"`` the first engine
    of :data:`AUTO_ORDER` that applies. A named engine that does not apply
    raises a ``ValueError`` saying why."""
    if name == "auto":
        for candidate in AUTO_ORDER:
            try:
                return ENGINES[candidate].build(game, requested=False)
            except EngineUnavailable:
                continue
        raise AssertionError("the hook engine always applies")  # pragma: no cover
    if name not in ENGINES:
        raise ValueError(
            f"engine must be 'auto' or one of {tuple(ENGINES)}, got {name!r}"
        )
    try:
        return ENGINES[name].build(game, requested=True)
    except EngineUnavailable as err:
        raise ValueError(f"engine={name!r} does not apply here: {err}") from None
