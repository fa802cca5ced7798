"""Base class of result objects: dataclasses with ``.save``/``.load``/``.plot``.

A result is a dataclass (a misspelt field is a ``TypeError``, never a silent
None). :meth:`InterpretationResult.save` writes its tensor fields with
``torch.save`` and every other field as JSON beside it;
:meth:`InterpretationResult.load` reads tensors back with
``weights_only=True``, so loading a file never executes code.
"""

import dataclasses
import json
import math
import os
from typing import Any, Dict, Tuple

import torch

__all__ = ["InterpretationResult", "result_dataclass"]


def result_dataclass(cls):
    """``@dataclass`` as results use it: no generated ``__eq__`` (tensors
    have no truth value) and the base class's short ``__repr__``."""
    return dataclasses.dataclass(eq=False, repr=False)(cls)


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)  # "nan", "inf": JSON has no literal for them
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def _from_json(value: Any) -> Any:
    if value in ("nan", "inf", "-inf"):
        return float(value)
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    return value


class InterpretationResult:
    """Results hold tensors and plain metadata as dataclass fields.

    Subclasses are declared with :func:`result_dataclass` and implement
    :meth:`plot`.
    """

    @classmethod
    def field_names(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    def tensors(self) -> tuple:
        """The tensor fields that are set, in declaration order."""
        values = (getattr(self, f) for f in self.field_names())
        return tuple(v for v in values if torch.is_tensor(v))

    def to_dict(self) -> Dict[str, Any]:
        return {f: getattr(self, f) for f in self.field_names()}

    def save(self, path: str) -> str:
        """Save to ``path`` (a ``.pt`` file of tensors + ``path + '.json'``)."""
        tensors, meta = {}, {}
        for name, value in self.to_dict().items():
            if torch.is_tensor(value):
                tensors[name] = value.detach().cpu()
            else:
                meta[name] = _json_safe(value)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.save(tensors, path)
        with open(path + ".json", "w") as fh:
            json.dump(meta, fh, indent=2, default=float)
        return path

    @classmethod
    def load(cls, path: str):
        """Load a result saved by :meth:`save` (no code is unpickled)."""
        tensors = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(tensors, dict):
            raise ValueError(f"{path!r} is not a saved {cls.__name__}")
        meta: Dict[str, Any] = {}
        if os.path.exists(path + ".json"):
            with open(path + ".json") as fh:
                meta = json.load(fh)
        values: Dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in tensors:
                values[f.name] = tensors[f.name]
            elif f.name in meta:
                values[f.name] = _from_json(meta[f.name])
            elif (
                f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING
            ):
                values[f.name] = None
        return cls(**values)

    def plot(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        parts = []
        for name, value in self.to_dict().items():
            if torch.is_tensor(value):
                parts.append(f"{name}=Tensor{tuple(value.shape)}")
            else:
                parts.append(f"{name}={value!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
