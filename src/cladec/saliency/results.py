"""What a saliency comparison writes: results.json's paired section, results.csv and its text table."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._io import write_bytes
from ..evaluation.stats import holm, image_spread, mean_std, paired_comparison, per_image_mean
from .methods import stored_name

__all__ = ["format_table"]

PAIRED_SCORES = {"deletion": True, "insertion": False}  # score -> lower is better

_ALPHA = 0.05


def paired_section(
    results: dict,
    methods: Sequence[str],
    score_list: Sequence[str],
    *,
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``results.json``'s ``paired`` (score -> method -> comparison with ClaDec) and ``paired_info`` sections."""
    ref = next((m for m in methods if m.startswith("cladec")), None)
    info: dict[str, Any] = {
        "reference": ref,
        "difference": f"{ref} − method of the per-image AUC (each image's AUC averaged over the seeds first)",
        "better": {s: "lower AUC" if low else "higher AUC" for s, low in PAIRED_SCORES.items()},
        "confidence": confidence,
        "n_resamples": n_resamples,
        "bootstrap_seed": seed,
        "ci": f"{confidence:.0%} bootstrap confidence interval of the mean difference (BCa, scipy.stats.bootstrap)",
        "test": "two-sided Wilcoxon signed-rank test of the per-image differences (scipy.stats.wilcoxon, zero "
        "differences dropped)",
        "multiple_comparisons": f"p_holm: Holm-adjusted over the methods compared within a score; significant: "
        f"p_holm < {_ALPHA}",
        "note_on_better": "better follows the sign of the mean difference; the Wilcoxon test concerns the location "
        "of the differences (see median_diff) and can disagree with the CI of the mean when they "
        "are skewed",
    }
    if ref is None:
        info["note"] = "no ClaDec method among the methods: nothing to compare against"
        return {}, info
    paired: dict[str, Any] = {}
    for score, lower in PAIRED_SCORES.items():
        if score not in score_list:
            continue
        rows: dict[str, dict[str, Any]] = {}
        a = (results[ref].get(score) or {}).get("auc_per_image")
        for m in methods:
            if m == ref:
                continue
            b = (results[m].get(score) or {}).get("auc_per_image")
            if a is None or b is None:
                old = [k for k, v in ((ref, a), (m, b)) if v is None]
                files = ", ".join(f"units/{stored_name(k)}__{score}__0__*.json" for k in old)
                rows[m] = {
                    "mean_diff": None,
                    "ci_low": None,
                    "ci_high": None,
                    "p_value": None,
                    "n": 0,
                    "better": None,
                    "median_diff": None,
                    "missing": f"units without per-image AUCs (written by an older cladec); "
                    f"delete {files} to recompute them",
                }
            else:
                rows[m] = paired_comparison(
                    a,
                    b,
                    lower_is_better=lower,
                    names=(ref, m),
                    confidence=confidence,
                    n_resamples=n_resamples,
                    seed=seed,
                )
        done = [m for m, e in rows.items() if e["p_value"] is not None]
        for m, q in zip(done, holm([rows[m]["p_value"] for m in done]), strict=True):
            rows[m]["p_holm"] = q
            rows[m]["significant"] = q < _ALPHA
        for e in rows.values():
            e.setdefault("p_holm", None)
            e.setdefault("significant", None)
        paired[score] = rows
    return paired, info


def _csv_columns(result: dict) -> list[tuple[str, Any]]:
    cols: list[tuple[str, Any]] = []
    sc = result["scores"]
    if "deletion" in sc:
        cols.append(("deletion_auc", lambda r: (r["deletion"]["auc_mean"], r["deletion"]["auc_std"])))
    if "insertion" in sc:
        cols.append(("insertion_auc", lambda r: (r["insertion"]["auc_mean"], r["insertion"]["auc_std"])))
    if "road" in sc:
        cols.append(("road_morf_acc", lambda r: (r["road"]["morf_mean"], r["road"]["morf_std"])))
        cols.append(("road_lerf_acc", lambda r: (r["road"]["lerf_mean"], r["road"]["lerf_std"])))
        cols.append(("road_gap", lambda r: (r["road"]["gap_mean"], r["road"]["gap_std"])))
    if "roar" in sc:
        for k in [0] + [k for k in result["roar_k"] if k > 0]:
            cols.append(
                (
                    f"roar_acc_k{k}",
                    lambda r, k=k: (
                        r["roar"]["accuracy_mean"][r["roar"]["k"].index(k)],
                        r["roar"]["accuracy_std"][r["roar"]["k"].index(k)],
                    ),
                )
            )
    return cols


def _paired_scores(result: dict) -> list[str]:
    """The scores with per-image values (deletion, insertion) in a comparison, in the order of its scores."""
    return [s for s in result.get("scores", []) if s in PAIRED_SCORES]


def _fmt(v: Any, spec: str = ".4f") -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else "nan"


