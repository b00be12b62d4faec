"""Recognise what the user pointed ``cladec report`` at, and find the parts to show.

Accepted sources (see docs/DESIGN.md for the formats):

* a **run** directory (``run.json``, ``format: cladec-run``);
* an **evaluation** directory (``metrics.json``, ``format: cladec-eval``), whose run is found through
  ``metrics.json["run"]`` (or ``run_dir``) or as its parent directory;
* a **sweep** directory (``sweep.json``, ``format: cladec-sweep``) with ``cells/<cell>/`` run directories;
* a **demo** directory (``runs/<layer>/`` run directories, plus ``eval/``, ``summary.txt`` …).

Evaluation (``metrics.json``) and saliency comparison (``results.json``, ``format: cladec-saliency``)
directories inside the source are found by a shallow search.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import SaveFormatError
from .._io import read_json_obj

EXPECTED = (
    "expected one of: a run directory (run.json, made by `cladec fit`), an evaluation directory "
    "(metrics.json, made by `cladec evaluate`), a sweep directory (sweep.json, made by `cladec sweep`) "
    "or a demo directory (runs/<layer>/run.json, made by `cladec demo`)"
)
OK_STATUS = {None, "", "done", "ok", "complete", "completed", "finished", "success", "succeeded", "skipped-existing"}


@dataclass
class RunRef:
    """A run directory to show in the gallery (not loaded yet)."""

    path: Path
    config: dict[str, Any]
    eval_dir: Path | None = None
    #: A RefAE save to use when the run has none of its own (sweep cells share one RefAE per layer and seed).
    refae_from: Path | None = None

    @property
    def layer(self) -> str:
        return str(self.config.get("layer", "?"))

    @property
    def alpha(self) -> float:
        try:
            return float(self.config.get("alpha", 0.0))
        except (TypeError, ValueError):
            return 0.0

    @property
    def seed(self) -> int:
        try:
            return int(self.config.get("seed", 0) or 0)
        except (TypeError, ValueError):
            return 0


@dataclass
class Source:
    """Everything found in a report source directory."""

    kind: str
    path: Path
    runs: list[RunRef] = field(default_factory=list)
    evals: list[Path] = field(default_factory=list)
    saliency: list[Path] = field(default_factory=list)
    sweep: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    summary_text: str | None = None


def _require(path: Path, fmt: str, what: str) -> dict[str, Any]:
    obj = read_json_obj(path)
    if obj is None:
        raise SaveFormatError(
            f"{path} is not a valid JSON object, so {path.parent} is not a readable {what}; {EXPECTED}"
        )
    if obj.get("format") != fmt:
        raise SaveFormatError(
            f"{path} has format {obj.get('format')!r}, expected {fmt!r}: {path.parent} is not a {what}; {EXPECTED}"
        )
    return obj


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """Read and check ``run_dir/run.json``; raise :class:`SaveFormatError` if it is not a run."""
    cfg = _require(run_dir / "run.json", "cladec-run", "cladec run directory")
    missing = [k for k in ("layer", "alpha", "dataset", "classifier") if k not in cfg]
    if missing:
        raise SaveFormatError(
            f"{run_dir / 'run.json'} is incomplete: it lacks {', '.join(missing)} (re-run `cladec fit`)"
        )
    if not (run_dir / "cladec").is_dir():
        raise SaveFormatError(
            f"{run_dir} is an incomplete run directory: its cladec/ folder is missing (re-run `cladec fit`)"
        )
    return cfg


def _is_fmt(path: Path, fmt: str) -> bool:
    obj = read_json_obj(path) if path.is_file() else None
    return obj is not None and obj.get("format") == fmt


def find_dirs(root: Path, marker: str, fmt: str, *, exclude: list[Path], max_depth: int = 3) -> list[Path]:
    """Directories under ``root`` (itself included) holding ``marker`` with JSON ``format == fmt``."""
    root = root.resolve()
    ex = {p.resolve() for p in exclude}
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        depth = len(d.relative_to(root).parts)
        dirnames[:] = sorted(n for n in dirnames if not n.startswith(".") and (d / n).resolve() not in ex)
        if depth >= max_depth:
            dirnames[:] = []
        if marker in filenames and _is_fmt(d / marker, fmt):
            found.append(d)
    return found


def _eval_of_run(run_dir: Path) -> Path | None:
    e = run_dir / "eval"
    return e if _is_fmt(e / "metrics.json", "cladec-eval") else None


def _run_of_eval(eval_dir: Path, metrics: dict[str, Any]) -> Path | None:
    for key in ("run", "run_dir", "run_path"):
        v = metrics.get(key)
        if isinstance(v, dict):
            v = v.get("path") or v.get("dir")
        if isinstance(v, str) and v:
            p = Path(v)
            for cand in [p] if p.is_absolute() else [eval_dir / p, Path.cwd() / p]:
                if (cand / "run.json").is_file():
                    return cand
    if (eval_dir.parent / "run.json").is_file():
        return eval_dir.parent
    return None


def _shared_refae(run_dir: Path, ref: Any, bases: list[Path]) -> Path | None:
    """The RefAE save of a sweep's reference cell, for a run that was fitted without its own RefAE."""
    if (run_dir / "refae").is_dir() or not isinstance(ref, str) or not ref or ref in ("given", "run"):
        return None
    p = Path(ref)
    for cand in [p] if p.is_absolute() else [b / p for b in bases]:
        if (cand / "refae" / "cladec.json").is_file():
            return cand / "refae"
        if cand.name == "refae" and (cand / "cladec.json").is_file():
            return cand
    return None


