"""Image-reconstruction and classification metrics used by :mod:`cladec.evaluation`.

* Per-image reconstruction errors: :func:`mse`, :func:`psnr`, :func:`ssim` (SSIM via ``pytorch_msssim``,
  a dependency of cladec: ``pip install 'pytorch-msssim>=1.0'`` where it is missing).
* :func:`reconstruction_metrics` -- all three at once (means, or per image).
* :func:`accuracy` (predictions vs labels) and :func:`agreement` (predictions vs predictions).
* :func:`per_class` -- the mean of any per-image value within each class.

Images are float tensors ``(N, C, H, W)`` in [0, 1]; ``uint8`` images are scaled by 1/255.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from .._errors import ConfigError, DataError

__all__ = ["mse", "psnr", "ssim", "accuracy", "agreement", "reconstruction_metrics", "per_class"]

#: PSNR reported for a perfect reconstruction (MSE = 0) instead of infinity.
PSNR_CAP = 100.0


def _pair(x: torch.Tensor, x_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    out = []
    for name, t in (("x", x), ("x_hat", x_hat)):
        if not isinstance(t, torch.Tensor):
            raise DataError(f"{name} must be a torch.Tensor of images (N, C, H, W), got {type(t).__name__}")
        if t.dtype == torch.uint8:
            t = t.float() / 255.0
        elif not t.is_floating_point():
            raise DataError(f"{name} must be float images in [0, 1] or uint8, got dtype {t.dtype}")
        if t.dim() != 4:
            raise DataError(f"{name} must be shaped (N, C, H, W), got shape {tuple(t.shape)}")
        out.append(t.detach().float().cpu())
    if out[0].shape != out[1].shape:
        raise DataError(f"x and x_hat must have the same shape, got {tuple(out[0].shape)} and {tuple(out[1].shape)}")
    if out[0].shape[0] == 0:
        raise DataError("no images: x and x_hat are empty")
    return out[0], out[1]


def mse(x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Mean squared error per image.

    Args:
        x: Originals ``(N, C, H, W)`` in [0, 1].
        x_hat: Reconstructions, same shape.

    Returns:
        A float tensor ``(N,)``: the mean over channels and pixels of ``(x_hat - x)²`` for each image.

    Examples:
        >>> x = torch.zeros(2, 1, 4, 4)
        >>> mse(x, torch.full_like(x, 0.5)).tolist()
        [0.25, 0.25]
    """
    x, x_hat = _pair(x, x_hat)
    return (x_hat - x).pow(2).flatten(1).mean(1)


