"""Atomic file writes and safe loading (no pickle).

Under ``torch.distributed`` with several ranks only rank 0 writes: on the other ranks :func:`atomic_path` and
:func:`atomic_dir` hand out a private temporary place that is discarded (so no two processes write one file,
and code that writes needs no rank checks of its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from ._errors import SaveFormatError
from ._schema import validate


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    Nothing half-written is ever left at ``path``: on an exception the temporary file is removed; the
    temporary file's data is flushed to disk (fsync) before the rename, so a crash cannot leave an empty file,
    and the directory after it, so the rename itself is durable.
    """
    path = Path(path)
    if not_rank_0():
        with tempfile.TemporaryDirectory(prefix="cladec-rank-") as scratch:
            yield Path(scratch) / path.name
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        _fsync(tmp_path)
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes the file private; give it the usual mode
        os.replace(tmp_path, path)
        _fsync(path.parent)  # the rename itself reaches the disk
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        raise


def not_rank_0() -> bool:
    """Whether this process is a rank other than 0 of a ``torch.distributed`` group of several (which never writes).

    Examples:
        >>> not_rank_0()  # a plain process
        False
    """
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and dist.get_rank() != 0


def _host() -> str:
    import socket

    return "".join(c for c in socket.gethostname() if c.isalnum())[:16] or "host"


def _temp_prefix(path: Path) -> str:
    """Temporary names next to ``path`` carry the writer's host and process id, so that a later writer can tell
    the leftovers of a killed one (``.<name>.<host>-<pid>.<random>.tmp``)."""
    return f".{path.name}.{_host()}-{os.getpid()}."


