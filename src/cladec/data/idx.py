"""IDX files (MNIST, Fashion-MNIST) and the embedded Fashion-MNIST subset."""

from __future__ import annotations

import gzip
import importlib.resources
import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np

from .._errors import DataError, MissingDataError
from ._common import how_to_get
from .download import download_first
from .names import FASHION_MNIST_CLASSES, MNIST_CLASSES

__all__ = ["read_idx"]

_EMBEDDED_DIR = "_data/fashion-mnist-mini"

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class _IdxSpec:
    title: str
    folder: str
    mirrors: tuple[str, ...]
    files: dict[str, tuple[tuple[str, str], tuple[str, str]]]  # split -> ((images, md5), (labels, md5))
    classes: tuple[str, ...]


IDX_SPECS = {
    "mnist": _IdxSpec(
        title="MNIST",
        folder="MNIST",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files={
            "train": (
                ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ),
            "test": (
                ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
            ),
        },
        classes=tuple(MNIST_CLASSES),
    ),
    "fashion-mnist": _IdxSpec(
        title="Fashion-MNIST",
        folder="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files={
            "train": (
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ),
            "test": (
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            ),
        },
        classes=tuple(FASHION_MNIST_CLASSES),
    ),
}


def read_idx(source: str | os.PathLike | BinaryIO, limit: int | None = None) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or not, without per-item Python loops.

    Args:
        source: a path or a binary file object (gzip is detected from the magic bytes).
        limit: read only the first ``limit`` items (``None``: all). The length of the data is still checked
            against the header's item count: exactly for uncompressed files (the file size) and, for gzip,
            from the uncompressed size in the gzip trailer (the rest is decompressed only if that disagrees).

    Returns:
        A read-only numpy array of shape ``(N, *dims)`` in the file's dtype (``uint8`` for MNIST).

    Raises:
        DataError: the file is not IDX, is truncated, or holds more or less data than its header says.

    Examples:
        >>> from pathlib import Path
        >>> import cladec
        >>> mini = Path(cladec.__file__).parent / "_data" / "fashion-mnist-mini"  # the embedded data set's files
        >>> labels = read_idx(mini / "t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels[:3]
        ((1000,), array([9, 2, 1], dtype=uint8))
        >>> read_idx(mini / "t10k-images-idx3-ubyte.gz", limit=5).shape
        (5, 28, 28)
    """
    return _read_idx_file(source, limit)[0]


def _read_idx_file(source: str | os.PathLike | BinaryIO, limit: int | None) -> tuple[np.ndarray, int]:
    """:func:`read_idx`, also returning the item count of the file's header (``N`` of the whole file)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with path.open("rb") as f:
                return _read_idx_stream(f, str(path), limit)
        except OSError as e:
            raise DataError(f"cannot read IDX file {path}: {e}") from None
    return _read_idx_stream(source, getattr(source, "name", "<stream>"), limit)


def _read_exact(f: IO[bytes] | gzip.GzipFile, n: int) -> bytearray:
    """Read exactly ``n`` bytes (fewer only at end of file) into a writable buffer."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[union-attr]  # typeshed's IO has no readinto; files do
        if not k:
            break
        got += k
    view.release()
    if got < n:
        del buf[got:]
    return buf


def _raw_length_and_gzip_isize(f: IO[bytes], is_gzip: bool) -> tuple[int | None, int | None]:
    """Bytes from the current position of a seekable file to its end, and (gzip) the trailer's ISIZE.

    ISIZE is the uncompressed size modulo 2**32 of the last gzip member; the position is restored.
    """
    try:
        start = f.tell()
        end = f.seek(0, io.SEEK_END)
        isize = None
        if is_gzip and end - start >= 18:  # 10-byte header + 8-byte trailer at least
            f.seek(end - 4)
            isize = int.from_bytes(f.read(4), "little")
        f.seek(start)
    except (OSError, ValueError):
        return None, None
    return end - start, isize


def _read_idx_stream(f: IO[bytes], label: str, limit: int | None) -> tuple[np.ndarray, int]:
    """Parse an IDX stream: ``(array of the first min(limit, N) items, N from the header)``."""
    head = f.read(2)
    is_gzip = head == b"\x1f\x8b"
    if not (hasattr(f, "seek") and f.seekable()):  # pragma: no cover - cladec itself only reads files
        f = io.BytesIO(head + f.read())
    else:
        f.seek(-len(head), io.SEEK_CUR)
    raw_len, isize = _raw_length_and_gzip_isize(f, is_gzip)
    stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=f) if is_gzip else f
    try:
        magic = _read_exact(stream, 4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or magic[3] == 0:
            raise DataError(
                f"{label} is not an IDX file (bad magic number {magic.hex() or 'empty'}); expected the MNIST "
                "format, e.g. train-images-idx3-ubyte(.gz)"
            )
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        dims_raw = _read_exact(stream, 4 * ndim)
        if len(dims_raw) != 4 * ndim:
            raise DataError(f"IDX file {label} is truncated (incomplete header)")
        dims = [int(d) for d in np.frombuffer(dims_raw, dtype=">u4")]
        n = dims[0] if limit is None else min(limit, dims[0])
        item = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
        nbytes = n * item * dtype.itemsize
        header_len = 4 + 4 * ndim
        expected = header_len + dims[0] * item * dtype.itemsize  # the whole file, as the header describes it
        body = _read_exact(stream, nbytes)
        if len(body) != nbytes:
            raise DataError(
                f"IDX file {label} is truncated: expected {nbytes} bytes of data for {n} items, got "
                f"{len(body)}; delete it and download it again"
            )
        # The rest of the file must hold exactly the items not read (also with `limit`, so that a truncated
        # file or a wrong header count is noticed). After a full read: nothing may follow. After a partial
        # read: the file size (uncompressed) or the gzip trailer's ISIZE tell, cheaply; only if ISIZE
        # disagrees (a damaged or a multi-member gzip) is the rest decompressed and counted.
        if n == dims[0]:
            actual = expected + len(stream.read(1))  # one byte more: data beyond the header's count
        elif not is_gzip and raw_len is not None:
            actual = raw_len
        elif is_gzip and isize is not None and isize == expected % (1 << 32):
            actual = expected
        else:
            actual = header_len + nbytes + sum(len(b) for b in iter(lambda: stream.read(1 << 20), b""))
    except EOFError as e:
        raise DataError(f"IDX file {label} is truncated ({e}); delete it and download it again") from None
    except (OSError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file {label}: {e}") from None
    if actual != expected:
        shape = "x".join(str(d) for d in dims[1:]) or "one value"
        held = "more data than that" if n == dims[0] else f"{actual} bytes"
        problem = "truncated" if actual < expected else "damaged (its header counts fewer items than it holds)"
        raise DataError(
            f"IDX file {label} does not match its header: the header says {dims[0]} items of {shape} "
            f"({expected} bytes in all) but the file holds {held}; it is {problem}: delete it and download it "
            "again"
        )
    arr = np.frombuffer(body, dtype=dtype).reshape([n, *dims[1:]])
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr, dims[0]


def _find_idx_pair(spec: _IdxSpec, root: Path, split: str) -> tuple[tuple[Path, Path] | None, list[Path]]:
    (img_name, _), (lab_name, _) = spec.files[split]
    tried: list[Path] = []
    for d in (root / spec.folder / "raw", root / spec.folder, root):
        found = []
        for fname in (img_name, lab_name):
            hit = None
            for cand in (d / fname, d / fname[: -len(".gz")]):
                tried.append(cand)
                if cand.is_file():
                    hit = cand
                    break
            found.append(hit)
        if found[0] is not None and found[1] is not None:
            return (found[0], found[1]), tried
    return None, tried


def load_idx_dataset(
    spec: _IdxSpec, root: Path, split: str, limit: int | None, download: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    pair, tried = _find_idx_pair(spec, root, split)
    if pair is None and download:
        raw = root / spec.folder / "raw"
        for fname, md5 in spec.files[split]:
            download_first([m + fname for m in spec.mirrors], raw / fname, md5)
        pair, tried2 = _find_idx_pair(spec, root, split)
        tried += tried2
    if pair is None:
        tried_txt = "\n  ".join(str(p) for p in dict.fromkeys(tried))
        raise MissingDataError(
            f"{spec.title} ({split}) not found. Looked for:\n  {tried_txt}\n{how_to_get(spec.title)}"
        )
    images, n_images = _read_idx_file(pair[0], limit)
    labels, n_labels = _read_idx_file(pair[1], limit)
    _check_idx_pair(str(pair[0]), images, n_images, str(pair[1]), labels, n_labels)
    return images[:, None, :, :], labels.astype(np.int64), list(spec.classes)


def _check_idx_pair(
    img_name: str, images: np.ndarray, n_images: int, lab_name: str, labels: np.ndarray, n_labels: int
) -> None:
    """Images (N, H, W) and labels (N,) that belong together: the headers' counts agree (even with a limit)."""
    if images.ndim != 3:
        raise DataError(f"{img_name} holds arrays of shape {images.shape[1:]}, expected 2-D images (H, W)")
    if labels.ndim != 1:
        raise DataError(f"{lab_name} holds arrays of shape {labels.shape[1:]}, expected one label per image")
    if n_images != n_labels or len(images) != len(labels):
        raise DataError(
            f"{img_name} holds {n_images} images but {lab_name} holds {n_labels} labels (IDX header counts); "
            "the two files must hold the same number of items: they do not belong together or one is damaged "
            "-- delete them and download them again"
        )


def load_embedded(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    base = importlib.resources.files("cladec").joinpath(_EMBEDDED_DIR)
    prefix = "train" if split == "train" else "t10k"
    arrays, names = [], []
    for kind in ("images-idx3", "labels-idx1"):
        res = base.joinpath(f"{prefix}-{kind}-ubyte.gz")
        names.append(f"fashion-mnist-mini/{res.name}")
        try:
            with res.open("rb") as f:
                arrays.append(_read_idx_stream(f, names[-1], limit))
        except FileNotFoundError:
            raise DataError(
                f"the embedded data set is missing from this installation ({res}); reinstall cladec, or use "
                "'fashion-mnist' with download=True"
            ) from None
    (images, n_images), (labels, n_labels) = arrays
    _check_idx_pair(names[0], images, n_images, names[1], labels, n_labels)
    return images[:, None, :, :], labels.astype(np.int64), list(FASHION_MNIST_CLASSES)
