"""Shared machinery of the static pages: the Jinja2 environment, static assets and the output folder."""

from __future__ import annotations

import contextlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any, Iterator

from .._errors import ConfigError
from .._io import atomic_dir

MARKER = ".cladec-site"


def environment():
    """The Jinja2 environment for the package's templates (autoescaped, strict about undefined names)."""
    try:
        import jinja2
    except ImportError:  # pragma: no cover - jinja2 is a declared extra
        raise ConfigError("the HTML pages need jinja2: install it with  pip install 'cladec[report]'") from None
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("cladec.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    return env


def script_json(obj: Any) -> str:
    """JSON that is safe inside ``<script type="application/json">`` (no ``</`` sequences)."""
    from markupsafe import Markup

    text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    text = text.replace("</", "<\\/").replace("<!--", "<\\!--").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
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


@contextlib.contextmanager
def site_dir(out: str | os.PathLike, kind: str, protect: list[Path]) -> Iterator[Path]:
    """Yield a temporary folder that replaces ``out`` when the block succeeds.

    ``out`` may be missing, empty, or a page that cladec made before (it then is replaced); anything
    else is refused so that no user folder is ever overwritten.

    Args:
        out: The output folder.
        kind: ``"report"`` or ``"study"`` (written to the marker file).
        protect: Folders (the inputs) that must not lie inside ``out``.
    """
    out = Path(out)
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"--out {out} is a file; give a folder for the page (it is created if missing)")
        entries = [p for p in out.iterdir()]
        if entries and not (out / MARKER).is_file():
            raise ConfigError(
                f"--out {out} is a non-empty folder that cladec did not make; give a new or empty folder "
                "(a folder made by an earlier `cladec report`/`cladec study` is replaced)"
            )
    for p in protect:
        if _is_within(p, out):
            raise ConfigError(f"--out {out} contains the input {p}; write the page to another folder")
    with atomic_dir(out) as tmp:
        (tmp / MARKER).write_text(json.dumps({"kind": kind}) + "\n")
        yield tmp

