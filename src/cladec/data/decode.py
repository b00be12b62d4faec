"""Decoding image files to arrays: grey/RGB conversion, transparency."""

from __future__ import annotations

import io
import re
import warnings
import zipfile
import zlib
from typing import Any

import numpy as np

from .._errors import DataError

_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

# Transparent pixels are composited onto white. White is what image viewers, web browsers and documents show
# behind a transparent PNG (and ImageMagick's `-flatten` default), so the decoded images look like the files as
# people see them; the usual transparent images (logos, sketches, cut-out product photos: dark objects on a
# clear background) keep their objects visible on white, while on black they would vanish. The colour hidden
# under a fully transparent pixel (often black, sometimes garbage) is never used.
ALPHA_BACKGROUND = 255

ALPHA_BACKGROUND_NAME = "white"

_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _grey_uint8(im: Any) -> np.ndarray:
    """A grey image as uint8 0..255, scaling deeper images by their bit depth (PIL's convert("L") clips them).

    Any transparency is composited onto the background (:data:`ALPHA_BACKGROUND`); see :func:`_grey_alpha`.
    """
    if im.mode in ("1", "L", "LA"):
        alpha = _grey_alpha(im)
        return _composite(np.asarray(im.convert("L")), alpha)
    a = np.asarray(im)
    # 16-bit: "I;16*" modes, and "I" for a PNG (older Pillow opens 16-bit grey PNGs so) whatever its values
    sixteen = im.mode.startswith("I;16") or (im.mode == "I" and getattr(im, "format", None) == "PNG")
    if sixteen or (im.mode == "I" and a.size and 255 < int(a.max()) <= 65535):
        out = ((np.clip(a, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif im.mode == "F" and a.size and float(a.min()) >= -1e-3 and float(a.max()) <= 1 + 1e-3:
        out = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)  # float in [0, 1] (rounding overshoot)
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if not (lo >= 0 and hi <= 255):
            raise ValueError(
                f"grey image of mode {im.mode} has values {lo:g}..{hi:g}; supported are 8- and "
                "16-bit integers and floats in [0, 1] or [0, 255]"
            )
        out = np.rint(a).astype(np.uint8)
    return _composite(out, _grey_alpha(im))


def _grey_alpha(im: Any) -> np.ndarray | None:
    """The alpha (uint8 H x W) of a grey image with an alpha channel or a transparent grey value, else None."""
    if im.mode == "LA":
        return np.asarray(im.getchannel("A"))
    key = im.info.get("transparency")
    if key is None or isinstance(key, (bytes, tuple)):
        return None
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("LA").getchannel("A"))  # Pillow maps the key to alpha 0
    # deeper grey (16-bit, 32-bit, float): compare with the key at full depth (convert("LA") would clip first)
    return np.where(np.asarray(im) == key, 0, 255).astype(np.uint8)


def _composite(values: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``values`` (H, W[, C]) uint8 over the :data:`ALPHA_BACKGROUND` with straight ``alpha`` (H, W), rounded."""
    if alpha is None or bool((alpha == 255).all()):
        return values
    a = alpha.astype(np.uint32)
    if values.ndim == 3:
        a = a[:, :, None]
    out = (values.astype(np.uint32) * a + ALPHA_BACKGROUND * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _has_transparency(im: Any) -> bool:
    """Whether some pixel of ``im`` is not fully opaque (an alpha channel below 255, or a transparent colour)."""
    if im.mode in _ALPHA_MODES:
        lo, _ = im.getchannel("A").getextrema()
        return lo < 255
    if "transparency" not in im.info:
        return False
    if im.mode in _GREY_MODES:
        alpha = _grey_alpha(im)
        return alpha is not None and bool((alpha < 255).any())
    lo, _ = im.convert("RGBA").getchannel("A").getextrema()  # palette (P) or colour-key (RGB) transparency
    return lo < 255


def is_grey_mode(mode: str) -> bool:
    """Whether images of the PIL mode ``mode`` are decoded as grey (one channel) by :func:`decode_images`."""
    return mode in _GREY_MODES


def decode_images(source: Any, members: list[Any], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode images to one uint8 array (N, H, W, C); grey if every image is grey, else RGB.

    Transparent pixels are composited onto :data:`ALPHA_BACKGROUND` (white). Returns the images and a bool
    array (N,) telling which images had transparent pixels (the caller warns).
    """
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    transparent = np.zeros(len(members), dtype=bool)
    any_color = False
    for i, m in enumerate(members):
        try:
            raw = source.read(m)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as e:
            # a damaged zip member (bad CRC or deflate data), an encrypted one, an unsupported compression
            raise DataError(f"cannot read image {m} in {label}: {e}") from None
        try:
            with warnings.catch_warnings():  # the pixel limit is enforced below, as an error, not a warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(raw))
            with im:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and im.width * im.height > limit:
                    raise TooManyPixels(im.size)
                transparent[i] = _has_transparency(im)
                if im.mode in _GREY_MODES:
                    a = _grey_uint8(im)[:, :, None]
                elif transparent[i]:
                    rgba = np.asarray(im.convert("RGBA"))  # un-premultiplies RGBa; palette alpha for P
                    a = _composite(rgba[:, :, :3], rgba[:, :, 3])
                    any_color = True
                else:
                    a = np.asarray(im.convert("RGB"))
                    any_color = True
        except Image.DecompressionBombError as e:  # over twice the limit: PIL refuses before decoding
            raise DataError(too_many_pixels(m, label, None, pixels_in(str(e)))) from None
        except TooManyPixels as e:
            raise DataError(too_many_pixels(m, label, e.size, e.size[0] * e.size[1])) from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {m} in {label}: {e}") from None
        arrays.append(a)
    if any_color:
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise MixedSizes(arrays, transparent)
    return np.stack(arrays), transparent


class TooManyPixels(Exception):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(f"{size[0]}x{size[1]} pixels")
        self.size = size


def pixels_in(message: str) -> int | None:
    """The pixel count in PIL's DecompressionBombError message ("Image size (N pixels) exceeds ..."), if any."""
    m = re.search(r"\((\d+) pixels\)", message)
    return int(m.group(1)) if m else None


def too_many_pixels(member: Any, label: str, size: tuple[int, int] | None, pixels: int | None) -> str:
    """The message refusing an image over ``PIL.Image.MAX_IMAGE_PIXELS`` (see :func:`load_image_folder`)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    side = int(limit**0.5) if limit else 0
    what = (
        f"{size[0]}×{size[1]} = {size[0] * size[1]:,} pixels"
        if size
        else (f"{pixels:,} pixels" if pixels else "more pixels than twice the limit")
    )
    return (
        f"image {member} in {label} is too large to load: {what}, more than the limit of {limit:,} pixels per "
        f"image (about {side:,}×{side:,}; PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); "
        "downscale that image or remove it from the data set"
    )


class MixedSizes(Exception):
    def __init__(self, arrays: list[np.ndarray], transparent: np.ndarray) -> None:
        super().__init__("images of different sizes")
        self.arrays = arrays
        self.transparent = transparent
