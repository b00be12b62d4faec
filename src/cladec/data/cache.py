"""The decoded-image cache of folder and zip data sets (npz files, pruned by size)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import warnings
import zipfile
from pathlib import Path

import numpy as np

from .._io import atomic_path
from ._common import decoded_cache_dir

# <stem>-<12 hex digits of the resolved path>-<split>-<file size>-<mtime in ns>.npz; the key is all but the
# last two numbers, so entries of one source and split differ only in size and mtime
_CACHE_NAME = re.compile(r"(?P<key>[A-Za-z0-9_.-]+-[0-9a-f]{12}-(?:train|test))-\d+-\d+\.npz")


def cache_path(path: Path, split: str) -> Path | None:
    try:
        st = path.stat()
    except OSError:
        return None
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    return decoded_cache_dir() / f"{stem}-{digest}-{split}-{st.st_size}-{st.st_mtime_ns}.npz"


def read_cache(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    """``(images, labels, classes, transparent)`` from a cache entry, or None for a broken or outdated one.

    The entry is read with ``allow_pickle=False``: arrays of Python objects (which only unpickling could
    read, and unpickling can run any code) are never loaded. cladec never writes such an entry, so one that
    holds them was put there by something else: it is ignored with a one-line ``UserWarning`` naming the file
    and why, and rebuilt (replaced) from the zip, like any other unusable entry.
    """
    objects = _npz_object_arrays(path)  # from the .npy headers: also arrays the reading below would not touch
    if objects:
        warnings.warn(
            f"ignored the decoded-image cache entry {path}: it holds arrays of Python objects "
            f"({', '.join(objects)}), which cladec never loads (reading them means unpickling, which can run "
            "any code; its entries hold only numbers and text); it is rebuilt from the zip",
            UserWarning,
            stacklevel=4,  # read_cache < load_image_folder < load_dataset < the caller
        )
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
            transparent = z["transparent"]  # entries written before transparency was handled lack it: rebuilt
    except Exception:  # noqa: BLE001 - a broken cache is ignored and rebuilt
        return None
    if images.ndim != 4 or images.dtype != np.uint8 or not len(images) == len(labels) == len(transparent):
        return None
    if limit is not None:
        images, labels, transparent = images[:limit], labels[:limit], transparent[:limit]
    return images, labels.astype(np.int64), classes, transparent.astype(bool)


def _npz_object_arrays(path: Path) -> list[str]:
    """Names of the arrays in the ``.npz`` at ``path`` whose dtype holds Python objects, read from the ``.npy``
    headers only (nothing is unpickled); ``[]`` if there are none or the file cannot be read as a zip of them."""
    found: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        _, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        _, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    found.append(name[: -len(".npy")])
    except Exception:  # noqa: BLE001 - not an npz at all: no object arrays to report
        return found
    return found


def write_cache(
    path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], transparent: np.ndarray
) -> None:
    """Write a cache entry atomically, then remove the stale entries of the same source and split."""
    try:
        with atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str), transparent=transparent)
    except OSError:
        return  # the cache is only an optimisation
    _prune_cache(path)


def _prune_cache(keep: Path) -> None:
    """Remove the cache entries of ``keep``'s source and split other than ``keep`` (older sizes/mtimes).

    Only files whose whole name is a cache-entry name with the same key are touched; files that vanish
    meanwhile (another process pruning) or cannot be removed are ignored.
    """
    m = _CACHE_NAME.fullmatch(keep.name)
    if m is None:
        return
    try:
        names = [e.name for e in os.scandir(keep.parent)]
    except OSError:
        return
    for name in names:
        other = _CACHE_NAME.fullmatch(name)
        if other is None or other["key"] != m["key"] or name == keep.name:
            continue
        with contextlib.suppress(OSError):  # FileNotFoundError (vanished), IsADirectoryError, permissions
            (keep.parent / name).unlink()
