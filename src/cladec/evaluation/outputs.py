"""What an evaluation writes: eval.json, the CSV tables, the plots, and its text table."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._io import atomic_dir, write_json

__all__ = ["METRIC_COLUMNS"]

#: Columns of ``metrics.csv`` (after ``image_set`` and ``n``).
METRIC_COLUMNS = (
    "mse",
    "mse_std",
    "psnr",
    "psnr_std",
    "ssim",
    "ssim_std",
    "accuracy",
    "agreement",
    "eval_accuracy",
    "eval_accuracy_on_original",
)

PER_CLASS_COLUMNS = ("mse", "psnr", "ssim", "accuracy", "agreement", "eval_accuracy", "eval_accuracy_on_original")


def _fmt(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return v


def csv_text(header: Sequence[str], rows: Sequence[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        w.writerow([_fmt(r.get(h)) for h in header])
    return buf.getvalue()


def _plots(result: dict, tmp: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    written = []
    sets = list(result["sets"])
    classes = list(result["dataset"]["classes"])
    colours = {"original": "#777777", "cladec": "#1f77b4", "refae": "#ff7f0e"}
    has_eval = result.get("eval_classifier") is not None
    # per-class accuracy bars
    ncols = 2 if has_eval else 1
    fig, axes = plt.subplots(1, ncols, figsize=(max(6, 0.75 * len(classes)) * ncols, 3.6), squeeze=False)
    width = 0.8 / max(len(sets), 1)
    xs = np.arange(len(classes))
    for k, (key, title) in enumerate(
        (
            ("accuracy", "explained classifier on each image set"),
            ("eval_accuracy", "evaluation classifier (trained and tested on the set)"),
        )[:ncols]
    ):
        ax = axes[0, k]
        for j, s in enumerate(sets):
            vals = [result["per_class"][s][c].get(key) for c in classes]
            vals = [np.nan if v is None else v for v in vals]
            ax.bar(xs + (j - (len(sets) - 1) / 2) * width, vals, width, label=s, color=colours.get(s))
        ax.set_xticks(xs)
        ax.set_xticklabels([c[:10] for c in classes], rotation=45, ha="right", fontsize=7)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("accuracy")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"per-class accuracy — layer {result['layer']}, α = {result['alpha']:g}", fontsize=9)
    fig.tight_layout()
    fig.savefig(tmp / "per_class_accuracy.png", dpi=110)
    plt.close(fig)
    written.append("per_class_accuracy.png")
    # reconstruction errors with error bars (std over images) and per-class MSE
    rec_sets = [s for s in sets if s != "original"]
    if rec_sets:
        fig, axes = plt.subplots(1, 3, figsize=(12, 3.4), gridspec_kw={"width_ratios": [1, 1, 3]})
        for ax, key in zip(axes[:2], ("mse", "ssim"), strict=True):
            means = [result["sets"][s][key] for s in rec_sets]
            stds = [result["sets"][s][f"{key}_std"] for s in rec_sets]
            ax.bar(rec_sets, means, yerr=stds, capsize=4, color=[colours.get(s) for s in rec_sets])
            ax.set_title(f"{key.upper()} (mean ± std over images)", fontsize=9)
        ax = axes[2]
        width = 0.8 / len(rec_sets)
        for j, s in enumerate(rec_sets):
            pc = result["per_class"][s]
            means = [np.nan if pc[c]["mse"] is None else pc[c]["mse"] for c in classes]
            stds = [0 if pc[c].get("mse_std") is None else pc[c]["mse_std"] for c in classes]
            ax.bar(
                xs + (j - (len(rec_sets) - 1) / 2) * width,
                means,
                width,
                yerr=stds,
                capsize=2,
                label=s,
                color=colours.get(s),
            )
        ax.set_xticks(xs)
        ax.set_xticklabels([c[:10] for c in classes], rotation=45, ha="right", fontsize=7)
        ax.set_title("per-class MSE (± std)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(tmp / "errors.png", dpi=110)
        plt.close(fig)
        written.append("errors.png")
    return written


def write_outputs(result: dict, out: Path) -> None:

    rows = []
    for s, m in result["sets"].items():
        rows.append({"image_set": s, **m})
    pc_rows = []
    for s, by_class in result["per_class"].items():
        for c, m in by_class.items():
            pc_rows.append({"image_set": s, "class": c, **m})
    pc_header = ["image_set", "class", "n"]
    for k in PER_CLASS_COLUMNS:
        pc_header.append(k)
        if k in ("mse", "psnr", "ssim"):
            pc_header.append(f"{k}_std")
    with atomic_dir(out, "metrics.json", "cladec evaluation") as tmp:
        write_json(tmp / "metrics.json", result)
        (tmp / "metrics.csv").write_text(csv_text(["image_set", "n", *METRIC_COLUMNS], rows))
        (tmp / "per_class.csv").write_text(csv_text(pc_header, pc_rows))
        _plots(result, tmp)


def format_eval_table(res: dict) -> str:
    """A plain-text table of an evaluation's per-set metrics.

    Args:
        res: The dict returned by :func:`cladec.evaluation.evaluate_run`.

    Returns:
        The table as a string.

    Examples:
        >>> from cladec.evaluation import evaluate_run
        >>> res = evaluate_run(run_dir, limit=100, eval_classifier=False, write=False, verbose=False)
        >>> print(format_eval_table(res))
        layer conv2, α = 0.001, 100 test images
        image set  mse     psnr  ssim    accuracy  agreement  eval_accuracy
        original   0.0000  -     1.0000  ...
        cladec     ...
        refae      ...
    """
    cols = ("mse", "psnr", "ssim", "accuracy", "agreement", "eval_accuracy")
    lines = [
        f"layer {res['layer']}, α = {res['alpha']:g}, {res['dataset']['n']} {res['dataset']['split']} images",
        f"{'image set':<10}" + "".join(f"{c:>15}" for c in cols),
    ]
    for s, m in res["sets"].items():
        cells = []
        for c in cols:
            v = m.get(c)
            cells.append(f"{'-':>15}" if v is None else f"{v:>15.4f}")
        lines.append(f"{s:<10}" + "".join(cells))
    return "\n".join(lines)
