"""Writing images for the HTML pages: PNG tiles of images and colour-mapped difference maps."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

__all__ = ["png_bytes", "write_png", "diff_map", "diff_scale", "write_colorbar", "colormap_lut"]


def colormap_lut(name: str = "magma") -> np.ndarray:
    """A colour lookup table from a matplotlib colour map.

    Args:
        name: A matplotlib colour map name.

    Returns:
        A ``(256, 3)`` uint8 array.

    Examples:
        >>> colormap_lut("magma").shape
        (256, 3)
    """
    import matplotlib

    cmap = matplotlib.colormaps[name]
    return (cmap(np.linspace(0.0, 1.0, 256))[:, :3] * 255.0 + 0.5).astype(np.uint8)


def _to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float in [0, 1] (or ``(H, W, 3)`` uint8) → ``(H, W)`` or ``(H, W, 3)`` uint8."""
    if isinstance(img, np.ndarray) and img.dtype == np.uint8:
        return img
    t = torch.as_tensor(img).detach().float().clamp(0, 1).cpu()
    arr = (t.numpy() * 255.0 + 0.5).astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
    return arr


def png_bytes(img: torch.Tensor | np.ndarray) -> bytes:
    """Encode one image as PNG bytes.

    Args:
        img: ``(C, H, W)`` float tensor in [0, 1] (C = 1 or 3), or an ``(H, W, 3)`` uint8 array.

    Returns:
        The PNG file's bytes.

    Examples:
        >>> png_bytes(torch.zeros(1, 4, 4))[:4]
        b'\\x89PNG'
    """
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def write_png(path: str | Path, img: torch.Tensor | np.ndarray) -> Path:
    """Write one image as a PNG file (parent folders are created).

    The pages are built in a temporary folder that replaces the output folder only when complete, so
    single files are written directly.

    Args:
        path: Target ``.png`` file.
        img: See :func:`png_bytes`.

    Returns:
        The path written.

    Examples:
        >>> write_png("img/x.png", torch.rand(3, 8, 8))
        PosixPath('img/x.png')
        >>> Path("img/x.png").read_bytes()[:4]
        b'\\x89PNG'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(img))
    return path


def diff_scale(diffs: list[torch.Tensor], quantile: float = 0.995) -> float:
    """A shared upper end for the colour scale of difference maps (so maps are comparable).

    Args:
        diffs: Tensors of per-pixel absolute differences (any shape).
        quantile: Which quantile of all values maps to the brightest colour.

    Returns:
        The scale, at least 0.02.

    Examples:
        >>> diff_scale([torch.full((4,), 0.5)])
        0.5
    """
    vals = torch.cat([d.detach().float().flatten().cpu() for d in diffs]) if diffs else torch.zeros(1)
    if vals.numel() > 2_000_000:
        vals = vals[torch.randperm(vals.numel(), generator=torch.Generator().manual_seed(0))[:2_000_000]]
    return max(float(torch.quantile(vals, quantile)), 0.02)


def diff_map(x: torch.Tensor, x_hat: torch.Tensor, scale: float, lut: np.ndarray) -> np.ndarray:
    """Colour-map ``|x − x̂|`` (mean over channels) with values in ``[0, scale]``.

    Args:
        x: Original ``(C, H, W)`` in [0, 1].
        x_hat: Reconstruction, same shape.
        scale: The difference shown with the brightest colour.
        lut: ``(256, 3)`` uint8 colour table (:func:`colormap_lut`).

    Returns:
        An ``(H, W, 3)`` uint8 array.

    Examples:
        >>> diff_map(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), 1.0, colormap_lut()).shape
        (2, 2, 3)
    """
    d = (x.float() - x_hat.float()).abs().mean(0).cpu().numpy()
    idx = np.clip(d / max(scale, 1e-8) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return lut[idx]


def write_colorbar(path: str | Path, lut: np.ndarray, width: int = 256, height: int = 10) -> Path:
    """Write a horizontal colour bar for the difference-map legend.

    Args:
        path: Target ``.png`` file.
        lut: ``(256, 3)`` colour table.
        width, height: Size in pixels.

    Returns:
        The path written.

    Examples:
        >>> write_colorbar("bar.png", colormap_lut(), width=64)
        PosixPath('bar.png')
    """
    idx = np.linspace(0, 255, width).round().astype(np.int64)
    bar = np.repeat(lut[idx][None, :, :], height, axis=0)
    return write_png(path, bar)
