"""The classifier's input normalisation ((x - mean) / std per channel): its check, its tensors, and the modules
that apply it."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ._errors import ConfigError
from ._tensors import model_device

__all__ = ["Normalized"]


def norm_tensors(input_norm) -> tuple[torch.Tensor, torch.Tensor] | None:
    if input_norm is None:
        return None
    try:
        mean, std = input_norm
        mean_t = torch.as_tensor(mean, dtype=torch.float32).flatten()
        std_t = torch.as_tensor(std, dtype=torch.float32).flatten()
    except (TypeError, ValueError):
        raise ConfigError("input_norm must be a pair (mean, std) of per-channel sequences") from None
    if mean_t.numel() != std_t.numel() or (std_t <= 0).any():
        raise ConfigError("input_norm: mean and std need the same length and std must be > 0")
    return mean_t, std_t


def _to_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32) if x.dtype != torch.float32 else x


class Normalize:
    """``(x - mean) / std`` per channel, or the identity."""

    def __init__(self, input_norm: Any, channels: int | None, device: torch.device) -> None:
        self.mean = self.std = None
        if input_norm is None:
            return
        pair = check_input_norm(input_norm)
        mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in pair)
        if channels is not None and len(mean) not in (1, channels):
            raise ConfigError(
                f"input_norm has {len(mean)} values per statistic but the images have {channels} channels; "
                f"give 1 or {channels} means and stds"
            )
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_float(x)
        if self.mean is None or self.std is None:  # both or neither
            return x
        return (x - self.mean) / self.std


def check_input_norm(input_norm: Any) -> tuple[list[float], list[float]]:
    """Validate ``(mean, std)`` and return them as two equal-length lists of floats."""
    msg = (
        "input_norm must be None or (mean, std), each a number or a sequence with one value per channel and "
        f"std > 0, e.g. ((0.2861,), (0.3530,)); got {input_norm!r}"
    )
    if isinstance(input_norm, (torch.Tensor, np.ndarray)) and input_norm.ndim > 0 and len(input_norm) == 2:
        input_norm = list(input_norm)
    if not isinstance(input_norm, (tuple, list)) or len(input_norm) != 2:
        raise ConfigError(msg)
    out = []
    for v in input_norm:
        if isinstance(v, (torch.Tensor, np.ndarray)):
            v = v.flatten().tolist()
        if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, (tuple, list)) or not v:
            raise ConfigError(msg)
        try:
            vals = [float(t) for t in v]
        except (TypeError, ValueError):
            raise ConfigError(msg) from None
        if not all(math.isfinite(t) for t in vals):
            raise ConfigError(msg)
        out.append(vals)
    mean, std = out
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ConfigError(msg)
    return mean, std


class Normalized(nn.Module):
    """Wrap a classifier so that it takes images in [0, 1] and applies ``input_norm`` itself.

    Args:
        model: The classifier.
        input_norm: ``(mean, std)`` per channel, or None (identity).

    Examples:
        >>> m = Normalized(nn.Flatten(), ([0.5], [0.5]))
        >>> m(torch.ones(1, 1, 2, 2)).tolist()
        [[1.0, 1.0, 1.0, 1.0]]
    """

    mean: torch.Tensor | None  # buffers (None without input_norm)
    std: torch.Tensor | None

    def __init__(self, model: nn.Module, input_norm=None) -> None:
        super().__init__()
        self.model = model
        norm = norm_tensors(input_norm)
        if norm is None:
            self.register_buffer("mean", None)
            self.register_buffer("std", None)
        else:
            self.register_buffer("mean", norm[0].view(1, -1, 1, 1).to(model_device(model)))
            self.register_buffer("std", norm[1].view(1, -1, 1, 1).to(model_device(model)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (if configured) and classify."""
        if self.mean is not None and self.std is not None:  # both or neither
            x = (x - self.mean) / self.std
        return self.model(x)
