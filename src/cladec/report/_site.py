"""Shared machinery of the static pages: the Jinja2 environment, static assets and the output folder."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import time
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._io import atomic_dir, pid_running
from .._tensors import device as checked

MARKER = ".cladec-site"
#: The kinds of page (recorded in the marker file); a page of one kind never replaces one of another.
KINDS = ("report", "study")
#: Written into a page's temporary folder while it is built (removed before the folder becomes the page).
BUILD_FILE = ".cladec-build"
#: Leftovers without a build record are removed only when untouched this long (seconds).
STALE_TMP_S = 24 * 3600
STALE_OLD_S = 600


def environment():
    """The Jinja2 environment for the package's templates (autoescaped, strict about undefined names)."""
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 is a dependency of cladec
        raise ConfigError(
            "the HTML pages need jinja2 (a dependency of cladec, missing here): pip install 'jinja2>=3.1'"
        ) from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cladec.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` and still valid JSON.

    ``<``, ``>`` and ``&`` are written as ``\\u003c``, ``\\u003e`` and ``\\u0026`` (and U+2028/U+2029 escaped), so
    no text in the data (``</script>``, ``<!--``) can end or disturb the script element, and ``JSON.parse``
    returns the original strings.

    Args:
        obj: A JSON-serialisable object (no NaN or infinity).

    Returns:
        The JSON text, marked safe for the autoescaping templates.

    Examples:
        >>> str(script_json({"c": "<!--</script>"}))
        '{"c":"\\\\u003c!--\\\\u003c/script\\\\u003e"}'
    """
    from markupsafe import Markup

    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(ch, esc)
    return Markup(text)


def copy_static(site: Path, names: tuple[str, ...]) -> None:
    """Copy the package's static files ``names`` into ``site/static``."""
    base = resources.files("cladec.report").joinpath("static")
    dest = site / "static"
    dest.mkdir(parents=True, exist_ok=True)
    for name in names:
        (dest / name).write_bytes(base.joinpath(name).read_bytes())


def _is_within(child: Path, parent: Path) -> bool:
    try:
        child.resolve().relative_to(parent.resolve())
        return True
    except ValueError:
        return False


def _marker_kind(folder: Path) -> str | None:
    """The page kind recorded in ``folder``'s marker file (None if it has none or it is unreadable)."""
    try:
        obj = json.loads((folder / MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    kind = obj.get("kind") if isinstance(obj, dict) else None
    return kind if kind in KINDS else None


def _stale(folder: Path) -> bool:
    """Whether ``folder`` (a ``.NAME.*.tmp`` / ``.NAME.*.old`` sibling of an output folder) is what a page
    build of cladec left behind when it was killed: it must carry the site marker, and its build must be over."""
    now = time.time()
    if folder.name.endswith(".old"):  # atomic_dir's swap: the previous page moved to OLD/d, removed right after
        site = folder / "d"
        return _marker_kind(site) is not None and now - folder.stat().st_mtime > STALE_OLD_S
    if _marker_kind(folder) is None:
        return False
    try:
        info = json.loads((folder / BUILD_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        info = None
    if isinstance(info, dict) and isinstance(info.get("pid"), int) and isinstance(info.get("host"), str):
        # a build on this machine whose process is gone; one on another machine (shared disk) is left alone
        return info["host"] == socket.gethostname() and not pid_running(info["pid"])
    # no build record (an older cladec, or a build in its last step): stale only when long untouched
    return now - folder.stat().st_mtime > STALE_TMP_S


def remove_stale_builds(out: Path) -> list[Path]:
    """Remove the temporary folders that killed page builds left next to ``out``.

    Only ``.{out.name}.*.tmp`` and ``.{out.name}.*.old`` folders that hold the site marker (so cladec made
    them) and whose build is over (its process no longer runs) are removed; anything else is left alone.

    Args:
        out: The output folder of a page.

    Returns:
        The folders removed.

    Examples:
        >>> Path(".site.k2v1x8ab.tmp").mkdir()  # without the site marker: not made by cladec, left alone
        >>> remove_stale_builds(Path("site"))
        []
        >>> Path(".site.k2v1x8ab.tmp").is_dir()
        True
    """
    out = Path(out)
    removed: list[Path] = []
    if not out.parent.is_dir():
        return removed
    for p in sorted(out.parent.glob(f".{glob.escape(out.name)}.*")):
        if not (p.name.endswith(".tmp") or p.name.endswith(".old")) or p.is_symlink() or not p.is_dir():
            continue
        try:
            if _stale(p):
                shutil.rmtree(p)
                removed.append(p)
        except OSError:
            continue  # gone meanwhile, or not ours to remove
    return removed


def check_device(device: str | None) -> str:
    """Check a device name for the reconstructions of a page.

    Args:
        device: ``None`` (the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.

    Returns:
        The device name to use.

    Raises:
        ConfigError: ``device`` is not a device, or it is not available on this machine.

    Examples:
        >>> check_device(None)
        'cpu'
    """

    return str(checked(device, "--device", default="cpu"))


@contextlib.contextmanager
def site_dir(out: str | os.PathLike, kind: str, protect: list[Path]) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out`` when the block succeeds.

    ``out`` may be missing, empty, or a page of the same ``kind`` that cladec made before (it then is
    replaced); anything else, a page of the other kind included, is refused so that no folder is ever
    overwritten by surprise. Temporary folders of earlier, killed builds of ``out`` are removed first
    (:func:`remove_stale_builds`).

    Args:
        out: The output folder.
        kind: ``"report"`` or ``"study"`` (written to the marker file).
        protect: Folders (the inputs) that must not lie inside ``out``.

    Returns:
        A context manager yielding the temporary folder to write the page into.

    Raises:
        ConfigError: ``out`` is a file, a folder cladec did not make, a page of another kind, or holds an input.

    Examples:
        >>> with site_dir("site", "report", protect=[]) as tmp:
        ...     _ = (tmp / "index.html").write_text("<!doctype html>")
        >>> sorted(p.name for p in Path("site").iterdir())
        ['.cladec-site', 'index.html']
    """
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}")
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder for the page (it is created if missing)")
        entries = list(out.iterdir())
        if entries and not (out / MARKER).is_file():
            raise ConfigError(
                f"--out {out} is a non-empty folder that cladec did not make; give a new or empty folder "
                "(a folder made by an earlier `cladec report`/`cladec study` is replaced)"
            )
        if entries:
            old = _marker_kind(out)
            if old != kind:
                what = f"a `cladec {old}` page" if old else "a cladec page of unknown kind"
                raise ConfigError(
                    f"--out {out} holds {what}, which a `cladec {kind}` page would replace; give another folder "
                    "(or delete that one first)"
                )
    for p in protect:
        if _is_within(p, out):
            raise ConfigError(f"--out {out} contains the input {p}; write the page to another folder")
    remove_stale_builds(out)
    with atomic_dir(out) as tmp:
        # who builds this folder: lets a later build tell a killed build's leftovers from a running one
        (tmp / BUILD_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname()}) + "\n")
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        yield tmp
        (tmp / BUILD_FILE).unlink()