def psnr(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio per image, in dB: ``10·log10(data_range² / MSE)``.

    A perfect reconstruction (MSE = 0) gets :data:`PSNR_CAP` (100 dB) instead of infinity, so means stay finite.

    Args:
        x: Originals ``(N, C, H, W)`` in [0, 1].
        x_hat: Reconstructions, same shape.
        data_range: The range of pixel values (1 for images in [0, 1]).

    Returns:
        A float tensor ``(N,)``.

    Examples:
        >>> x = torch.zeros(1, 1, 4, 4)
        >>> round(float(psnr(x, torch.full_like(x, 0.1))[0]), 2)
        20.0
    """
    data_range = _data_range(x, x_hat, data_range)
    err = mse(x, x_hat).double()
    val = 10.0 * torch.log10(float(data_range) ** 2 / err.clamp_min(1e-300))
    return val.clamp(max=PSNR_CAP).float()


def _data_range(x: Any, x_hat: Any, data_range: float) -> float:
    """uint8 images are compared after scaling to [0, 1]: their range is 1 (``data_range`` 255 means the same)."""
    if any(isinstance(t, torch.Tensor) and t.dtype == torch.uint8 for t in (x, x_hat)):
        if float(data_range) not in (1.0, 255.0):
            raise DataError(
                f"uint8 images are scaled to [0, 1] before comparing: data_range must be 1 (or 255, "
                f"the same range), got {data_range}"
            )
        return 1.0
    return float(data_range)


def _win_size(h: int, w: int, win_size: int) -> int:
    ws = min(int(win_size), h, w)
    if ws % 2 == 0:
        ws -= 1
    if ws < 3:
        raise DataError(f"SSIM needs images of at least 3×3 pixels, got {h}×{w}")
    return ws


def ssim(x: torch.Tensor, x_hat: torch.Tensor, data_range: float = 1.0, win_size: int = 11) -> torch.Tensor:
    """Structural similarity per image (Wang et al. 2004), computed by ``pytorch_msssim.ssim``.

    Gaussian window of size ``win_size`` (σ = 1.5), averaged over channels. For images smaller than the
    window, the largest odd window that fits is used.

    Args:
        x: Originals ``(N, C, H, W)`` in [0, 1].
        x_hat: Reconstructions, same shape.
        data_range: The range of pixel values (1 for images in [0, 1]).
        win_size: Gaussian window size (odd; default 11 as in the SSIM paper).

    Returns:
        A float tensor ``(N,)``, 1 for identical images.

    Raises:
        ConfigError: If ``pytorch_msssim`` is not installed.

    Examples:
        >>> x = torch.rand(2, 1, 28, 28)
        >>> ssim(x, x).round(decimals=4).tolist()
        [1.0, 1.0]
    """
    import warnings

    try:
        with warnings.catch_warnings():  # pytorch_msssim uses the deprecated torch.jit.script_method
            warnings.simplefilter("ignore", DeprecationWarning)
            from pytorch_msssim import ssim as _ssim
    except ImportError:  # pragma: no cover - depends on the environment
        raise ConfigError(
            "SSIM needs the pytorch-msssim package (a dependency of cladec, missing here): "
            "pip install 'pytorch-msssim>=1.0'"
        ) from None
    data_range = _data_range(x, x_hat, data_range)
    x, x_hat = _pair(x, x_hat)
    ws = _win_size(x.shape[-2], x.shape[-1], win_size)
    out = []
    for i in range(0, x.shape[0], 1024):
        out.append(
            _ssim(x[i : i + 1024], x_hat[i : i + 1024], data_range=float(data_range), size_average=False, win_size=ws)
        )
    return torch.cat(out).float()


def _as_pred(p: torch.Tensor | Sequence[int], name: str) -> torch.Tensor:
    p = torch.as_tensor(p).detach().cpu()
    if p.dim() == 2 and p.shape[1] == 1:  # a column of class indices (N, 1), e.g. labels read from a table
        p = p[:, 0]
    elif p.dim() == 2:  # logits / probabilities (N, K), K >= 2
        p = p.argmax(1)
    if p.dim() != 1:
        raise DataError(f"{name} must be class indices (N,) or (N, 1), or logits (N, K), got shape {tuple(p.shape)}")
    if p.is_floating_point():
        if not torch.equal(p, p.round()):
            raise DataError(f"{name} must hold integer class indices, got non-integer values")
    return p.long()


def accuracy(predictions: torch.Tensor | Sequence[int], labels: torch.Tensor | Sequence[int]) -> float:
    """Fraction of predictions equal to the labels.

    Args:
        predictions: Predicted classes ``(N,)`` or ``(N, 1)``, or logits ``(N, K)`` with ``K >= 2``
            (arg-maxed).
        labels: True classes ``(N,)`` or ``(N, 1)``.

    Returns:
        A float in [0, 1].

    Examples:
        >>> accuracy(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 1, 1, 2]))
        0.75
    """
    p, y = _as_pred(predictions, "predictions"), _as_pred(labels, "labels")
    if p.shape != y.shape:
        raise DataError(f"got {p.shape[0]} predictions but {y.shape[0]} labels")
    if p.numel() == 0:
        raise DataError("no predictions to score")
    return float((p == y).float().mean())


def agreement(predictions: torch.Tensor | Sequence[int], reference: torch.Tensor | Sequence[int]) -> float:
    """Fraction of images on which two sets of predictions agree (e.g. on reconstructions vs on originals).

    Args:
        predictions: Predicted classes ``(N,)`` or ``(N, 1)``, or logits ``(N, K)`` with ``K >= 2``.
        reference: The reference predictions, same forms.

    Returns:
        A float in [0, 1].

    Examples:
        >>> agreement(torch.tensor([3, 3, 1]), torch.tensor([3, 2, 1]))
        0.6666666865348816
    """
    p, r = _as_pred(predictions, "predictions"), _as_pred(reference, "reference")
    if p.shape != r.shape:
        raise DataError(f"got {p.shape[0]} predictions but {r.shape[0]} reference predictions")
    if p.numel() == 0:
        raise DataError("no predictions to compare")
    return float((p == r).float().mean())


def reconstruction_metrics(
    x: torch.Tensor, x_hat: torch.Tensor, *, per_image: bool = False, data_range: float = 1.0
) -> dict:
    """MSE, PSNR and SSIM of reconstructions ``x_hat`` of ``x``.

    Args:
        x: Originals ``(N, C, H, W)`` in [0, 1].
        x_hat: Reconstructions, same shape.
        per_image: Return the per-image tensors instead of means.
        data_range: The range of pixel values.

    Returns:
        ``{"mse", "psnr", "ssim"}``: floats (means over the images, plus ``"mse_std"``, ``"psnr_std"``,
        ``"ssim_std"`` and ``"n"``), or ``(N,)`` tensors with ``per_image=True``.

    Examples:
        >>> x = torch.rand(4, 1, 28, 28)
        >>> m = reconstruction_metrics(x, (x + 0.1).clamp(0, 1))
        >>> sorted(m)
        ['mse', 'mse_std', 'n', 'psnr', 'psnr_std', 'ssim', 'ssim_std']
    """
    vals = {
        "mse": mse(x, x_hat),
        "psnr": psnr(x, x_hat, data_range=data_range),
        "ssim": ssim(x, x_hat, data_range=data_range),
    }
    if per_image:
        return vals
    out: dict = {"n": int(vals["mse"].shape[0])}
    for k, v in vals.items():
        out[k] = float(v.double().mean())
        out[f"{k}_std"] = float(v.double().std()) if v.numel() > 1 else 0.0
    return out


def per_class(
    values: torch.Tensor | Sequence[float],
    labels: torch.Tensor | Sequence[int],
    classes: Sequence[str] | int,
) -> dict[str, dict]:
    """Mean (and standard deviation and count) of a per-image value within each class.

    Booleans (e.g. ``pred == labels``) become per-class accuracies.

    Args:
        values: One value per image ``(N,)`` (float or bool).
        labels: Class index per image ``(N,)`` or ``(N, 1)``.
        classes: Class names (index = label) or the number of classes.

    Returns:
        ``{class_name: {"n": count, "mean": mean, "std": std}}`` in class order; a class without images
        has ``n = 0`` and ``mean``/``std`` ``None``.

    Examples:
        >>> per_class(torch.tensor([1.0, 0.0, 0.5]), torch.tensor([0, 0, 1]), ["cat", "dog"])["cat"]
        {'n': 2, 'mean': 0.5, 'std': 0.7071067811865476}
    """
    v = torch.as_tensor(values).detach().cpu().double().view(-1)
    y = _as_pred(labels, "labels")
    if v.shape[0] != y.shape[0]:
        raise DataError(f"got {v.shape[0]} values but {y.shape[0]} labels")
    if isinstance(classes, int):
        names = [str(i) for i in range(classes)]
    else:
        names = [str(c) for c in classes]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= len(names)):
        raise DataError(f"labels must lie in [0, {len(names) - 1}] for {len(names)} classes")
    out: dict[str, dict] = {}
    for i, name in enumerate(names):
        sel = v[y == i]
        n = int(sel.numel())
        mean = float(sel.mean()) if n else None
        std = float(sel.std()) if n > 1 else (0.0 if n == 1 else None)
        if mean is not None and math.isnan(mean):
            mean = std = None
        out[name] = {"n": n, "mean": mean, "std": std}
    return out
