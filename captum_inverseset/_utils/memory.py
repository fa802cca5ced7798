"""Memory budgets: how much a call may allocate, and a clear error beyond it.

Work that can be streamed in chunks is streamed; what must be held at once is
estimated up front with :func:`check_memory`, which raises a ``ValueError``
naming the argument that asked for too much instead of letting the process
grow until the operating system kills it.
"""

import os
from typing import Any, Optional

import torch

__all__ = ["available_memory", "check_memory", "format_bytes"]


def format_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024.0
    return f"{n:.1f} TB"  # pragma: no cover


def available_memory(device: Optional[torch.device] = None) -> int:
    """Bytes that can still be allocated on ``device``.

    CUDA: the free memory the driver reports. CPU: ``MemAvailable`` of
    ``/proc/meminfo`` where it exists (Linux), else the physical memory.
    """
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        free, _ = torch.cuda.mem_get_info(dev)
        return int(free)
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return int(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 * 2**30


def check_memory(
    name: str,
    value: Any,
    n_bytes: float,
    device: Optional[torch.device] = None,
    fraction: float = 0.5,
) -> None:
    """Raise a ``ValueError`` naming ``name`` when ``n_bytes`` exceeds
    ``fraction`` of the memory available on ``device``."""
    budget = fraction * available_memory(device)
    if n_bytes > budget:
        where = torch.device(device).type if device is not None else "cpu"
        raise ValueError(
            f"{name}={value!r} needs about {format_bytes(n_bytes)} of {where} "
            f"memory at once, more than {format_bytes(budget)} "
            f"({fraction:.0%} of what is available); use a smaller {name}"
        )
