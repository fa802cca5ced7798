"""Atomic, code-free checkpoints of NeuronShapley's running statistics.

The file is a ``torch.save`` of a flat dict of tensors, ints and strings, read
back with ``weights_only=True`` (no arbitrary object is unpickled). A JSON
fingerprint of the arguments is stored with the statistics, and a checkpoint
written with different arguments is refused.
"""

import glob
import json
import os
from typing import Any, Dict, Optional

import torch

FORMAT_VERSION = 1


def fingerprint(args: Dict[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)


def save_checkpoint(path: str, fp: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    payload = {"format_version": FORMAT_VERSION, "fingerprint": fp}
    for key, value in state.items():
        payload[key] = value.detach().cpu() if torch.is_tensor(value) else value
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    # A process killed while writing leaves its temporary file behind; the
    # checkpoint itself is intact (the rename never happened). Clean up.
    for stale in glob.glob(glob.escape(path) + ".tmp.*"):
        try:
            os.remove(stale)
        except OSError:
            pass
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load_checkpoint(path: str, fp: str) -> Optional[Dict[str, Any]]:
    """The saved state, None if ``path`` does not exist; refuses a mismatch."""
    if not os.path.exists(path):
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"checkpoint {path!r} cannot be read: {err}") from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"checkpoint {path!r} is not a NeuronShapley checkpoint")
    if payload.get("fingerprint") != fp:
        saved = json.loads(payload.get("fingerprint", "{}"))
        now = json.loads(fp)
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(
            f"checkpoint {path!r} was written with different arguments "
            f"(differing: {', '.join(diff)}); delete it or pass another path"
        )
    return payload
