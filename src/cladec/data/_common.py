"""Helpers shared by the data set readers: size checks, resizing, cache folders, download hints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .._errors import ConfigError


def check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size <= 0:
            raise ConfigError(f"size must be a positive integer or (H, W) pair, got {size}")
        return (int(size), int(size))
    if isinstance(size, (tuple, list)) and len(size) == 2:
        if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
            return (int(size[0]), int(size[1]))
    raise ConfigError(f"size must be None, a positive integer or an (H, W) pair of positive integers, got {size!r}")


def resize_images(images: torch.Tensor, size: tuple[int, int], mode: str, chunk: int = 4096) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` uint8/float images to float32 ``(N, C, *size)`` in [0, 1], in chunks."""
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.float32)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float32)
        if images.dtype == torch.uint8:
            x = x.div_(255.0)
        if mode == "bilinear":
            y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        else:
            y = F.interpolate(x, size=size, mode="nearest")
        out[start : start + chunk] = y.clamp_(0.0, 1.0)
    return out


def default_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("cladec"))


def decoded_cache_dir() -> Path:
    env = os.environ.get("CLADEC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return default_cache_dir() / "decoded"


def how_to_get(name: str) -> str:
    return (
        f"To get {name}: pass download=True (on the command line: --download), or set the environment "
        "variable CLADEC_DATA (or pass root=...) to a folder that holds it, e.g. one with MNIST/raw/..., "
        "FashionMNIST/raw/... or cifar10-jpeg.zip in it. Without any data, use the embedded "
        "'fashion-mnist-mini'."
    )
