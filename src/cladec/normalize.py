"""The classifier's input normalisation ``(x - mean) / std`` per channel: its check (:func:`check_input_norm`), its
tensors (:func:`norm_tensors`), the one function that applies it (:class:`InputNorm`) and a model wrapper that
applies it inside the model (:class:`Normalized`).

Every place that normalises images for the classifier (training and predicting, the layer capture, the
explainers' classification loss, saliency maps and their scores) goes through :class:`InputNorm`, so that they
accept the same statistics and give the classifier the same input.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ._errors import ConfigError, DataError

__all__ = ["InputNorm", "Normalized", "check_input_norm", "model_input_norm", "norm_tensors"]


def model_input_norm(model: Any) -> Any:
    """The input normalisation a model's own metadata gives: ``model.source_info["input_norm"]``, set by
    :func:`cladec.models.load_model` (timm's ``pretrained_cfg``, torchvision's weights transforms); None for a model
    without it.

    Examples:
        >>> model_input_norm(object()) is None
        True
    """
    info = getattr(model, "source_info", None)
    return info.get("input_norm") if isinstance(info, dict) else None


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


def norm_tensors(input_norm: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
    """``(mean, std)`` as two 1-D float32 CPU tensors (checked by :func:`check_input_norm`), or None for None."""
    if input_norm is None:
        return None
    mean, std = check_input_norm(input_norm)
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


class InputNorm:
    """``(x - mean) / std`` per channel for images in ``[0, 1]``, or the identity for ``input_norm=None``.

    uint8 images are scaled to ``[0, 1]`` first (255 → 1.0). The statistics are cast to the input's device and
    floating dtype once per (device, dtype, number of dimensions) and kept: a bf16 input (autocast, a decoder's
    output) stays bf16, and no copy is made inside a CUDA graph capture once a first call has made them.

    Args:
        input_norm: ``(mean, std)``, each a number or one value per channel (see :func:`check_input_norm`), or None.
        channels: The images' channel count when known now: a mismatch is a ConfigError here (else a DataError at
            the first call with other channels).
        device: Make the float32 copies for 4-D images on this device now (before any compiled or captured step).
        dtype: Convert every input to this floating dtype first (the classifier's trainer and ``predict``:
            float32); None keeps an input's floating dtype (uint8 and integers become float32).

    Raises:
        ConfigError: ``input_norm`` is not valid (NaN/inf, bool, nested lists, unequal lengths, std ≤ 0, ...) or
            has neither 1 nor ``channels`` values per statistic.

    Examples:
        >>> norm = InputNorm(([0.5], [0.5]))
        >>> norm(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).tolist()
        [[[[-1.0, 1.0]]]]
        >>> norm(torch.ones(1, 1, 1, 1, dtype=torch.bfloat16)).dtype
        torch.bfloat16
    """

    def __init__(
        self,
        input_norm: Any,
        channels: int | None = None,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        self.tensors = norm_tensors(input_norm)
        self._values = 0 if self.tensors is None else int(self.tensors[0].numel())  # per statistic: 1 or C
        self.dtype = dtype
        self._cache: dict[tuple[torch.device, torch.dtype, int], tuple[torch.Tensor, torch.Tensor]] = {}
        if self.tensors is not None and channels is not None:
            self._check_channels(channels, ConfigError)
        if self.tensors is not None and device is not None:
            self._stats(torch.device(device), dtype or torch.float32, 4)

    @property
    def pair(self) -> tuple[list[float], list[float]] | None:
        """``(mean, std)`` as two lists of floats (as recorded in a run or checkpoint), or None."""
        return None if self.tensors is None else (self.tensors[0].tolist(), self.tensors[1].tolist())

    def _check_channels(self, channels: int, error: type[Exception]) -> None:
        n = self._values
        if n not in (1, channels):
            raise error(
                f"input_norm has {n} values per statistic but the images have {channels} channels; "
                f"give 1 or {channels} means and stds"
            )

    def _stats(self, dev: torch.device, dt: torch.dtype, ndim: int) -> tuple[torch.Tensor, torch.Tensor]:
        key = (dev, dt, ndim)
        if key not in self._cache:  # device copies made once (none inside a CUDA graph capture)
            assert self.tensors is not None  # called with statistics only
            mean, std = self.tensors
            shape = (1, -1) + (1,) * (ndim - 2)
            self._cache[key] = (mean.to(dev, dt).view(shape), std.to(dev, dt).view(shape))
        return self._cache[key]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (N, C, ...) of images in ``[0, 1]`` (or uint8)."""
        if x.dtype == torch.uint8:
            x = x.to(self.dtype or torch.float32).div_(255.0)
        elif self.dtype is not None and x.dtype != self.dtype:
            x = x.to(self.dtype)
        elif not x.is_floating_point():
            x = x.to(torch.float32)
        if self.tensors is None:
            return x
        if x.dim() >= 2:  # every call: statistics of 3 channels must not broadcast a grey image to 3 channels
            self._check_channels(int(x.shape[1]), DataError)
        mean, std = self._stats(x.device, x.dtype, x.dim())
        return (x - mean) / std


class Normalized(nn.Module):
    """Wrap a classifier so that it takes images in [0, 1] (or uint8) and applies ``input_norm`` itself.

    The statistics follow each input's device and dtype (:class:`InputNorm`), so moving the wrapper with ``.to()``
    needs nothing else.

    Args:
        model: The classifier.
        input_norm: ``(mean, std)`` per channel, None (identity) or an :class:`InputNorm`.

    Examples:
        >>> m = Normalized(nn.Flatten(), ([0.5], [0.5]))
        >>> m(torch.ones(1, 1, 2, 2)).tolist()
        [[1.0, 1.0, 1.0, 1.0]]
    """

    def __init__(self, model: nn.Module, input_norm: Any = None) -> None:
        super().__init__()
        self.model = model
        self.norm = input_norm if isinstance(input_norm, InputNorm) else InputNorm(input_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise (if configured) and classify."""
        return self.model(self.norm(x))
