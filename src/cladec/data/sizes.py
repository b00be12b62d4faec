"""Memory estimates of data sets, checked before they are loaded."""

from __future__ import annotations

from typing import Any

from .._limits import check_fits, tensor_bytes
from .names import ALIASES

__all__ = ["dataset_bytes", "check_dataset_fits"]

#: Channels and images per split (train, test) of the built-in data sets, for estimates before anything is loaded.
_SPLIT_IMAGES = {"mnist": (1, 60000, 10000), "fashion-mnist": (1, 60000, 10000), "cifar10": (3, 50000, 10000)}


def _height_width(size: Any) -> tuple[int, int] | None:
    """``size`` as ``(H, W)`` when it is an int or a pair of ints (else None: the loader reports the bad value)."""

    def is_int(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if is_int(size):
        return (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(is_int(s) for s in size):
        return (int(size[0]), int(size[1]))
    return None


def dataset_bytes(name: Any, split: str, size: Any, limit: Any = None) -> float | None:
    """Estimated bytes of a split loaded at ``size`` (float32 images), before it is loaded.

    The built-in data sets' image counts and channels are known; for others (image folders, the embedded
    set) the estimate assumes one channel and ``limit`` images, or one image without a limit, so it is a
    lower bound.

    Returns:
        The estimate, or None for no resize (images kept at their native size, as uint8) or a malformed
        ``size`` (which the loader refuses with its own message).

    Examples:
        >>> dataset_bytes("fashion-mnist", "test", 32)
        40960000.0
    """
    hw = _height_width(size)
    if hw is None:
        return None

    key = ALIASES.get(name.strip().lower()) if isinstance(name, str) else None
    channels, n = 1, None
    if key in _SPLIT_IMAGES:
        channels, n_train, n_test = _SPLIT_IMAGES[key]
        n = n_train if split == "train" else n_test
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        n = min(n, limit) if n else limit
    return tensor_bytes(n or 1, channels, *hw)


def check_dataset_fits(name: Any, splits: Any, size: Any, *, what: str, device: Any = None) -> None:
    """Refuse loading the ``splits`` (``[(split, limit), ...]``, held at the same time) of data set ``name``
    resized to ``size`` when they could not fit in the host's memory (see :func:`dataset_bytes`).

    Raises:
        ConfigError: ``"<what> needs about 2.5 TB of memory (estimated), ..."``.

    Examples:
        >>> check_dataset_fits("fashion-mnist", [("train", 100), ("test", 100)], 32, what="--size 32")
    """
    total = 0.0
    for split, limit in splits:
        b = dataset_bytes(name, split, size, limit)
        if b is None:
            return
        total += b
    hw = _height_width(size)
    check_fits(
        total,
        f"{what} ({hw[0]}×{hw[1]} images of {name})",  # type: ignore[index]  # a size dataset_bytes could estimate: (H, W)
        hint="use a smaller size (the paper uses 32) or fewer images (--limit, --test-limit)",
    )
