"""Validation of image and label tensors, shared by the data sets, the classifier trainer and the explainers,
and of device names, seeds and learning rates, shared by every command and entry point that takes one.

Every tensor check raises :class:`~cladec._errors.DataError`, the device, seed and learning-rate checks
:class:`~cladec._errors.ConfigError`, with what was wrong and what would be valid.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from ._errors import ConfigError

#: Seeds cladec accepts: what every random generator it seeds (torch, numpy) takes, and what an int64 holds.
SEED_MAX = 2**63 - 1

#: Learning rates cladec accepts: above this no optimiser it makes (Adam, SGD) trains anything.
LR_MAX = 10.0


def seed(value: Any, what: str = "seed", *, optional: bool = False) -> int | None:
    """Check a random seed: an integer ``0 <= seed <= 2**63 - 1`` (``None`` too when ``optional``).

    Args:
        value: The seed.
        what: How the value is named in error messages (``"--seed"`` on the command line).
        optional: Accept ``None`` (not seeded).

    Returns:
        The seed as an ``int`` (or ``None``).

    Raises:
        ConfigError: Not an integer, negative or too large (``torch.manual_seed`` would fail with an overflow).

    Examples:
        >>> seed(7)
        7
    """
    if value is None and optional:
        return None
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) <= SEED_MAX:
        shown = value if isinstance(value, (int, np.integer)) and len(str(value)) <= 40 else repr(value)[:40]
        raise ConfigError(f"{what} must be an integer from 0 to {SEED_MAX} (2**63 - 1), got {shown}")
    return int(value)


def learning_rate(value: Any, what: str = "lr") -> float:
    """Check a learning rate: a finite number ``0 < lr <= 10``.

    Args:
        value: The learning rate.
        what: How the value is named in error messages (``"--lr"`` on the command line).

    Returns:
        The learning rate as a ``float``.

    Raises:
        ConfigError: Not a number, not finite, not positive or above 10 (such a rate only diverges).

    Examples:
        >>> learning_rate(3e-4)
        0.0003
    """
    torch = sys.modules.get("torch")  # a tensor can only be given once torch is loaded: this module needs none
    if torch is not None and isinstance(value, torch.Tensor) and value.numel() == 1:
        value = float(value)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not (math.isfinite(value) and 0 < value <= LR_MAX)
    ):
        raise ConfigError(
            f"{what} must be a finite number in (0, {LR_MAX:g}] (Adam typically 1e-4 to 1e-2, "
            f"SGD 0.01 to 0.1), got {value!r}"
        )
    return float(value)


def positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    return v