def write_csv(path: Path, result: dict) -> None:
    import csv
    import io

    cols = _csv_columns(result)
    image_scores = _paired_scores(result)
    paired = result.get("paired") or {}
    pfields = ("diff", "ci_low", "ci_high", "p", "p_holm", "better")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(
        ["method"]
        + [f"{c}_{s}" for c, _ in cols for s in ("mean", "std")]
        + [f"{sc}_auc_image_{s}" for sc in image_scores for s in ("std", "q25", "q75")]
        + [f"{sc}_paired_{f}" for sc in image_scores if sc in paired for f in pfields]
    )
    for method, r in result["results"].items():
        row = [method]
        for _, get in cols:
            try:
                m, s = get(r)
            except (KeyError, ValueError, IndexError):
                m, s = float("nan"), float("nan")
            row += [_fmt(m), "" if s is None else _fmt(s)]  # std None: one seed, no spread
        for sc in image_scores:
            e = r.get(sc) or {}
            row += [_fmt(e.get(f"auc_image_{s}")) for s in ("std", "q25", "q75")]
        for sc in image_scores:
            if sc not in paired:
                continue
            e = paired[sc].get(method)
            if e is None:  # the reference itself
                row += [""] * len(pfields)
            else:
                row += [
                    _fmt(e.get("mean_diff")),
                    _fmt(e.get("ci_low")),
                    _fmt(e.get("ci_high")),
                    _fmt(e.get("p_value"), ".4g"),
                    _fmt(e.get("p_holm"), ".4g"),
                    e.get("better") or ("missing" if e.get("missing") else ""),
                ]
        w.writerow(row)
    write_bytes(path, buf.getvalue().encode())


def _format_paired(result: dict) -> list[str]:
    """The paired-comparison block of :func:`format_table` (empty when the result has no paired section)."""
    paired = result.get("paired")
    info = result.get("paired_info") or {}
    if paired is None:
        if _paired_scores(result):
            return ["", "paired comparison: not in this results.json (written by an older cladec)"]
        return []
    ref = info.get("reference")
    if ref is None or not paired:
        return ["", f"paired comparison: {info.get('note', 'none')}"] if ref is None and _paired_scores(result) else []
    conf = info.get("confidence", 0.95)
    lines = [
        "",
        f"paired: {ref} − method on the same images (per-image AUC, mean over seeds); {conf:.0%} "
        f"bootstrap CI; Wilcoxon signed-rank p, Holm-adjusted within each score (p_holm)",
        f"{'score':<12}{'method':<22}{ref + ' − method':>20}{'CI':>22}{'p':>11}{'p_holm':>11}  better",
    ]
    missing = False
    for score, rows in paired.items():
        arrow = "↓" if PAIRED_SCORES.get(score, True) else "↑"
        for method, e in rows.items():
            head = f"{score + arrow:<12}{method:<22}"
            if e.get("mean_diff") is None:
                missing = True
                lines.append(head + f"{'missing (older units without per-image AUCs)':>64}")
                continue
            ci = f"[{e['ci_low']:+.4f}, {e['ci_high']:+.4f}]"
            p_holm = e.get("p_holm")
            sig = " *" if e.get("significant") else ""
            lines.append(
                head + f"{e['mean_diff']:>+20.4f}{ci:>22}{e['p_value']:>11.3g}"
                f"{(format(p_holm, '.3g') if p_holm is not None else '-'):>11}  {e['better']}{sig}"
            )
    lines.append(
        f"better (by the mean difference): deletion lower AUC, insertion higher; * = Wilcoxon p_holm < "
        f"{_ALPHA} (a test of the differences' location, not of their mean: see results.json median_diff)"
    )
    if missing:
        lines.append(
            "missing: some units were written by an older cladec without per-image AUCs; delete those "
            "unit files (see results.json 'paired') to recompute them"
        )
    return lines


