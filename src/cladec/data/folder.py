"""Image folders and zip files of images, one subfolder per class."""

from __future__ import annotations

import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import DataError, MissingDataError
from ._common import resize_images
from .cache import cache_path, read_cache, write_cache
from .decode import ALPHA_BACKGROUND, ALPHA_BACKGROUND_NAME, MixedSizes, decode_images
from .names import SPLITS

__all__ = ["IMAGE_EXTENSIONS", "list_image_folder", "read_zip_member"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


def _interleave(per_class: list[list[Any]]) -> list[tuple[int, Any]]:
    """Round-robin over classes: [(label, item), ...] so that every prefix is class-balanced."""
    out: list[tuple[int, Any]] = []
    longest = max((len(x) for x in per_class), default=0)
    for i in range(longest):
        for label, items in enumerate(per_class):
            if i < len(items):
                out.append((label, items[i]))
    return out


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


#: Largest uncompressed image file read from a zip (512 MiB; a full-limit RGBA BMP is ~358 MB).
MAX_ZIP_MEMBER_BYTES = 512 * 1024 * 1024


def read_zip_member(zf: zipfile.ZipFile, path: Path, member: str) -> bytes:
    """The bytes of ``member`` of the zip ``zf`` (at ``path``), refused (DataError) past
    :data:`MAX_ZIP_MEMBER_BYTES` uncompressed, by the size the zip declares and by what is actually read (a zip
    bomb may declare less than it holds)."""
    limit = MAX_ZIP_MEMBER_BYTES
    declared = zf.getinfo(member).file_size
    if declared <= limit:
        with zf.open(member) as f:
            data = f.read(limit + 1)
        if len(data) <= limit:
            return data
    raise DataError(
        f"image {member} in {path} is too large to load: "
        f"{'over ' if declared <= limit else ''}{max(declared, limit + 1):,} bytes uncompressed, more than "
        f"the limit of {limit:,} bytes per image file in a zip (a guard against zip bombs); remove it from "
        "the zip"
    )


class _ZipSource:
    """Entries ``[prefix/]split/class/file`` of a zip archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path} is not a readable zip file: {e}") from None
        # (prefix, split, class) -> [member names]
        self.tree: dict[tuple[str, str, str], list[str]] = {}
        for member in self.zf.namelist():
            if member.endswith("/") or "__MACOSX" in member or not _is_image_name(member):
                continue
            parts = [q for q in member.split("/") if q]
            if len(parts) < 3:
                continue
            prefix = "/".join(parts[:-3])
            self.tree.setdefault((prefix, parts[-3], parts[-2]), []).append(member)
        prefixes = sorted({k[0] for k in self.tree if k[1] in SPLITS}, key=lambda p: (p.count("/"), p))
        self.prefix = prefixes[0] if prefixes else ""

    def splits(self) -> list[str]:
        return sorted({k[1] for k in self.tree if k[0] == self.prefix})

    def classes(self) -> list[str]:
        return sorted({k[2] for k in self.tree if k[0] == self.prefix and k[1] in SPLITS})

    def files(self, split: str, cls: str) -> list[str]:
        return sorted(self.tree.get((self.prefix, split, cls), []), key=lambda m: m.rsplit("/", 1)[-1])

    def read(self, member: str) -> bytes:
        return read_zip_member(self.zf, self.path, member)

    def close(self) -> None:
        self.zf.close()


class _DirSource:
    """Files ``root/split/class/file`` of a folder (or of its single sub-folder, as from an unzipped archive)."""

    def __init__(self, path: Path) -> None:
        base = path
        if not any((path / s).is_dir() for s in SPLITS):
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if len(subdirs) == 1 and any((subdirs[0] / s).is_dir() for s in SPLITS):
                base = subdirs[0]
        self.path = base

    def splits(self) -> list[str]:
        return sorted(s for s in SPLITS if (self.path / s).is_dir())

    def classes(self) -> list[str]:
        names: set[str] = set()
        for s in SPLITS:
            d = self.path / s
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(names)

    def files(self, split: str, cls: str) -> list[Path]:
        d = self.path / split / cls
        if not d.is_dir():
            return []
        return sorted((p for p in d.iterdir() if p.is_file() and _is_image_name(p.name)), key=lambda p: p.name)

    def read(self, member: Path) -> bytes:
        return member.read_bytes()

    def close(self) -> None:
        pass


_LAYOUT = "<split>/<class>/<image>.png|jpg|jpeg|bmp|tif|tiff with <split> 'train' or 'test'"


def _check_path(path: Path) -> bool:
    """Whether ``path`` is a zip (else a folder); a missing path or a file that is no zip is refused."""
    if not path.exists():
        raise MissingDataError(f"image folder not found: {path}; expected a folder or .zip laid out as {_LAYOUT}")
    is_zip = path.is_file()
    if is_zip and not zipfile.is_zipfile(path):
        raise DataError(f"{path} is a file but not a zip archive; expected a folder or .zip laid out as {_LAYOUT}")
    return is_zip


def _order(source: Any, path: Path, split: str, limit: int | None) -> tuple[list[tuple[int, Any]], list[str]]:
    """The split's ``[(label, member)]`` in the loading order (classes interleaved, cut to ``limit``), and the
    class names."""
    classes = source.classes()
    if split not in source.splits():
        found = source.splits()
        raise DataError(f"{path} has no '{split}' split (found: {found or 'none'}); expected a layout {_LAYOUT}")
    order = _interleave([source.files(split, c) for c in classes])
    if not order:
        raise DataError(f"{path}/{split} holds no images ({', '.join(IMAGE_EXTENSIONS)}); expected {_LAYOUT}")
    return (order[:limit] if limit is not None else order), classes


def list_image_folder(path: Path, split: str, limit: int | None) -> tuple[list[str], np.ndarray, list[str], bool]:
    """The image files of a folder's or zip's split, without decoding any: ``(members, labels, classes, is_zip)``.

    ``members`` are file paths (a folder) or member names (a zip), in the order :func:`load_image_folder` loads
    them (classes interleaved, cut to ``limit``); the same errors for a missing path, split or images.
    """
    is_zip = _check_path(path)
    source: Any = _ZipSource(path) if is_zip else _DirSource(path)
    try:
        order, classes = _order(source, path, split, limit)
    finally:
        source.close()
    return [str(m) for _, m in order], np.array([lab for lab, _ in order], dtype=np.int64), classes, is_zip


def _warn_transparent(transparent: np.ndarray, where: str) -> None:
    """One UserWarning per load naming the folder/zip, how many images had transparency and the background."""
    k = int(np.count_nonzero(transparent))
    if k:
        warnings.warn(
            f"{k} of {len(transparent)} images in {where} have transparent pixels (alpha channel or transparent "
            f"colour); they were composited onto a {ALPHA_BACKGROUND_NAME} background ({ALPHA_BACKGROUND} in "
            f"every channel) before use",
            UserWarning,
            stacklevel=4,  # _warn_transparent < load_image_folder < load_dataset < the caller
        )


def load_image_folder(
    path: Path,
    split: str,
    limit: int | None,
    *,
    cache: bool,
    size: tuple[int, int] | None = None,
    mode: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``<split>/<class>/<image>`` from a folder or a zip: images, labels and class names.

    Images are returned as ``(N, C, H, W)`` uint8 -- or float32 already resized to ``size`` if their sizes
    differ. They are grey (C = 1) if every image is grey, else RGB (C = 3).

    Transparency: images with an alpha channel (RGBA, LA, PA), a transparent palette entry (P) or a
    transparent colour key are composited onto a **white** background (255 in every channel), with straight
    (non-premultiplied) alpha: ``value * alpha + 255 * (1 - alpha)``. PIL's ``convert("RGB")`` would instead
    drop the alpha and show whatever colour the file hides under transparent pixels (often black, sometimes
    garbage). White is what viewers and browsers show behind transparent images, so the data looks as the
    files do to people, and dark objects on a clear background (logos, sketches, cut-out photos) stay
    visible. One ``UserWarning`` per load names the folder/zip, the number of images with transparent pixels
    and the background (also when the images come from the decoded-image cache).

    Unreadable and oversized images: every image file of the split (within ``limit``) must decode, else
    the load is refused with a :class:`DataError` naming the file -- nothing is skipped silently, so a data
    set never shrinks unnoticed. That includes images of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
    (89,478,485 by default, about 9,459 × 9,459; ``None`` there lifts the limit): PIL's guard against
    decompression bombs (a 20000 × 20000 PNG of one colour is a few KB on disk but 400 MB decoded). The
    message gives the file, its size and the limit; downscale or remove the file. Such a file is refused
    from its header, before any pixel is decoded. In a zip, an image file of more than 512 MiB uncompressed
    (a zip bomb) is refused the same way, from the size the zip declares or, if that lies, after reading
    512 MiB of it.

    The decoded-image cache (zips, ``limit=None`` decodes) keeps one entry per zip and split: writing a new
    entry removes the older ones of the same zip and split (the zip was replaced since).
    """
    is_zip = _check_path(path)
    where = f"{path} ({split})"

    cache_file = cache_path(path, split) if (is_zip and cache) else None
    if cache_file is not None and cache_file.is_file():
        cached = read_cache(cache_file, limit)
        if cached is not None:
            images, labels, classes, transparent = cached
            _warn_transparent(transparent, where)
            return images, labels, classes

    source: Any = _ZipSource(path) if is_zip else _DirSource(path)
    try:
        order, classes = _order(source, path, split, limit)
        labels = np.array([lab for lab, _ in order], dtype=np.int64)
        try:
            images, transparent = decode_images(source, [m for _, m in order], str(path))
        except MixedSizes as e:
            if size is None:
                sizes = sorted({a.shape[:2] for a in e.arrays})
                raise DataError(
                    f"images in {path}/{split} have different sizes (H, W) {sizes[:4]}; pass size=... (e.g. "
                    "size=32) to resize them all to one size"
                ) from None
            _warn_transparent(e.transparent, where)
            resized = [
                resize_images(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None], size, mode)[0]
                for a in e.arrays
            ]
            return torch.stack(resized).numpy(), labels, classes
    finally:
        source.close()
    _warn_transparent(transparent, where)
    images = images.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if cache_file is not None and limit is None:
        write_cache(cache_file, images, labels, classes, transparent)
    return images, labels, classes