def _run_shared_refae(run_dir: Path, evals: list[Path]) -> Path | None:
    """The shared RefAE of a run fitted without its own (a sweep cell that is not its layer's reference cell).

    Found as its evaluation records it (``metrics.json["refae_source"]``), else as the sweep two levels up
    (``SWEEP/cells/CELL``) records it for the cell, so that a cell shows the same RefAE however it is reached.
    """
    if (run_dir / "refae").is_dir():
        return None
    for e in evals:
        m = read_json_obj(e / "metrics.json") or {}
        found = _shared_refae(run_dir, m.get("refae_source"), [run_dir.parent.parent, run_dir.parent, Path.cwd()])
        if found is not None:
            return found
    sweep_dir = run_dir.parent.parent
    sweep = read_json_obj(sweep_dir / "sweep.json") if (sweep_dir / "sweep.json").is_file() else None
    if sweep is None or sweep.get("format") != "cladec-sweep" or not isinstance(sweep.get("cells"), list):
        return None
    for c in sweep["cells"]:
        run = c.get("run") if isinstance(c, dict) else None
        if isinstance(run, str) and run:
            p = Path(run) if Path(run).is_absolute() else sweep_dir / run
            try:
                same = p.resolve() == run_dir.resolve()
            except OSError:
                same = False
            if same:
                return _shared_refae(run_dir, c.get("refae"), [sweep_dir])
    return None


def _sweep_runs(sweep_dir: Path, sweep: dict[str, Any], notes: list[str]) -> list[RunRef]:
    """The usable cells of a sweep, for the gallery: one seed (the smallest), every layer and α."""
    cells = sweep.get("cells")
    refs: list[RunRef] = []
    if isinstance(cells, list) and cells:
        bad = 0
        for c in cells:
            if not isinstance(c, dict):
                bad += 1
                continue
            status = c.get("status")
            run = c.get("run")
            if isinstance(run, dict):
                run = run.get("path") or run.get("dir")
            if status not in OK_STATUS or not isinstance(run, str):
                bad += 1
                continue
            p = Path(run)
            if not p.is_absolute():
                p = sweep_dir / p
            if not (p / "run.json").is_file():
                bad += 1
                continue
            try:
                cfg = read_run_config(p)
            except SaveFormatError:
                bad += 1
                continue
            ev = c.get("eval")
            eval_dir = None
            if isinstance(ev, str) and ev:
                ep = Path(ev) if Path(ev).is_absolute() else sweep_dir / ev
                eval_dir = ep if (ep / "metrics.json").is_file() else None
            refs.append(RunRef(p, cfg, eval_dir or _eval_of_run(p), _shared_refae(p, c.get("refae"), [sweep_dir])))
        if bad:
            notes.append(
                f"{bad} of {len(cells)} sweep cells are not finished or have no run directory; they are left out."
            )
    else:
        for d in sorted((sweep_dir / "cells").glob("*/run.json")):
            try:
                refs.append(RunRef(d.parent, read_run_config(d.parent), _eval_of_run(d.parent)))
            except SaveFormatError:
                notes.append(f"{d.parent.name}: not a readable run directory; left out.")
    if not refs:
        return refs
    seeds = sorted({r.seed for r in refs})
    if len(seeds) > 1:
        notes.append(f"The sweep has seeds {seeds}; the gallery shows seed {seeds[0]}.")
    return [r for r in refs if r.seed == seeds[0]]


