"""The summary of a sweep: summary.json/csv over seeds, and the trade-off plot."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .._errors import SaveFormatError
from .._io import atomic_path, read_json, write_json
from .outputs import csv_text
from .stats import mean_std

__all__ = ["summarize_sweep", "SWEEP_FORMAT"]

SWEEP_FORMAT = "cladec-sweep"

#: Per-set metrics taken from each cell's evaluation summary.
SUMMARY_METRICS = ("mse", "psnr", "ssim", "accuracy", "agreement", "eval_accuracy", "eval_accuracy_on_original")


def read_state(path: Path) -> dict | None:

    f = path / "sweep.json"
    if not f.exists():
        return None
    state = read_json(f, "cladec sweep file")
    if state.get("format") != SWEEP_FORMAT:
        raise SaveFormatError(f"{f} is not a cladec sweep file (format {state.get('format')!r})")
    return state


def summarize_sweep(path: str | os.PathLike, *, write: bool = True) -> dict:
    """Summarise the finished cells of a sweep directory: mean ± std over seeds per (layer, α).

    Rows: ``method="cladec"`` per (layer, α); ``method="refae"`` and ``method="original"`` per layer (from
    the reference cells). Writes ``summary.json``, ``summary.csv`` and ``tradeoff.png`` (atomically).

    Args:
        path: The sweep directory.
        write: Write the files (``False``: only return the summary).

    Returns:
        ``{"format": "cladec-sweep-summary", "config": {...}, "metrics": [...], "rows": [{"layer", "method",
        "alpha", "n_seeds", "seeds", "<metric>_mean", "<metric>_std", "<metric>_n"}]}`` (std None for one value;
        ``_n``: cells that have the metric).

    Raises:
        SaveFormatError: ``path`` is not a sweep directory.

    Examples:
        >>> s = summarize_sweep(sweep_dir, write=False)  # sweep_dir: conv2 at α = 0 and 0.001, seed 0
        >>> [(r["layer"], r["method"], r["alpha"], r["n_seeds"]) for r in s["rows"]]
        [('conv2', 'original', None, 1), ('conv2', 'refae', None, 1), ('conv2', 'cladec', 0.0, 1),
         ('conv2', 'cladec', 0.001, 1)]
        >>> s["rows"][0]["mse_mean"], s["rows"][0]["mse_std"]  # the originals; std: None for one seed
        (0.0, None)
    """
    path = Path(path)
    state = read_state(path) if path.is_dir() else None
    if state is None:
        raise SaveFormatError(f"{path} is not a cladec sweep directory (no sweep.json); make one with `cladec sweep`")
    done = [c for c in state["cells"] if c.get("status") == "done" and c.get("metrics")]
    rows: list[dict] = []
    layer_order = list(state.get("layers", [])) + sorted({c["layer"] for c in done} - set(state.get("layers", [])))
    for layer in layer_order:
        cells = [c for c in done if c["layer"] == layer]
        if not cells:
            continue
        groups: list[tuple[str, float | None, list[dict]]] = []
        ref_cells = [c for c in cells if c.get("refae") == c.get("run")]
        groups.append(("original", None, ref_cells))
        groups.append(("refae", None, ref_cells))
        for a in sorted({float(c["alpha"]) for c in cells}):
            groups.append(("cladec", a, [c for c in cells if float(c["alpha"]) == a]))
        for method, alpha, cs in groups:
            if not cs:
                continue
            row: dict[str, Any] = {
                "layer": layer,
                "method": method,
                "alpha": alpha,
                "n_seeds": len(cs),
                "seeds": sorted(int(c["seed"]) for c in cs),
            }
            for m in SUMMARY_METRICS:
                vals = [c["metrics"].get(f"{m}_{method}") for c in cs]
                row[f"{m}_mean"], row[f"{m}_std"] = mean_std(vals)
                row[f"{m}_n"] = sum(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in vals)
            if method != "original":
                row["collapsed"] = sum(bool((c.get("collapsed") or {}).get(method)) for c in cs)
            rows.append(row)
    summary = {
        "format": "cladec-sweep-summary",
        "format_version": 1,
        "config": state["config"],
        "metrics": list(SUMMARY_METRICS),
        "rows": rows,
    }
    if write:
        _write_summary(path, summary)
    return summary


def _write_summary(path: Path, summary: dict) -> None:

    write_json(path / "summary.json", summary)
    header = ["layer", "method", "alpha", "n_seeds"]
    for m in SUMMARY_METRICS:
        header += [f"{m}_mean", f"{m}_std", f"{m}_n"]
    header.append("collapsed")
    with atomic_path(path / "summary.csv") as tmp:
        tmp.write_text(csv_text(header, summary["rows"]))
    _tradeoff_plot(path / "tradeoff.png", summary)


def _tradeoff_plot(file: Path, summary: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows = summary["rows"]
    layers = list(dict.fromkeys(r["layer"] for r in rows))
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    cmap = plt.get_cmap("tab10")
    for k, layer in enumerate(layers):
        col = cmap(k % 10)
        cl = [r for r in rows if r["layer"] == layer and r["method"] == "cladec" and r["mse_mean"] is not None]
        if cl:
            ax.errorbar(
                [r["mse_mean"] for r in cl],
                [r["accuracy_mean"] for r in cl],
                xerr=[r["mse_std"] or 0 for r in cl],
                yerr=[r["accuracy_std"] or 0 for r in cl],
                marker="o",
                ms=4,
                color=col,
                capsize=2,
                label=f"{layer}: ClaDec (α)",
            )
            for r in cl:
                ax.annotate(
                    f"{r['alpha']:g}",
                    (r["mse_mean"], r["accuracy_mean"]),
                    fontsize=6,
                    xytext=(3, 3),
                    textcoords="offset points",
                    color=col,
                )
        ref = [r for r in rows if r["layer"] == layer and r["method"] == "refae" and r["mse_mean"] is not None]
        for r in ref:
            ax.errorbar(
                [r["mse_mean"]],
                [r["accuracy_mean"]],
                xerr=[r["mse_std"] or 0],
                yerr=[r["accuracy_std"] or 0],
                marker="*",
                ms=11,
                color=col,
                capsize=2,
                linestyle="none",
                label=f"{layer}: RefAE",
            )
        orig = [r for r in rows if r["layer"] == layer and r["method"] == "original"]
        if orig and orig[0]["accuracy_mean"] is not None and k == 0:
            ax.axhline(
                orig[0]["accuracy_mean"], color="grey", linestyle="--", linewidth=1, label="classifier on originals"
            )
    ax.set_xlabel("reconstruction error (test MSE)")
    ax.set_ylabel("classifier accuracy on reconstructions")
    ax.set_title("ClaDec trade-off: α from reconstruction (0) to classification (1)", fontsize=9)
    ax.grid(alpha=0.3)
    if layers:
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(file) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def format_summary_table(summary: dict) -> str:
    """A plain-text table of a sweep summary (mean ± std over seeds).

    Args:
        summary: The dict returned by :func:`cladec.evaluation.run_sweep` / :func:`cladec.evaluation.summarize_sweep`.

    Returns:
        The table as a string.

    Examples:
        >>> from cladec.evaluation import summarize_sweep
        >>> print(format_summary_table(summarize_sweep(sweep_dir, write=False)))
        layer   method    alpha  seeds  mse     ssim    accuracy  eval_accuracy
        conv2   original         1      0.0000  1.0000  ...
        conv2   refae            1      ...
        conv2   cladec    0      1      ...
        conv2   cladec    0.001  1      ...
    """
    cols = ("mse", "ssim", "accuracy", "eval_accuracy")
    lines = [f"{'layer':<12}{'method':<9}{'alpha':>7}{'seeds':>6}" + "".join(f"{c:>20}" for c in cols)]
    for r in summary["rows"]:
        a = "" if r["alpha"] is None else f"{r['alpha']:g}"
        cells = []
        for c in cols:
            m, s = r.get(f"{c}_mean"), r.get(f"{c}_std")
            if m is None:
                cells.append(f"{'-':>20}")
            else:  # one seed: no spread (std None), the value alone
                cells.append(f"{m:>12.4f} ± {s:<5.3f}" if s is not None else f"{m:>12.4f}{'':8}")
        lines.append(f"{r['layer']:<12}{r['method']:<9}{a:>7}{r['n_seeds']:>6}" + "".join(cells))
    return "\n".join(lines)
