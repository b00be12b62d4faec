"""Memory limits: refuse a size, width or batch whose estimated memory exceeds what the machine has, before
anything is allocated (a 100000-px image size or a width of 1e12 would otherwise ask the allocator for
terabytes and fail deep inside PyTorch, or swap the machine to a halt).

The limit is the machine's physical memory (or a smaller cgroup limit, as in containers) for the CPU, and the
device's total memory for a CUDA device. It is a total, not what is free now, so the same command is accepted
or refused the same way on an idle and on a busy machine; estimates are lower bounds of what the work needs.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ._errors import ConfigError

__all__ = ["memory_limit", "format_bytes", "check_fits", "tensor_bytes"]


def _cgroup_limit() -> int | None:
    for f in (Path("/sys/fs/cgroup/memory.max"), Path("/sys/fs/cgroup/memory/memory.limit_in_bytes")):
        try:
            text = f.read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < 1 << 60:  # 'max' or a huge sentinel: no limit
            return int(text)
    return None


def memory_limit(device: Any = None) -> int:
    """The memory, in bytes, that work on ``device`` can use at most.

    Args:
        device: ``None`` or a CPU device for host memory; a CUDA device for its total memory.

    Returns:
        Physical memory (or the cgroup limit when lower) for the host; the device's total memory for CUDA.

    Example:
        >>> memory_limit() > 0
        True
    """
    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return int(torch.cuda.get_device_properties(dev.index or 0).total_memory)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
        total = 1 << 40
    cg = _cgroup_limit()
    return int(min(total, cg) if cg else total)


def format_bytes(n: float) -> str:
    """``n`` bytes in a short human unit (``"2.5 TB"``, ``"512 MB"``).

    Example:
        >>> format_bytes(2.5e12)
        '2.5 TB'
    """
    if not math.isfinite(n):
        return "an unbounded amount"
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def tensor_bytes(*shape: float, itemsize: int = 4) -> float:
    """Bytes of a tensor of ``shape`` (a float, so absurd shapes do not overflow).

    Example:
        >>> tensor_bytes(128, 3, 224, 224)
        77070336.0
    """
    return float(math.prod(float(s) for s in shape)) * itemsize


def check_fits(nbytes: float, what: str, *, hint: str = "", device: Any = None) -> None:
    """Refuse work whose estimated memory ``nbytes`` exceeds :func:`memory_limit` of ``device``.

    Args:
        nbytes: The estimate (a lower bound of what the work needs), in bytes.
        what: What needs it, as the start of the message (``"--size 100000"``).
        hint: What would be valid instead, appended to the message.
        device: Where the memory is needed (default: the host).

    Raises:
        ConfigError: ``"<what> needs about 2.5 TB of memory (estimated), more than the 25 GB this machine
            has; <hint>"``.

    Example:
        >>> check_fits(1e6, "a small batch")
    """
    limit = memory_limit(device)
    if not math.isfinite(nbytes) or nbytes > limit:
        where = "this machine has" if device is None or str(device).startswith("cpu") else f"{device} has"
        msg = f"{what} needs about {format_bytes(nbytes)} of memory (estimated), more than the " \
              f"{format_bytes(limit)} {where}"
        raise ConfigError(msg + (f"; {hint}" if hint else ""))
