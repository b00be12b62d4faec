"""Downloads with checksums, and safe extraction of tar archives."""

from __future__ import annotations

import hashlib
import os
import tarfile
import urllib.error
import urllib.request
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from .._errors import DataError
from .._io import atomic_path

__all__ = ["check_md5"]


def _md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path: str | os.PathLike, md5: str) -> bool:
    """Whether a file exists and has the given MD5 checksum (as torchvision checks its downloads).

    Args:
        path: file to check.
        md5: expected hex digest (case-insensitive).

    Returns:
        ``True`` if the file exists and matches, else ``False``.

    Examples:
        >>> _ = Path("hello.txt").write_bytes(b"hello")
        >>> check_md5("hello.txt", "5D41402ABC4B2A76B9719D911017C592"), check_md5("missing.txt", "5d41402a")
        (True, False)
    """
    path = Path(path)
    if not path.is_file():
        return False
    return _md5_of(path) == md5.lower()


def download_url(url: str, dest: Path, md5: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically, verifying the MD5 on the fly."""
    if check_md5(dest, md5):
        return
    req = urllib.request.Request(url, headers={"User-Agent": "cladec"})
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, atomic_path(dest) as tmp:
            with tmp.open("wb") as out:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != md5:
                raise DataError(
                    f"download of {url} is corrupt: MD5 {h.hexdigest()} but expected {md5}; try again later"
                )
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DataError(
            f"could not download {url}: {e}. Check the internet connection, or download the file by hand "
            f"to {dest} (or set CLADEC_DATA to a folder holding the data)"
        ) from None


def download_first(urls: Iterable[str], dest: Path, md5: str) -> None:
    errors = []
    for url in urls:
        try:
            download_url(url, dest, md5)
            return
        except DataError as e:
            errors.append(str(e))
    raise DataError("all mirrors failed:\n" + "\n".join(errors))


def safe_extract_tar(tar_path: Path, dest: Path, member_prefix: str) -> None:
    """Extract regular files under ``member_prefix`` only; refuses absolute paths, '..' and links."""
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            for m in tf.getmembers():
                name = m.name
                parts = PurePosixPath(name).parts
                if not name.startswith(member_prefix) or name.startswith("/") or ".." in parts:
                    continue
                if not m.isfile():
                    continue
                src = tf.extractfile(m)
                if src is None:
                    continue
                with src, atomic_path(dest.joinpath(*parts)) as tmp:
                    tmp.write_bytes(src.read())
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot extract {tar_path}: {e}; delete it and download it again") from None