def detect_source(path: str | os.PathLike, *, exclude: list[Path] | None = None) -> Source:
    """Recognise a report source directory and collect its runs, evaluations and saliency comparisons.

    Args:
        path: A run, evaluation, sweep or demo directory.
        exclude: Directories not to search (the report's own output folder).

    Returns:
        A :class:`Source`.

    Raises:
        SaveFormatError: ``path`` is none of the accepted directories (the message lists them).

    Examples:
        >>> detect_source(run_dir).kind  # run_dir: a run directory (cladec fit)
        'run'
        >>> detect_source(sweep_dir).kind
        'sweep'
    """
    src = Path(path)
    if not src.exists():
        raise SaveFormatError(f"{src} does not exist; {EXPECTED}")
    if not src.is_dir():
        raise SaveFormatError(f"{src} is a file, not a directory; {EXPECTED}")
    exclude = list(exclude or [])
    notes: list[str] = []

    if (src / "sweep.json").is_file():
        sweep = _require(src / "sweep.json", "cladec-sweep", "cladec sweep directory")
        runs = _sweep_runs(src, sweep, notes)
        if not runs:
            notes.append("No finished sweep cell has a run directory: the gallery is left out.")
        sal = find_dirs(src, "results.json", "cladec-saliency", exclude=exclude + [src / "cells"], max_depth=2)
        return Source("sweep", src, runs=runs, evals=[], saliency=sal, sweep=sweep, notes=notes)

    if (src / "run.json").is_file():
        cfg = read_run_config(src)
        evals = find_dirs(src, "metrics.json", "cladec-eval", exclude=exclude, max_depth=2)
        sal = find_dirs(src, "results.json", "cladec-saliency", exclude=exclude, max_depth=2)
        return Source(
            "run",
            src,
            runs=[RunRef(src, cfg, evals[0] if evals else None, _run_shared_refae(src, evals))],
            evals=evals,
            saliency=sal,
            notes=notes,
        )

    if (src / "metrics.json").is_file():
        metrics = _require(src / "metrics.json", "cladec-eval", "cladec evaluation directory")
        run_dir = _run_of_eval(src, metrics)
        runs = []
        sal = find_dirs(src, "results.json", "cladec-saliency", exclude=exclude, max_depth=2)
        if run_dir is None:
            notes.append(
                "The run this evaluation belongs to was not found (metrics.json names no existing run and "
                "the parent folder is not a run): the gallery is left out."
            )
        else:
            try:
                runs = [
                    RunRef(
                        run_dir,
                        read_run_config(run_dir),
                        src,
                        _shared_refae(
                            run_dir, metrics.get("refae_source"), [run_dir.parent.parent, run_dir.parent, Path.cwd()]
                        ),
                    )
                ]
            except SaveFormatError as e:
                notes.append(f"The evaluated run could not be read ({e}): the gallery is left out.")
            if runs:
                for s in find_dirs(run_dir, "results.json", "cladec-saliency", exclude=exclude + [src], max_depth=2):
                    if s not in sal:
                        sal.append(s)
        return Source("eval", src, runs=runs, evals=[src], saliency=sal, notes=notes)

    runs_dir = src / "runs"
    if runs_dir.is_dir():
        refs = []
        for d in sorted(p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if not (d / "run.json").is_file():
                continue
            try:
                ev = _eval_of_run(d)
                refs.append(RunRef(d, read_run_config(d), ev, _run_shared_refae(d, [ev] if ev else [])))
            except SaveFormatError as e:
                notes.append(f"runs/{d.name} is left out: {e}")
        if refs or notes:
            evals = find_dirs(src, "metrics.json", "cladec-eval", exclude=exclude, max_depth=3)
            sal = find_dirs(src, "results.json", "cladec-saliency", exclude=exclude, max_depth=3)
            text = None
            for name in ("summary.txt",):
                f = src / name
                if f.is_file():
                    try:
                        text = f.read_text(encoding="utf-8")[:20000]
                    except (OSError, UnicodeDecodeError):
                        text = None
            if not refs:
                notes.append("No run in runs/ could be read: the gallery is left out.")
            return Source("demo", src, runs=refs, evals=evals, saliency=sal, notes=notes, summary_text=text)

    present = sorted(p.name for p in src.iterdir())[:6]
    raise SaveFormatError(
        f"{src} is not a cladec run, evaluation, sweep or demo directory (it holds: "
        f"{', '.join(present) if present else 'nothing'}); {EXPECTED}"
    )
