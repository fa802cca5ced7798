"""Atomic, code-free checkpoints of NeuronShapley's running statistics.

The file is a ``torch.save`` of a flat dict of tensors, ints and strings, read
back with ``weights_only=True`` (no arbitrary object is unpickled). Beside the
statistics it holds

* a *fingerprint* of the run: one digest per part that determines the values
  (the model's parameters and buffers, the inputs in their order, the
  labels, the additional arguments, the player layers' names, the metric,
  the sampling arguments). A checkpoint whose fingerprint differs is refused
  with an error naming the parts that differ;
* a digest of the statistics themselves, so a file edited by hand (or
  truncated by a crash of the file system) is refused instead of resumed.

A checkpoint is written to a temporary file and renamed over the previous
one. The temporary file's name carries this host and process id, so only
temporaries of this writer (or of a dead process of this host that wrote
the same checkpoint) are ever deleted.
"""

import hashlib
import json
import os
import socket
import tempfile
from typing import Any, Dict, Iterable, List, Optional

import torch
from torch import nn

FORMAT_VERSION = 3
_TMP_TAG = ".tmp-neuronshapley-"


def _update_with_tensor(h: "hashlib._Hash", t: torch.Tensor) -> None:
    t = t.detach()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    if t.device.type == "meta":
        raise ValueError("a meta tensor holds no values to fingerprint")
    flat = t.cpu().contiguous().reshape(-1)
    try:
        h.update(flat.view(torch.uint8).numpy().tobytes())
    except (RuntimeError, TypeError):
        h.update(flat.double().numpy().tobytes())


def digest_tensors(tensors: Iterable[Any]) -> str:
    """sha256 of a sequence of tensors (and the ``repr`` of anything else),
    in order, with their dtypes and shapes."""
    h = hashlib.sha256()
    for t in tensors:
        if torch.is_tensor(t):
            _update_with_tensor(h, t)
        elif isinstance(t, (tuple, list)):
            h.update(b"(")
            h.update(digest_tensors(t).encode())
            h.update(b")")
        else:
            h.update(repr(t).encode())
        h.update(b"|")
    return h.hexdigest()


def digest_model(model: nn.Module) -> str:
    """sha256 of every parameter and buffer of ``model`` with its name."""
    h = hashlib.sha256()
    for name, t in model.state_dict(keep_vars=True).items():
        h.update(name.encode())
        if torch.is_tensor(t):
            _update_with_tensor(h, t)
    return h.hexdigest()


def run_fingerprint(
    forward_func: Any,
    batches: List[tuple],
    target_given: bool,
    layer_names: List[str],
    layer_sizes: List[int],
    metric: str,
    checkpoint_key: Optional[str],
    arguments: Dict[str, Any],
) -> str:
    """The fingerprint of a NeuronShapley run: one entry per part that
    determines its values (``batches`` are the evaluation batches
    ``(inputs, labels, additional args)`` in order)."""
    parts: Dict[str, Any] = dict(arguments)
    parts["model"] = (
        digest_model(forward_func)
        if isinstance(forward_func, nn.Module)
        else "not a module"
    )
    parts["inputs"] = digest_tensors(b[0] for b in batches)
    parts["batch_sizes"] = [int(b[0][0].shape[0]) for b in batches]
    # Labels the user gave; otherwise the model's predictions, which the
    # model and inputs digests already determine.
    parts["target"] = (
        digest_tensors(b[1] for b in batches) if target_given else "predictions"
    )
    parts["additional_forward_args"] = digest_tensors(b[2] for b in batches)
    parts["layers"] = list(layer_names)
    parts["layer_sizes"] = list(layer_sizes)
    parts["metric"] = metric
    parts["checkpoint_key"] = checkpoint_key
    return fingerprint(parts)


def fingerprint(parts: Dict[str, Any]) -> str:
    """The fingerprint stored with a checkpoint: JSON of the parts."""
    return json.dumps(parts, sort_keys=True, default=str)


def state_digest(state: Dict[str, Any]) -> str:
    """sha256 of a checkpoint state (its keys, tensors and numbers)."""
    keys = sorted(state)
    return digest_tensors([k for k in keys] + [state[k] for k in keys])


def _own_stale_temporaries(path: str) -> Iterable[str]:
    """Temporaries of ``path`` left by dead processes of this host."""
    directory = os.path.dirname(os.path.abspath(path))
    prefix = os.path.basename(path) + _TMP_TAG + socket.gethostname() + "-"
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    stale = []
    for name in names:
        if not name.startswith(prefix):
            continue
        pid_part = name[len(prefix) :].split("-", 1)[0]
        if not pid_part.isdigit() or int(pid_part) == os.getpid():
            continue
        try:
            os.kill(int(pid_part), 0)
        except ProcessLookupError:
            stale.append(os.path.join(directory, name))
        except OSError:
            pass  # alive (another user's process): not ours to delete
    return stale


def save_checkpoint(path: str, fp: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically (temporary file + rename)."""
    payload: Dict[str, Any] = {"format_version": FORMAT_VERSION, "fingerprint": fp}
    clean = {}
    for key, value in state.items():
        clean[key] = value.detach().cpu() if torch.is_tensor(value) else value
    payload.update(clean)
    payload["state_digest"] = state_digest(clean)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    # A process killed between writing and renaming leaves its temporary
    # behind; the checkpoint itself is intact. Only such leftovers of this
    # checkpoint, host and a dead process are removed, never other files.
    for stale in _own_stale_temporaries(path):
        try:
            os.remove(stale)
        except OSError:
            pass
    prefix = f"{os.path.basename(path)}{_TMP_TAG}{socket.gethostname()}-{os.getpid()}-"
    fd, tmp = tempfile.mkstemp(prefix=prefix, dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _differing(saved_fp: Any, fp: str) -> list:
    try:
        saved = json.loads(saved_fp)
    except (TypeError, ValueError):
        return ["fingerprint"]
    now = json.loads(fp)
    if not isinstance(saved, dict):
        return ["fingerprint"]
    return sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))


def load_checkpoint(path: str, fp: str) -> Optional[Dict[str, Any]]:
    """The saved state, None if ``path`` does not exist; refuses a checkpoint
    of another run (naming the parts that differ) and one whose statistics
    do not match their digest."""
    if not os.path.exists(path):
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"checkpoint {path!r} cannot be read: {err}") from err
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path!r} is not a NeuronShapley checkpoint of this "
            "version; delete it or pass another path"
        )
    if payload.get("fingerprint") != fp:
        diff = _differing(payload.get("fingerprint"), fp)
        raise ValueError(
            f"checkpoint {path!r} was written with different arguments or data "
            f"(differing: {', '.join(diff)}); delete it or pass another path"
        )
    state = {
        k: v
        for k, v in payload.items()
        if k not in ("format_version", "fingerprint", "state_digest")
    }
    if payload.get("state_digest") != state_digest(state):
        raise ValueError(
            f"checkpoint {path!r} was modified after it was written (its "
            "statistics do not match their digest); delete it or pass "
            "another path"
        )
    return state
