"""Base class of result objects: tensors as attributes, ``.save``/``.load``."""

import json
import os
from typing import Any, Dict

import torch


class InterpretationResult:
    """Results hold tensors and plain metadata as attributes.

    :meth:`save` writes tensors with ``torch.save`` and metadata as JSON
    beside it; :meth:`load` reads tensors back with ``weights_only=True``, so
    loading a file never executes code. Subclasses list their tensor fields in
    ``_tensor_fields`` and plain fields in ``_meta_fields``, and implement
    :meth:`plot`.
    """

    _tensor_fields: tuple = ()
    _meta_fields: tuple = ()

    def tensors(self) -> tuple:
        return tuple(
            getattr(self, f)
            for f in self._tensor_fields
            if getattr(self, f) is not None
        )

    def to_dict(self) -> Dict[str, Any]:
        out = {f: getattr(self, f) for f in self._tensor_fields}
        out.update({f: getattr(self, f) for f in self._meta_fields})
        return out

    def save(self, path: str) -> str:
        """Save to ``path`` (a ``.pt`` file of tensors + ``path + '.json'``)."""
        tensors = {
            f: getattr(self, f).detach().cpu()
            for f in self._tensor_fields
            if getattr(self, f) is not None
        }
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        torch.save(tensors, path)
        meta = {f: getattr(self, f) for f in self._meta_fields}
        with open(path + ".json", "w") as fh:
            json.dump(meta, fh, indent=2, default=float)
        return path

    @classmethod
    def load(cls, path: str):
        """Load a result saved by :meth:`save` (no code is unpickled)."""
        tensors = torch.load(path, map_location="cpu", weights_only=True)
        meta: Dict[str, Any] = {}
        if os.path.exists(path + ".json"):
            with open(path + ".json") as fh:
                meta = json.load(fh)
        obj = cls.__new__(cls)
        for f in cls._tensor_fields:
            setattr(obj, f, tensors.get(f))
        for f in cls._meta_fields:
            setattr(obj, f, meta.get(f))
        return obj

    def plot(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        parts = []
        for f in self._tensor_fields:
            v = getattr(self, f, None)
            if torch.is_tensor(v):
                parts.append(f"{f}=Tensor{tuple(v.shape)}")
        for f in self._meta_fields:
            parts.append(f"{f}={getattr(self, f, None)!r}")
        return f"{type(self).__name__}({', '.join(parts)})"
