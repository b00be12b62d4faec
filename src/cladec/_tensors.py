"""Checks and conversions of tensors a user passes in (images, labels, devices), and a model's device."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ._errors import ConfigError, DataError


def image_tensor(
    x: Any,
    where: str = "images",
    *,
    channels: tuple[int, ...] | None = (1, 3),
    scale_uint8: bool = True,
    check_range: bool = True,
    allow_empty: bool = False,
    float32: bool = True,
) -> torch.Tensor:
    """Validate an image batch ``(N, C, H, W)``: uint8 or floating point in ``[0, 1]``.

    Args:
        x: The images.
        where: How the error messages name them.
        channels: Allowed channel counts (``None``: any).
        scale_uint8: Convert uint8 images to float32 in ``[0, 1]`` (``False`` keeps uint8, to save memory).
        check_range: Check that float images lie in ``[0, 1]``.
        allow_empty: Accept ``N = 0``.
        float32: Convert other float dtypes to float32 (``False`` keeps them, converted per batch by the caller).

    Returns:
        The images: float32 (or their own float dtype when ``float32`` is ``False``), or uint8 when
        ``scale_uint8`` is ``False``.
    """
    if not isinstance(x, torch.Tensor):
        raise DataError(f"{where} must be a torch.Tensor of shape (N, C, H, W), got {type(x).__name__}")
    if x.dtype != torch.uint8 and not x.is_floating_point():
        raise DataError(f"{where} must be uint8 or floating point in [0, 1], got dtype {x.dtype}")
    if x.dim() != 4:
        hint = ""
        if x.dim() == 3:
            hint = (
                "; for N grey images add the channel dimension with x.unsqueeze(1), for one image add "
                "the batch dimension with x.unsqueeze(0)"
            )
        raise DataError(f"{where} must have shape (N, C, H, W), got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0 and not allow_empty:
        raise DataError(f"{where}: the data set is empty")
    if channels is not None and x.shape[1] not in channels:
        allowed = " or ".join(str(c) for c in channels)
        raise DataError(f"{where} must have {allowed} channels (N, C, H, W), got C={x.shape[1]}")
    if x.dtype == torch.uint8:
        return x.float().div_(255) if scale_uint8 else x
    if x.dtype != torch.float32 and float32:
        x = x.float()  # float64/float16 images: the models work in float32
    if check_range and x.numel():
        finite = torch.isfinite(x)
        if not bool(finite.all()):
            bad = int((~finite).flatten(1).any(1).sum())
            raise DataError(
                f"{where} hold NaN or infinite values ({bad} of {x.shape[0]} images); images must be finite "
                "numbers in [0, 1]"
            )
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= -1e-4 and hi <= 1 + 1e-4):
            raise DataError(
                f"{where} must lie in [0, 1] (cladec works on unnormalised images), got values in "
                f"[{lo:.3g}, {hi:.3g}]; pass unnormalised images and give the classifier's "
                "normalisation as input_norm=(mean, std)"
            )
    return x


def label_tensor(y: Any, n: int, where: str = "") -> torch.Tensor:
    """Validate class labels for ``n`` images: ``n`` integers ``>= 0``, shaped ``(n,)`` or ``(n, 1)``.

    Args:
        y: The labels (a tensor, array or sequence of integers).
        n: The number of images they belong to.
        where: How the error messages name the data (e.g. ``"the training data"``).

    Returns:
        The labels as a 1-D int64 tensor.
    """
    pre = f"{where}: " if where else ""
    try:
        y = torch.as_tensor(y)
    except (TypeError, ValueError, RuntimeError) as ex:
        raise DataError(f"{pre}labels must be a 1-D integer tensor, got {type(y).__name__} ({ex})") from None
    if y.dim() == 2 and y.shape[1] == 1:
        y = y[:, 0]  # (N, 1) column of labels
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.dim() != 1:
        raise DataError(f"{pre}labels must be a 1-D integer tensor, got dtype {y.dtype} shape {tuple(y.shape)}")
    y = y.to(torch.int64)  # also uint16/32/64, which have no min() in torch
    if len(y) != n:
        raise DataError(f"{pre}{n} images but {len(y)} labels; they must be the same number")
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{pre}labels must be >= 0 (class indices), found {int(y.min())}")
    return y


def device(name: Any, what: str = "--device", *, default: str | None = None) -> torch.device:
    """Resolve a device name to a :class:`torch.device`, checking that this machine has it.

    Called before any work, so a bad device is one clear error, not a traceback after minutes of training.

    Args:
        name: ``None`` (``default``), ``"cpu"``, ``"cuda"``, ``"cuda:N"``, ``"mps"`` or a :class:`torch.device`.
        what: How the value is named in error messages (``"--device"``; ``"device"`` for the Python API).
        default: The device for ``None``; ``None``: CUDA if available, else the CPU.

    Returns:
        The :class:`torch.device`.

    Raises:
        ConfigError: ``name`` is not a device, names an unsupported kind of device, or one this machine
            does not have.

    Examples:
        >>> device("cpu")
        device(type='cpu')
    """
    if name is None:
        if default is not None:
            return device(default, what)
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError, TypeError):
        raise ConfigError(f"{what} {name!r} is not a device; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} {name!r}: CUDA is not available on this machine; use {what} cpu")
        n = torch.cuda.device_count()
        if dev.index is not None and dev.index >= n:
            raise ConfigError(f"{what} {name!r}: this machine has {n} CUDA device(s) (cuda:0 to cuda:{n - 1})")
    elif dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"{what} {name!r}: MPS is not available on this machine; use {what} cpu")
    elif dev.type != "cpu":
        raise ConfigError(f"{what} {name!r} is not supported; use cpu, cuda, cuda:N or mps")
    return dev


def model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")
