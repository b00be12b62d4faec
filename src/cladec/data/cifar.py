"""CIFAR-10 in its python-pickle batches, read without unpickling arbitrary objects."""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from .._errors import DataError, MissingDataError
from ._common import how_to_get
from .download import download_first, safe_extract_tar
from .folder import load_image_folder
from .names import CIFAR10_CLASSES

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"

_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"

_CIFAR_BATCH_DIR = "cifar-10-batches-py"


def load_cifar10(
    root: Path, split: str, limit: int | None, download: bool, *, cache: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    zip_path, dir_path, batch_dir = root / "cifar10-jpeg.zip", root / "cifar10-jpeg", root / _CIFAR_BATCH_DIR
    tried = [zip_path, dir_path, batch_dir]

    def _have_batches() -> bool:
        return (batch_dir / "test_batch").is_file() and (batch_dir / "data_batch_1").is_file()

    if zip_path.is_file():
        return load_image_folder(zip_path, split, limit, cache=cache)
    if dir_path.is_dir():
        return load_image_folder(dir_path, split, limit, cache=cache)
    if not _have_batches() and download:
        tar_path = root / "cifar-10-python.tar.gz"
        download_first([_CIFAR_URL], tar_path, _CIFAR_MD5)
        safe_extract_tar(tar_path, root, member_prefix=_CIFAR_BATCH_DIR + "/")
    if _have_batches():
        return _read_cifar_batches(batch_dir, split, limit)
    tried_txt = "\n  ".join(str(p) for p in tried)
    raise MissingDataError(f"CIFAR-10 ({split}) not found. Looked for:\n  {tried_txt}\n{how_to_get('CIFAR-10')}")


def _read_cifar_batches(folder: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels, have = [], [], 0
    for fname in files:
        if limit is not None and have >= limit:
            break
        path = folder / fname
        if not path.is_file():
            raise DataError(f"CIFAR-10 batch file missing: {path}; download the data set again (download=True)")
        batch = _safe_unpickle_file(path)
        data = _get_key(batch, "data", path)
        labs = _get_key(batch, "labels", path)
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {data.dtype} {data.shape}")
        labs = np.asarray(labs, dtype=np.int64)
        if len(labs) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(labs)} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(labs)
        have += len(data)
    img = np.concatenate(images)
    lab = np.concatenate(labels)
    if limit is not None:
        img, lab = img[:limit], lab[:limit]
    classes = list(CIFAR10_CLASSES)
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            names = _get_key(_safe_unpickle_file(meta), "label_names", meta)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            if len(names) == 10:
                classes = names
        except DataError:
            pass
    return img, lab, classes


def _get_key(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict, got {type(d).__name__}")
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise DataError(f"{path} is not a CIFAR-10 batch: key {key!r} missing")


class _NDArrayType:
    """Stands in for ``numpy.ndarray`` inside a CIFAR pickle."""


class _DType:
    """Stands in for ``numpy.dtype``: records the type code and byte order only."""

    _ALLOWED = re.compile(r"^[uifb][1248]$")

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        spec = spec.decode("ascii") if isinstance(spec, bytes) else spec
        if not isinstance(spec, str) or not self._ALLOWED.match(spec):
            raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r}: only plain numeric dtypes are allowed")
        self.spec = spec
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2:
            bo = state[1].decode() if isinstance(state[1], bytes) else state[1]
            if bo in ("<", ">", "|", "="):
                self.byteorder = bo

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt  # type: ignore[arg-type]  # "<" or ">"


class _ArrayStub:
    """Receives the state of a pickled ndarray and turns it into a real one with ``np.frombuffer``."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("unexpected ndarray state in pickle")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("unexpected ndarray dtype in pickle")
        if isinstance(raw, str):
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("ndarray data in pickle is not raw bytes (object arrays are refused)")
        self.array = np.frombuffer(raw, dtype=dtype.to_numpy()).reshape(
            tuple(int(s) for s in shape), order="F" if fortran else "C"
        )


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _NDArrayType:
        raise pickle.UnpicklingError("refusing to reconstruct anything but a plain numpy array")
    return _ArrayStub()


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("unexpected dtype in pickle")
    arr = np.frombuffer(bytes(buf), dtype=dtype.to_numpy())
    return arr.reshape(tuple(int(s) for s in shape), order="F" if order == "F" else "C")


def _codecs_encode(obj: Any, encoding: Any = "utf-8") -> bytes:
    if isinstance(obj, str) and encoding in ("latin1", "latin-1"):
        return obj.encode("latin1")
    raise pickle.UnpicklingError("refusing _codecs.encode with unexpected arguments")


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DType,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("_codecs", "encode"): _codecs_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: the few numpy names a CIFAR batch needs map to local stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only plain dicts, lists and numeric numpy arrays are "
                "accepted from CIFAR-10 batch files"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _resolve_stubs(obj: Any) -> Any:
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise pickle.UnpicklingError("incomplete ndarray in pickle")
        return obj.array
    if isinstance(obj, dict):
        return {k: _resolve_stubs(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve_stubs(v) for v in obj]
    return obj


def _safe_unpickle_file(path: Path) -> Any:
    """Read a CIFAR-style pickle without importing or calling anything outside a fixed safe list."""
    try:
        with path.open("rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch file that can be read safely: {e}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return _resolve_stubs(obj)