def format_table(result: dict) -> str:
    """A plain-text table (method × score, mean ± std over seeds) of a comparison, with the paired comparison.

    For deletion and insertion a ``_img_sd`` column gives the std over images of the per-image AUC (averaged over
    seeds). Below the table, ClaDec is compared with every other method on the same images: the mean per-image
    difference with its bootstrap CI, the Wilcoxon signed-rank p-value (raw and Holm-adjusted) and which method
    is better. Results from an older cladec without these parts show ``-`` / a note instead.

    Args:
        result: The dict returned by :func:`compare_saliency` (or read from ``results.json``).

    Returns:
        The table as a string; arrows mark the better direction of each score.

    Examples:
        >>> from cladec.saliency import compare_saliency
        >>> res = compare_saliency(run_dir, out="cmp", methods="cladec,random", scores="deletion", n=8, steps=8,
        ...                        verbose=False)
        >>> print(format_table(res))
        method                    deletion_auc↓  deletion_img_sd
        cladec                            ...
        random                            ...
        <BLANKLINE>
        paired: cladec − method on the same images (per-image AUC, mean over seeds); ...
        score       method                     cladec − method                    CI          p     p_holm  better
        deletion↓   random                             ...
        better (by the mean difference): deletion lower AUC, insertion higher; ...
    """
    cols = _csv_columns(result)
    better = {"deletion_auc": "↓", "insertion_auc": "↑", "road_morf_acc": "↓", "road_lerf_acc": "↑", "road_gap": "↑"}
    image_cols = {f"{s}_auc": s for s in _paired_scores(result)}
    names = []
    for c, _ in cols:
        names.append(f"{c}{better.get(c, '↓' if c.startswith('roar') and not c.endswith('k0') else '')}")
        if c in image_cols:
            names.append(f"{image_cols[c]}_img_sd")
    width = max(15, *(len(nm) + 2 for nm in names))
    lines = [f"{'method':<22}" + "".join(f"{nm:>{width}}" for nm in names)]
    multi = len(result.get("seeds", [0])) > 1
    for method, r in result["results"].items():
        cells = []
        for c, get in cols:
            try:
                m, s = get(r)
                # one finished seed has no spread (std None): shown as its value alone, not "± 0"
                cells.append(f"{m:.3f} ± {s:.3f}" if multi and s is not None else f"{m:.3f}")
            except (KeyError, ValueError, IndexError, TypeError):
                cells.append("-")
            if c in image_cols:
                v = (r.get(image_cols[c]) or {}).get("auc_image_std")
                cells.append(f"{v:.3f}" if isinstance(v, (int, float)) else "-")
        lines.append(f"{method:<22}" + "".join(f"{c:>{width}}" for c in cells))
    return "\n".join(lines + _format_paired(result))


def aggregate(
    per_seed: dict[tuple[str, str], list],
    methods: Sequence[str],
    score_list: Sequence[str],
    n_images: int,
    fractions: Sequence[float],
) -> dict[str, dict[str, Any]]:
    """The ``results`` section of ``results.json``: each method's scores over the seeds.

    Args:
        per_seed: ``(method, score)`` → the stored units of work, one per seed (and per ``k`` for ROAR), as
            :class:`~cladec.saliency.UnitStore` keeps them.
        methods: The compared methods, in order.
        score_list: The scores computed (``deletion``, ``insertion``, ``road``, ``roar``).
        n_images: How many images were scored (for the per-image spread of deletion / insertion).
        fractions: ROAD's removal fractions.

    Returns:
        ``method`` → ``score`` → its mean and std over seeds (AUCs, curves, ROAD's MoRF/LeRF accuracies and
        gap, ROAR's accuracy per ``k`` and its area), with the per-image spread of deletion and insertion.

    Examples:
        >>> unit = {"auc": 0.2, "auc_per_image": [0.1, 0.3], "fractions": [0.0, 1.0], "curve": [0.9, 0.1]}
        >>> res = aggregate({("random", "deletion"): [unit]}, ["random"], ["deletion"], 2, [])
        >>> res["random"]["deletion"]["auc_mean"], res["random"]["deletion"]["per_seed"]
        (0.2, [0.2])
    """
    results: dict[str, dict[str, Any]] = {m: {} for m in methods}
    for method in methods:
        res = results[method]
        for score in score_list:
            units = per_seed.get((method, score), [])
            if not units:
                continue
            if score in ("deletion", "insertion"):
                m, s = mean_std([u["auc"] for u in units])
                curve = torch.tensor([u["curve"] for u in units]).mean(0).tolist()
                res[score] = {
                    "auc_mean": m,
                    "auc_std": s,
                    "per_seed": [u["auc"] for u in units],
                    "fractions": units[0]["fractions"],
                    "curve": curve,
                    **image_spread(per_image_mean(units, n_images)),
                }
            elif score == "road":
                entry: dict[str, Any] = {"fractions": list(fractions)}
                for o in ("morf", "lerf"):
                    accs = torch.tensor([u[o]["accuracy"] for u in units])
                    entry[o] = accs.mean(0).tolist()
                    entry[f"{o}_mean"], entry[f"{o}_std"] = mean_std(accs.mean(1).tolist())
                entry["gap_mean"], entry["gap_std"] = mean_std([u["road_gap"] for u in units])
                res[score] = entry
            elif score == "roar":
                kk = sorted({u["k"] for u in units})
                acc_of = {k: [u["accuracy"] for u in units if u["k"] == k] for k in kk}
                means = [mean_std(acc_of[k])[0] for k in kk]
                stds = [mean_std(acc_of[k])[1] for k in kk]
                # area under accuracy(k/100) over the k measured (lower = the map removed more information)
                xs = [k / 100 for k in kk]
                auc = (
                    float(torch.trapezoid(torch.tensor(means), torch.tensor(xs))) / max(xs[-1] - xs[0], 1e-9)
                    if len(kk) > 1
                    else means[0]
                )
                res[score] = {"k": kk, "accuracy_mean": means, "accuracy_std": stds, "auc": auc}
    return results
