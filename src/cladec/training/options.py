"""Training options: compile modes, mixed precision, optimisers and the step decay schedule."""

from __future__ import annotations

import functools
import math

import torch

from .. import _checks
from .._checks import learning_rate as check_learning_rate
from .._errors import ConfigError


def step_decay_epochs(epochs: int) -> int:
    """The authors' step decay period: lr × 0.1 after every ``E//3 + E//10 + 2`` epochs."""
    return epochs // 3 + epochs // 10 + 2


#: ``torch.compile`` modes the engine accepts (the others build CUDA graphs of their own, which the
#: engine's whole-step graph already is).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")


def compile_mode(value: bool | str | None) -> str | None:
    """``compile=`` as a ``torch.compile`` mode: ``False``/``None`` → ``None``, ``True`` → ``"default"``."""
    if value is None or value is False:
        return None
    if value is True:
        return "default"
    if isinstance(value, str) and value in COMPILE_MODES:
        return value
    raise ConfigError(f"compile must be True, False or one of {', '.join(map(repr, COMPILE_MODES))}, got {value!r}")


def check_compile(compile: bool | str | None, fast: bool) -> str | None:
    """``compile=`` as a ``torch.compile`` mode (:func:`compile_mode`), refused with ``fast=False`` (else ignored).

    Args:
        compile: ``False``/``None``, ``True`` or a mode.
        fast: Whether the fast path runs (only it compiles its loss).

    Returns:
        The mode, or None.

    Raises:
        ConfigError: A bad value, or a mode with ``fast=False``.

    Examples:
        >>> check_compile(True, fast=True)
        'default'
    """
    mode = compile_mode(compile)
    if mode and not fast:
        raise ConfigError(
            f"compile={compile!r} compiles the fast path's loss, which fast=False does not use: drop "
            "compile or keep fast=True"
        )
    return mode


def check_amp(amp: bool | None, device: torch.device | str) -> None:
    """Refuse ``amp=True`` on a device the engine runs no autocast on (only CUDA and CPU; else it would be ignored).

    Args:
        amp: The ``amp`` setting (``None``: the default for the device, never an error).
        device: The training device.

    Raises:
        ConfigError: For ``amp=True`` on a device other than CUDA or CPU.

    Examples:
        >>> check_amp(True, "cpu")
    """
    dev_type = torch.device(device).type
    if amp and dev_type not in ("cuda", "cpu"):
        raise ConfigError(
            f"amp=True (bf16 autocast) is supported on CUDA and CPU only, not on {dev_type!r}: "
            "pass amp=False or leave it None (float32 there)"
        )


def make_optimizer(
    kind: str,
    params: list[torch.nn.Parameter],
    *,
    lr: float,
    weight_decay: float,
    device: torch.device,
    fast: bool,
    momentum: float = 0.9,
) -> torch.optim.Optimizer:
    """Adam or SGD; on CUDA with ``fast`` fused (and capturable, for CUDA graphs).

    Raises:
        ConfigError: ``lr`` is not a finite number in (0, 10] (:func:`cladec._checks.learning_rate`): a rate
            such as 1e30 only diverges, and 1e308 overflows the fused optimisers' float32.
    """
    lr = check_learning_rate(lr, "lr")
    dev_type = torch.device(device).type
    cuda_fast = fast and dev_type == "cuda"
    if kind == "adam":
        if cuda_fast:
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True, capturable=True)
        if fast and dev_type == "cpu":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay, fused=True)
        return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    if kind == "sgd":
        if cuda_fast:
            return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay, fused=True)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"unknown optimiser {kind!r}")


def check_fit_args(
    epochs, batch_size, lr, weight_decay, lr_decay, log_every, compile, fast=True, seed=None, recipe=None
) -> None:
    """Refuse a bad setting of an explainer's fit (ConfigError) before any work."""
    _checks.seed(seed, "seed", optional=True)  # torch.manual_seed would fail with an overflow traceback
    _checks.positive_int("epochs", epochs)
    for name, val in (("lr", lr), ("weight_decay", weight_decay)):
        if (
            isinstance(val, bool)
            or not isinstance(val, (int, float))
            or not math.isfinite(val)
            or val < 0
            or (name == "lr" and val == 0)
        ):
            raise ConfigError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} number, got {val!r}")
    _checks.positive_int("log_every", log_every)
    _checks.positive_int("batch_size", batch_size)
    if lr_decay not in (None, "step"):
        raise ConfigError(f"lr_decay must be None or 'step', got {lr_decay!r}")
    if lr_decay is not None and recipe is not None and recipe.scheduled:
        raise ConfigError(f"lr_decay={lr_decay!r} and recipe {recipe.name!r} both set the learning rate; use one")
    check_compile(compile, fast)  # a bad value is an error before any work


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), so bf16 autocast speeds it up."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set()
            for line in f:
                if line.startswith("flags"):
                    flags.update(line.split(":", 1)[1].split())
                    break
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})