def pid_running(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (True when that cannot be told safely)."""
    if os.name == "nt" or pid <= 0:  # on Windows os.kill would terminate the process, not probe it
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists (another user's) or cannot tell
    return True


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove what a killed writer left next to ``path``: its ``.tmp``/``.old`` files and folders.

    Only leftovers of processes on this host that no longer run are removed (a writer on another host of a
    shared file system, or one still running, keeps its temporary files).

    Returns:
        The removed paths.
    """
    import re
    import shutil

    path = Path(path)
    pat = re.compile(re.escape(f".{path.name}.{_host()}-") + r"(\d+)\.[^/]*\.(tmp|old)$")
    removed: list[Path] = []
    with contextlib.suppress(OSError):
        for p in path.parent.iterdir():
            m = pat.match(p.name)
            if m is None or pid_running(int(m.group(1))):
                continue
            with contextlib.suppress(OSError):
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
                removed.append(p)
    return removed


def file_sha256(path: str | os.PathLike) -> str | None:
    """The SHA-256 of a file's content (hex), read in chunks; None if there is no such file."""
    import hashlib

    path = Path(path)
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    """Flush a written file's data, or a directory's entries, to disk (best effort: not every file system
    or platform supports it)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def _json_default(o: Any) -> Any:
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def read_json(path: str | os.PathLike, what: str = "file", schema: Any = None, hint: str = "") -> dict:
    """Read a JSON object, raising :class:`SaveFormatError` with a clear message if it is not one.

    With ``schema`` (one of :mod:`cladec._schema`'s) the object is also checked against it: a missing or
    malformed field is refused naming the file and the field (``hint``: what to do about it).
    """
    path = Path(path)
    if not path.is_file():
        raise SaveFormatError(f"{what} not found: {path}")
    try:
        obj = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SaveFormatError(f"{path} is not a valid JSON {what}: {e}") from None
    except RecursionError:  # "[[[[..." 100,000 deep: the decoder's recursion limit
        raise SaveFormatError(
            f"{path} is not a valid {what}: its JSON is nested too deeply to read (a damaged "
            "or hostile file; cladec writes a few levels)"
        ) from None
    if not isinstance(obj, dict):
        raise SaveFormatError(f"{path} is not a {what}: expected a JSON object")
    if schema is not None:
        validate(obj, schema, path, hint)
    return obj


def check_inside(path: str | os.PathLike, folder: str | os.PathLike, what: str) -> Path:
    """Refuse ``path`` (a file or folder that is part of the save ``folder``) when it is a symbolic link, or
    leads through one, to somewhere outside ``folder``: cladec writes every part of a save into the save itself,
    so a part that points out of it was put there by hand (e.g. to make cladec read another file).

    Returns:
        ``path``.

    Raises:
        SaveFormatError: naming the part, where it leads and the rule.
    """
    path, folder = Path(path), Path(folder)
    real = path.resolve()
    if not real.is_relative_to(folder.resolve()):
        raise SaveFormatError(
            f"{path} ({what}) leads outside its folder {folder}, to {real}: the files of a cladec save must lie "
            "in the save itself (symbolic links out of it are refused); copy the file in instead of linking it"
        )
    return path


def save_tensors(path: str | os.PathLike, tensors: Mapping[str, torch.Tensor]) -> None:
    """Save a flat dict of tensors as safetensors, atomically (contiguous CPU copies)."""
    from safetensors.torch import save_file

    flat = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(flat, str(tmp))


def load_tensors(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Load a safetensors file (never unpickles)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise SaveFormatError(f"weights file not found: {path}")
    try:
        return load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        if isinstance(e, RuntimeError) and "out of memory" in str(e).lower():
            raise
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SaveFormatError(f"{path} is not a valid safetensors file (truncated or damaged?): {first}") from None


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load weights from ``.safetensors`` or a PyTorch state dict with ``weights_only=True``."""
    path = Path(path)
    if not path.is_file():
        raise SaveFormatError(f"weights file not found: {path}")
    if path.suffix == ".safetensors":
        return load_tensors(path)
    import pickle

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message ends in advice to load it with weights_only=False, which would run the file's code
        raise SaveFormatError(
            f"{path} is a pickle that holds more than tensors (Python objects or code), and cladec never "
            "unpickles such files: loading it could run code from the file. Give the weights as a .safetensors "
            "file, or as a plain state_dict saved with torch.save(model.state_dict(), path) (one that loads with "
            "torch.load(path, weights_only=True))"
        ) from None
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        reason = f": {first}" if "weights_only" not in first else ""
        raise SaveFormatError(
            f"{path} could not be read as a PyTorch state dict (loaded with weights_only=True, never as a full "
            f"pickle){reason}; give a .safetensors file or a state_dict saved with torch.save(model.state_dict(), "
            "path)"
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SaveFormatError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return obj


def check_replaceable(
    path: str | os.PathLike, marker: str | None = None, what: str = "cladec output", *, in_place: bool = False
) -> None:
    """Raise :class:`SaveFormatError` unless ``path`` is missing, an empty folder, or (with ``marker``) a
    folder holding ``marker`` — one that :func:`atomic_dir` may replace. Call it before long work.

    With ``in_place`` (output written file by file into the folder, which is never replaced) the folder may
    be the current directory or hold it."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SaveFormatError(f"{path} exists and is not a directory")
    if not in_place and path.is_dir() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise SaveFormatError(
            f"{path} is the current directory (or holds it) and cannot be replaced; "
            "give a folder inside it, e.g. runs/out"
        )
    if marker is not None and path.is_dir() and _has_files(path) and not (path / marker).is_file():
        raise SaveFormatError(
            f"{path} is a non-empty folder that is not a {what} (it has no {marker}); give a new or empty "
            f"folder (an earlier {what} there is replaced)"
        )


_OS_CLUTTER = {".DS_Store", "Thumbs.db", "desktop.ini"}


def _has_files(path: Path) -> bool:
    """Whether a folder holds anything besides files the operating system leaves around."""
    return any(p.name not in _OS_CLUTTER for p in path.iterdir())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, marker: str | None = None, what: str = "cladec output") -> Iterator[Path]:
    """Yield a fresh temporary directory next to ``path`` and move it onto ``path`` on success.

    An existing ``path`` is replaced only once the new directory is complete; on an exception the
    temporary directory is removed and ``path`` is left as it was. With ``marker`` (a file name the
    directory holds when cladec wrote it, e.g. ``"run.json"``) an existing non-empty directory without
    that file is refused (:class:`SaveFormatError`) instead of replaced, so no user folder is deleted.
    """
    import shutil

    path = Path(path)
    if not_rank_0():
        with tempfile.TemporaryDirectory(prefix="cladec-rank-") as scratch:
            yield Path(scratch)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    check_replaceable(path, marker, what)
    remove_stale_temporaries(path)
    tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for f in [*tmp.rglob("*"), tmp]:  # files, then the directories that name them
            _fsync(f)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes the directory private; give it the usual mode
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=_temp_prefix(path), suffix=".old", dir=path.parent))
            os.replace(path, old / "d")
            os.replace(tmp, path)
            _fsync(path.parent)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
            _fsync(path.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_json_obj(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when the file cannot be read, is not JSON or not an object (for
    readers that skip what they cannot use, such as the report; :func:`read_json` refuses instead)."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return obj if isinstance(obj, dict) else None
