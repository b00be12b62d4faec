"""Tables and figures of evaluation, sweep and saliency directories, ready for the templates."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote

from .._io import read_json_obj

MAX_ROWS = 400


def fmt_value(v: Any) -> str:
    """Format a table cell: floats with 4 significant digits, the rest as text."""
    if isinstance(v, bool) or v is None:
        return "" if v is None else str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3e}"
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return ", ".join(fmt_value(x) for x in v)
    return str(v)


def _num(s: str) -> float | None:
    try:
        return float(s)
    except (TypeError, ValueError):
        return None


def csv_table(path: Path, title: str | None = None) -> dict[str, Any] | None:
    """Read a CSV file into ``{title, header, rows, numeric, truncated}``; None if unreadable or empty."""
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if len(rows) < 2:
        return None
    header, body = rows[0], rows[1:]
    truncated = len(body) > MAX_ROWS
    body = body[:MAX_ROWS]
    width = len(header)
    body = [(r + [""] * width)[:width] for r in body]
    keep = [j for j in range(width) if any(r[j].strip() for r in body)]
    header = [header[j] for j in keep]
    body = [[r[j] for j in keep] for r in body]
    width = len(header)
    numeric = []
    for j in range(width):
        col = [r[j] for r in body if j < len(r) and r[j] != ""]
        numeric.append(bool(col) and all(_num(c) is not None for c in col))
    out_rows = []
    for r in body:
        r = (r + [""] * width)[:width]
        out_rows.append(
            [
                fmt_value(_num(c)) if numeric[j] and c != "" and not c.lstrip("-").isdigit() else c
                for j, c in enumerate(r)
            ]
        )
    return {
        "title": title or path.name,
        "header": header,
        "rows": out_rows,
        "numeric": numeric,
        "truncated": truncated,
        "file": path.name,
        "n_rows": len(out_rows),
        "collapsed": False,
    }


def dict_table(obj: dict[str, Any], title: str, skip: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """Flatten the scalar entries of a (nested) dict into a two-column table."""
    rows: list[list[str]] = []

    def walk(o: Any, prefix: str, depth: int) -> None:
        if len(rows) >= MAX_ROWS:
            return
        if isinstance(o, dict):
            if depth > 3:
                return
            for k, v in o.items():
                if depth == 0 and k in skip:
                    continue
                walk(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)
        elif isinstance(o, list):
            if o and len(o) <= 12 and all(isinstance(x, (int, float, str, bool)) or x is None for x in o):
                rows.append([prefix, fmt_value(o)])
        elif o is not None and o != "":
            rows.append([prefix, fmt_value(o)])

    walk(obj, "", 0)
    if not rows:
        return None
    numeric = all(_num(v) is not None for _, v in rows)
    return {
        "title": title,
        "header": ["quantity", "value"],
        "rows": rows,
        "numeric": [False, numeric],
        "truncated": len(rows) >= MAX_ROWS,
        "file": None,
        "n_rows": len(rows),
        "collapsed": False,
    }


def copy_figures(src_dir: Path, site: Path, dest_rel: str, first: tuple[str, ...] = ()) -> list[dict[str, str]]:
    """Copy the ``*.png`` files of ``src_dir`` into ``site/dest_rel``; return ``[{src, caption, name}]``."""
    pngs = sorted(
        src_dir.glob("*.png"),
        key=lambda p: (p.name not in first, first.index(p.name) if p.name in first else 0, p.name),
    )
    figs = []
    for p in pngs:
        if not p.is_file():
            continue
        dest = site / dest_rel / p.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(p, dest)
        # a relative URL: file names such as "fig #1.png" or "q?.png" are percent-encoded
        figs.append({"src": f"{quote(dest_rel)}/{quote(p.name)}", "caption": _caption(p.stem), "name": p.name})
    return figs


def _caption(stem: str) -> str:
    known = {
        "tradeoff": "Trade-off between reconstruction error and the classifier's accuracy across α",
        "curves": "Deletion / insertion curves per method",
        "maps": "Relevance maps per method",
    }
    return known.get(stem, stem.replace("_", " ").replace("-", " "))


def eval_section(eval_dir: Path, site: Path, key: str, title: str) -> dict[str, Any]:
    """Tables (``metrics.csv`` or ``metrics.json``, ``per_class.csv``, other CSVs) and figures of an eval dir."""
    tables = []
    t = csv_table(eval_dir / "metrics.csv", "Metrics")
    if t is None:
        m = read_json_obj(eval_dir / "metrics.json") or {}
        t = dict_table(m, "Metrics", skip=("format", "format_version", "version", "per_class"))
    if t:
        tables.append(t)
    pc = csv_table(eval_dir / "per_class.csv", "Per class")
    if pc:
        pc["collapsed"] = pc["n_rows"] > 12
        tables.append(pc)
    for extra in sorted(eval_dir.glob("*.csv")):
        if extra.name not in ("metrics.csv", "per_class.csv"):
            et = csv_table(extra)
            if et:
                tables.append(et)
    figs = copy_figures(eval_dir, site, f"assets/{key}")
    m = read_json_obj(eval_dir / "metrics.json") or {}
    what = ""
    if isinstance(m.get("layer"), str):
        what = f"layer {m['layer']}"
        if isinstance(m.get("alpha"), (int, float)):
            what += f", α = {m['alpha']:g}"
    ds = m.get("dataset")
    if not isinstance(ds, dict):
        ds = {}
    if ds.get("n") and ds.get("split"):
        what += f" · {ds['n']:,} {ds['split']} images" if what else f"{ds['n']:,} {ds['split']} images"
    return {"id": key, "title": title, "what": what, "tables": tables, "figures": figs, "path": str(eval_dir)}


def saliency_section(cmp_dir: Path, site: Path, key: str, title: str) -> dict[str, Any]:
    """Tables (``results.csv`` or ``results.json``) and figures (``maps.png`` first) of a saliency dir."""
    tables = []
    t = csv_table(cmp_dir / "results.csv", "Scores per method")
    if t is None:
        r = read_json_obj(cmp_dir / "results.json") or {}
        t = dict_table(r, "Scores", skip=("format", "format_version", "version"))
    if t:
        tables.append(t)
    figs = copy_figures(cmp_dir, site, f"assets/{key}", first=("maps.png", "curves.png"))
    return {"id": key, "title": title, "tables": tables, "figures": figs, "path": str(cmp_dir)}


def sweep_section(sweep_dir: Path, sweep: dict[str, Any], site: Path) -> dict[str, Any]:
    """The sweep's configuration, ``summary.csv`` and figures (``tradeoff.png`` first)."""
    tables = []
    t = csv_table(sweep_dir / "summary.csv", "Summary per cell")
    if t is None:
        s = read_json_obj(sweep_dir / "summary.json")
        if s:
            t = dict_table(s, "Summary", skip=("format", "format_version"))
    if t:
        tables.append(t)
    cfg = sweep.get("config")
    if not isinstance(cfg, dict):
        cfg = {}
    config = dict_table(cfg, "Sweep configuration") if cfg else None
    cells = sweep.get("cells")
    if not isinstance(cells, list):
        cells = []
    status: dict[str, int] = {}
    for c in cells:
        if isinstance(c, dict):
            name = str(c.get("status") or "unknown")
            status[name] = status.get(name, 0) + 1
    figs = copy_figures(sweep_dir, site, "assets/sweep", first=("tradeoff.png",))
    return {"tables": tables, "config": config, "figures": figs, "status": status, "n_cells": len(cells)}
