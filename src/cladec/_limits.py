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

import torch
from torch import nn

from ._errors import ConfigError

__all__ = [
    "memory_limit",
    "format_bytes",
    "check_fits",
    "tensor_bytes",
    "batch_bytes",
    "build_on_meta",
    "check_model_fits",
]


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

    Examples:
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

    Examples:
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

    Examples:
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

    Examples:
        >>> check_fits(1e6, "a small batch")
    """
    limit = memory_limit(device)
    if not math.isfinite(nbytes) or nbytes > limit:
        where = "this machine has" if device is None or str(device).startswith("cpu") else f"{device} has"
        msg = (
            f"{what} needs about {format_bytes(nbytes)} of memory (estimated), more than the "
            f"{format_bytes(limit)} {where}"
        )
        raise ConfigError(msg + (f"; {hint}" if hint else ""))


def batch_bytes(model: Any, input_shape: Any, batch_size: int) -> float | None:
    """Estimated bytes of one batch's activations through ``model``: the sum of every leaf module's output for
    ``batch_size`` inputs of shape ``input_shape`` (C, H, W), as a training step keeps them for the backward pass.

    Computed on PyTorch's ``meta`` device (shapes only, nothing is allocated) on a copy of the model.

    Returns:
        The estimate, or None when the model cannot run on the meta device or does not take that shape
        (then the work itself reports it).
    """
    import copy

    import torch

    try:
        meta = copy.deepcopy(model).to("meta")
    except Exception:  # noqa: BLE001 - a model that cannot be copied or moved: no estimate
        return None
    total = [0.0]

    def add(_m: Any, _inp: Any, out: Any) -> None:
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                total[0] += float(t.numel()) * t.element_size()

    hooks = [m.register_forward_hook(add) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta.eval()(torch.empty(int(batch_size), *map(int, input_shape), device="meta"))
    except Exception:  # noqa: BLE001 - shapes the model refuses, ops without meta kernels: no estimate
        return None
    finally:
        for h in hooks:
            h.remove()
    return total[0] + tensor_bytes(batch_size, *input_shape)


def _meta_build(build: Any) -> tuple[Any, bool]:
    """``(module, overflowed)``: what ``build()`` makes on PyTorch's ``meta`` device (shapes only, nothing is
    allocated), or ``(None, True)`` when even the sizes overflow (a RuntimeError saying so), ``(None, False)`` when
    it cannot be built there for another reason (then building it for real reports the problem)."""
    try:
        with torch.device("meta"):
            return build(), False
    except RuntimeError as e:
        return None, "overflow" in str(e).lower()
    except Exception:  # noqa: BLE001 - not buildable on meta (bad arguments, ...): the real build reports the problem
        return None, False


def build_on_meta(build: Any) -> Any:
    """The model ``build()`` makes, built on PyTorch's ``meta`` device (shapes only, nothing is allocated), or
    None when it cannot be built there (then building it for real reports the problem)."""
    return _meta_build(build)[0]


#: Below this many bytes of input per batch, no estimate of the activations is made: a network would need
#: activations over this factor times its input to run out of memory (the estimate costs a second of set-up).
_ACTIVATION_FACTOR = 4096


def check_model_fits(
    model: Any,
    input_shape: Any,
    batch_size: int,
    *,
    what: str,
    hint: str,
    device: Any = None,
    train_copies: int = 3,
    activation_copies: int = 1,
) -> None:
    """Refuse training ``model`` (an ``nn.Module``, possibly on the ``meta`` device) on batches of
    ``batch_size`` inputs of ``input_shape`` when its parameters (``train_copies`` times: weights, gradients,
    optimiser state) and one batch's activations (``activation_copies`` times: 2 for a decoder that mirrors the
    model) could not fit in the memory of ``device``.

    Raises:
        ConfigError: ``"<what> needs about ... of memory (estimated), ...; <hint>"``.
    """
    params = float(sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers())))
    total = params * train_copies
    check_fits(total, what, hint=hint, device=device)
    shape = tuple(int(s) for s in input_shape)
    inputs = tensor_bytes(batch_size, *shape)
    check_fits(total + inputs, what, hint=hint, device=device)
    if (total + inputs) * _ACTIVATION_FACTOR > memory_limit(device):
        acts = batch_bytes(model, shape, batch_size)
        if acts is not None:
            check_fits(total + acts * activation_copies, what, hint=hint, device=device)


def weight_bytes_on_meta(build: Any) -> float | None:
    """Bytes of the weights and buffers of the module ``build()`` makes, built on the ``meta`` device (nothing is
    allocated); ``inf`` when even their sizes overflow; None when it cannot be built there (building it for real
    then reports why)."""
    module, overflowed = _meta_build(build)
    if overflowed:
        return math.inf
    if not isinstance(module, nn.Module):
        return None
    return sum(float(t.numel()) * t.element_size() for t in module.state_dict().values())
