"""``cladec compare-saliency``: ClaDec relevance maps against saliency baselines.

:func:`compare_saliency` does the work (also used by ``benchmarks/compare_saliency.py``); the
subcommand is registered by :func:`register`. Output directory ``cmp/``::

    results.json   {"format": "cladec-saliency", "format_version": 1, "run", "dataset", "layer", "methods",
                    "scores", "seeds", "settings", "results": {method: {score: ...}}, "paired": {score: {method:
                    {mean_diff, ci_low, ci_high, p_value, p_holm, n, better, significant}}}, "paired_info",
                    "timings", ...}; deletion / insertion entries also hold the per-image AUCs (averaged over
                    seeds) and their std and quartiles over images
    results.csv    one row per method; for each score its mean and std over seeds, then for deletion /
                   insertion the per-image std and quartiles and the paired comparison with ClaDec
    curves.png     deletion, insertion and ROAD (MoRF / LeRF) curves, ROAR accuracy against k
    maps.png       the same test images side by side: input, x̂_R, x̂_E, each method's map
    units/         finished (method, score, k, seed) units — a rerun skips them (resume)
    maps/          cached maps (safetensors) — a rerun reuses them
    settings.json  what units and maps depend on (run, data, n, steps, baselines, ROAR settings, Grad-CAM
                   layer, ...): a rerun with other settings is refused instead of mixing results

Every map explains the classifier's *predicted* class on the clean image, and every score uses that
class as the target.

Paired comparison: for deletion and insertion, ClaDec (the first ``cladec*`` method) is compared with every
other method on the same images (:func:`paired_comparison`): the mean per-image difference ClaDec − method
(each image's AUC averaged over the seeds first) with a seeded 95% bootstrap CI, a Wilcoxon signed-rank
p-value and its Holm adjustment over the methods. Lower deletion AUC and higher insertion AUC are better.
Units written by an older cladec hold no per-image AUCs; their comparisons are reported as missing.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ._cli_args import csv_list, seed_int
from ._cli_args import pos_int as _pos_int
from ._errors import ConfigError
from ._stats import mean_std

__all__ = [
    "register",
    "cmd_compare_saliency",
    "compare_saliency",
    "format_table",
    "paired_comparison",
    "DEFAULT_METHODS",
]

DEFAULT_METHODS = (
    "cladec",
    "saliency",
    "input-x-gradient",
    "integrated-gradients",
    "guided-backprop",
    "gradcam",
    "guided-gradcam",
    "occlusion",
    "random",
    "sobel",
)


def _per_image(units: Sequence[dict], n: int) -> list[float] | None:
    """Per-image AUCs averaged over the seeds' units, or None when a unit has none (written by an older cladec)."""
    import numpy as np

    rows = [u.get("auc_per_image") for u in units]
    if not rows or any(not isinstance(r, list) or len(r) != n for r in rows):
        return None
    return np.asarray(rows, dtype=float).mean(0).tolist()


def _image_spread(per_image: list[float] | None) -> dict[str, Any]:
    """The per-image part of a deletion / insertion entry: the AUCs, their std and interquartile range."""
    import numpy as np

    if per_image is None:
        return {"auc_per_image": None, "auc_image_std": None, "auc_image_q25": None, "auc_image_q75": None}
    a = np.asarray(per_image, dtype=float)
    q25, q75 = np.quantile(a, [0.25, 0.75])
    return {
        "auc_per_image": per_image,
        "auc_image_std": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "auc_image_q25": float(q25),
        "auc_image_q75": float(q75),
    }


def paired_comparison(
    reference: Sequence[float],
    other: Sequence[float],
    *,
    lower_is_better: bool,
    names: tuple[str, str] = ("reference", "other"),
    confidence: float = 0.95,
    n_resamples: int = 9999,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired comparison of two methods' scores on the same images.

    The per-image difference ``reference − other`` is summarised by its mean, a bootstrap confidence interval
    of that mean (BCa, :func:`scipy.stats.bootstrap`, seeded; a constant difference gets the zero-width interval)
    and the p-value of a two-sided Wilcoxon signed-rank test (:func:`scipy.stats.wilcoxon`, zero differences
    dropped; 1.0 when all differences are zero).

    Args:
        reference: One score per image for the reference method (e.g. ClaDec's per-image deletion AUCs).
        other: The other method's scores on the same images, in the same order.
        lower_is_better: True when a lower score is better (deletion AUC), False when higher is (insertion AUC).
        names: Names of the two methods, used in ``better``.
        confidence: Confidence level of the interval, in (0, 1).
        n_resamples: Bootstrap resamples.
        seed: Bootstrap seed.

    Returns:
        ``{"mean_diff", "ci_low", "ci_high", "p_value", "n", "better", "median_diff"}``: ``better`` is the name
        of the method the mean difference favours (``"tie"`` when it is 0); ``n`` is the number of images. The
        Wilcoxon test concerns the location of the differences (closer to the median than to the mean), so with
        skewed differences it can disagree with the interval of the mean: both are reported.

    Raises:
        DataError: The two are not equally long 1-D sequences of finite numbers (at least one each).
        ConfigError: ``confidence`` outside (0, 1) or ``n_resamples`` not a positive integer.

    Examples:
        >>> r = paired_comparison([0.2, 0.3, 0.25, 0.4], [0.3, 0.35, 0.3, 0.5], lower_is_better=True,
        ...                       names=("cladec", "gradcam"))
        >>> r["better"], round(r["mean_diff"], 4), r["n"]
        ('cladec', -0.075, 4)
    """
    import inspect
    import warnings

    import numpy as np
    from scipy import stats

    from ._errors import DataError

    a = np.asarray(reference, dtype=float)
    b = np.asarray(other, dtype=float)
    if a.ndim != 1 or b.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise DataError(
            f"a paired comparison needs two equally long 1-D sequences with one score per image, got "
            f"shapes {a.shape} and {b.shape}"
        )
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise DataError("a paired comparison needs finite scores; got NaN or infinite values")
    if not 0 < confidence < 1:
        raise ConfigError(f"confidence must be in (0, 1), e.g. 0.95, got {confidence!r}")
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, int) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer, got {n_resamples!r}")
    d = a - b
    mean = float(d.mean())
    with warnings.catch_warnings():
        # degenerate resamples (BCa on few images) and small-sample notes are handled below, not printed
        warnings.simplefilter("ignore")
        if np.ptp(d) == 0:
            lo = hi = mean
        else:
            # scipy >= 1.15 names the seed argument rng, older versions random_state
            rng_kw = "rng" if "rng" in inspect.signature(stats.bootstrap).parameters else "random_state"
            lo = hi = float("nan")
            for method in ("BCa", "percentile"):  # BCa fails (NaN) on some degenerate samples
                ci = stats.bootstrap(
                    (d,),
                    np.mean,
                    n_resamples=n_resamples,
                    confidence_level=confidence,
                    method=method,
                    batch=max(1, 5_000_000 // d.size),
                    **{rng_kw: np.random.default_rng(seed)},
                ).confidence_interval
                lo, hi = float(ci.low), float(ci.high)
                if math.isfinite(lo) and math.isfinite(hi):
                    break
        p = 1.0 if not np.any(d != 0) else float(stats.wilcoxon(d).pvalue)
    better = "tie" if mean == 0 else names[0] if (mean < 0) == lower_is_better else names[1]
    return {
        "mean_diff": mean,
        "ci_low": lo,
        "ci_high": hi,
        "p_value": p,
        "n": int(d.size),
        "better": better,
        "median_diff": float(np.median(d)),
    }


def _holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-adjusted p-values (step-down, family-wise error rate), in the given order."""
    order = sorted(range(len(pvalues)), key=lambda i: pvalues[i])
    out = [1.0] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(pvalues) - rank) * pvalues[i]))
        out[i] = running
    return out


PAIRED_SCORES = {"deletion": True, "insertion": False}  # score -> lower is better
_ALPHA = 0.05


def _paired_section(
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
                files = ", ".join(f"units/{_stored(k)}__{score}__0__*.json" for k in old)
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
        for m, q in zip(done, _holm([rows[m]["p_value"] for m in done]), strict=True):
            rows[m]["p_holm"] = q
            rows[m]["significant"] = q < _ALPHA
        for e in rows.values():
            e.setdefault("p_holm", None)
            e.setdefault("significant", None)
        paired[score] = rows
    return paired, info


def _load_maps(path: Path) -> torch.Tensor | None:
    from ._errors import SaveFormatError
    from ._io import load_tensors

    if not path.is_file():
        return None
    try:
        return load_tensors(path)["maps"]
    except (SaveFormatError, KeyError):
        return None


def compare_saliency(
    run: Any,
    *,
    out: str | os.PathLike,
    methods: Sequence[str] | str = DEFAULT_METHODS,
    scores: Sequence[str] | str = ("deletion", "insertion", "road"),
    n: int = 200,
    roar_k: Sequence[float] | str = (10, 30, 50, 70, 90),
    roar_epochs: int | None = None,
    roar_train_limit: int | None = 5000,
    seeds: Sequence[int] = (0,),
    dataset: str | None = None,
    data_root: str | None = None,
    layer: str | None = None,
    steps: int = 32,
    deletion_baseline: str = "zero",
    insertion_start: str = "zero",
    road_fractions: Sequence[float] | None = None,
    batch_size: int = 64,
    device: str | None = None,
    verbose: bool = True,
) -> dict[str, Any]:
    """Score ClaDec relevance maps and saliency baselines on one run; write ``out/``.

    Args:
        run: A run directory or a loaded :class:`cladec.runs.Run`.
        out: Output directory (created; finished units inside are reused when its ``settings.json`` matches
            these settings; other settings are refused).
        methods: Method names (see :func:`cladec.saliency.available_methods`).
        scores: Any of ``deletion``, ``insertion``, ``road``, ``roar``.
        n: Test images scored.
        roar_k: ROAR percentages in [0, 100); k = 0 (plain retraining) is always added.
        roar_epochs: Epochs of each ROAR retraining (default: the classifier's own, else 5).
        roar_train_limit: Training images for ROAR retraining (None = all).
        seeds: Seeds (random map, tie-breaking, ROAD noise, ROAR training); results are mean ± std over them.
        dataset: Data set name (default: the run's).
        data_root: Data root (default: the run's).
        layer: Layer for Grad-CAM / guided Grad-CAM, with a spatial map larger than 1×1 (default: the run's
            layer if it has one, else the classifier's last layer that has one, see
            :func:`cladec.saliency.gradcam_layer`).
        steps: Deletion / insertion steps.
        deletion_baseline: ``zero`` (default), ``mean`` or ``blur``.
        insertion_start: ``zero`` (default), ``blur`` or ``mean`` (see :mod:`cladec.scores`).
        road_fractions: ROAD fractions (default 0.1 … 0.9).
        batch_size: Images per batch.
        device: Device (default: CUDA if available).
        verbose: Progress bars and messages.

    Returns:
        The ``results.json`` content.

    Raises:
        ConfigError: Unknown methods or scores, k outside [0, 100), bad n / seeds.

    Examples:
        >>> res = compare_saliency(run_dir, out="cmp", methods="cladec,random", scores="deletion", n=8, steps=8,
        ...                        verbose=False)  # run_dir: a run directory (ClaDec and RefAE for conv2)
        >>> sorted(res["results"]), sorted(res["results"]["cladec"])
        (['cladec', 'random'], ['deletion'])
        >>> 0 <= res["results"]["cladec"]["deletion"]["auc_mean"] <= 1
        True
        >>> sorted(p.name for p in Path("cmp").iterdir())
        ['curves.png', 'maps', 'maps.png', 'results.csv', 'results.json', 'settings.json', 'units']
    """
    from ._io import file_sha256, save_tensors, write_json
    from .data import load_dataset
    from .relevance import DEFAULT_VARIANT, reconstruct_pair
    from .runs import Run, load_run
    from .saliency import canonical_method, gradcam_layer, saliency_maps
    from .scores import DEFAULT_ROAD_FRACTIONS, UnitStore, check_roar_k, check_scores, deletion, insertion, road

    # ---- validate everything before any work ------------------------------------------------
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(canonical_method(m) for m in methods))
    if not methods:
        raise ConfigError("give at least one method")
    score_list = check_scores(scores)
    ks = check_roar_k(roar_k) if "roar" in score_list else []
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n must be a positive integer, got {n!r}")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("give at least one seed")
    for name, val in (("deletion_baseline", deletion_baseline), ("insertion_start", insertion_start)):
        if val not in ("zero", "mean", "blur"):
            raise ConfigError(f"{name} must be 'zero', 'mean' or 'blur', got {val!r}")
    fractions = tuple(road_fractions) if road_fractions is not None else DEFAULT_ROAD_FRACTIONS

    t_start = time.perf_counter()
    if not isinstance(run, Run):
        run = load_run(run, device=device)
    if any(m.startswith("cladec") for m in methods) and run.refae is None:
        raise ConfigError(f"ClaDec relevance maps need the run's RefAE, but {run.path} has none (fit with refae)")
    out = Path(out)
    store = UnitStore(out)
    model = run.classifier
    model.eval()
    norm = run.input_norm if run.input_norm is not None else run.classifier_info.get("input_norm")
    ds_cfg = run.config["dataset"]
    ds_name = dataset or ds_cfg["name"]
    root = data_root if data_root is not None else ds_cfg.get("root")
    size = ds_cfg.get("size")
    from ._limits import check_dataset_fits

    check_dataset_fits(
        ds_name,
        [("test", n), ("train", roar_train_limit if "roar" in score_list else 5000)],
        size,
        what=f"the run's image size {size} (run.json dataset.size)",
    )
    test = load_dataset(ds_name, root=root, split="test", size=size, limit=n)
    x, y = test.tensors()
    if tuple(x.shape[1:]) != tuple(run.image_shape):
        raise ConfigError(
            f"data set {ds_name!r} has images {tuple(x.shape[1:])}, the run was fitted on {run.image_shape}"
        )
    need_train = "roar" in score_list or any(m.startswith("cladec") for m in methods)
    train = None
    if need_train:
        train = load_dataset(
            ds_name,
            root=root,
            split="train",
            size=size,
            limit=roar_train_limit if "roar" in score_list else min(roar_train_limit or 5000, 5000),
        )
    reference = train.tensors()[0].mean(0) if train is not None else None
    from .classifier import predict

    target = predict(model, x, input_norm=norm)
    # Grad-CAM: at the explained layer when its output is a spatial map larger than 1×1, else (e.g. 512×1×1) at
    # the classifier's last layer with one (saliency.gradcam_layer); an explicit layer must have one
    gc_layer = layer
    if {"gradcam", "guided-gradcam"} & set(methods):
        if layer is not None:
            gc_layer = gradcam_layer(model, x[:1], layer)
        else:
            try:
                gc_layer = gradcam_layer(model, x[:1], run.layer)
            except ConfigError:
                gc_layer = gradcam_layer(model, x[:1], None)
    # what the stored maps and units depend on (besides their method, score, k and seed): results of other
    # settings are never mixed in
    settings = {
        # a refitted run has a new run.json
        "run": str(Path(run.path).resolve()),
        "run_fingerprint": file_sha256(Path(run.path) / "run.json"),
        "dataset": ds_name,
        "size": size,
        "n": int(x.shape[0]),
        "gradcam_layer": gc_layer,
        "steps": steps,
        "deletion_baseline": deletion_baseline,
        "insertion_start": insertion_start,
        "road_fractions": list(fractions),
        "roar_epochs": roar_epochs,
        "roar_train_limit": roar_train_limit,
        "reference_images": len(train) if train is not None else None,
    }
    _check_settings(out, settings)
    timings: dict[str, float] = {}

    def maps_for(method: str, images: torch.Tensor, tgt: torch.Tensor, tag: str, seed: int) -> torch.Tensor:
        seeded = method == "random"
        fname = f"{_stored(method)}__{tag}" + (f"__s{seed}" if seeded else "") + ".safetensors"
        path = out / "maps" / fname
        cached = _load_maps(path)
        if cached is not None and cached.shape[0] == images.shape[0]:
            return cached
        t0 = time.perf_counter()
        m = saliency_maps(
            model,
            images,
            tgt,
            [method],
            layer=gc_layer,
            input_norm=norm,
            cladec=run.cladec,
            refae=run.refae,
            batch_size=batch_size,
            seed=seed,
            reference=reference,
            progress=verbose,
        )[method]
        timings[f"maps_{method}_{tag}"] = round(time.perf_counter() - t0, 2)
        save_tensors(path, {"maps": m})
        return m

    results: dict[str, dict[str, Any]] = {m: {} for m in methods}
    per_seed: dict[tuple[str, str], list] = {}
    for seed in seeds:
        for method in methods:
            if verbose:
                print(f"[compare-saliency] seed {seed}: {method}", flush=True)
            maps = None
            for score in ("deletion", "insertion", "road"):
                if score not in score_list:
                    continue
                key = (_stored(method), score, 0, seed)
                got = store.get(key)
                if got is None:
                    if maps is None:
                        maps = maps_for(method, x, target, "test", seed)
                    t0 = time.perf_counter()
                    if score == "road":
                        r = road(
                            model,
                            x,
                            maps,
                            target=target,
                            fractions=fractions,
                            input_norm=norm,
                            batch_size=max(batch_size, 128),
                            seed=seed,
                            progress=verbose,
                        )
                        got = r
                    else:
                        fn = deletion if score == "deletion" else insertion
                        sub = deletion_baseline if score == "deletion" else insertion_start
                        r = fn(
                            model,
                            x,
                            maps,
                            target=target,
                            steps=steps,
                            substrate=sub,
                            input_norm=norm,
                            batch_size=batch_size,
                            seed=seed,
                            progress=verbose,
                        )
                        # per-image AUCs: the per-image spread and the paired comparison need them
                        got = {
                            "auc": float(r["auc"].mean()),
                            "auc_per_image": r["auc"].tolist(),
                            "fractions": r["fractions"].tolist(),
                            "curve": r["curves"].mean(0).tolist(),
                        }
                    got["seconds"] = round(time.perf_counter() - t0, 2)
                    store.put(key, got)
                per_seed.setdefault((method, score), []).append(got)
        if "roar" in score_list:
            _roar_units(
                run,
                model,
                train,
                test,
                methods,
                ks,
                seed,
                roar_epochs,
                norm,
                store,
                maps_for,
                per_seed,
                device,
                verbose,
            )

    # ---- aggregate ------------------------------------------------------------------------------
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
                    **_image_spread(_per_image(units, int(x.shape[0]))),
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
    paired, paired_info = _paired_section(results, methods, score_list)
    if verbose:
        for score, rows in paired.items():
            old = [m for m, e in rows.items() if e.get("missing")]
            if old:
                print(
                    f"[compare-saliency] {score}: no paired comparison for {', '.join(old)}: {rows[old[0]]['missing']}",
                    flush=True,
                )
    from ._version import __version__

    result = {
        "format": "cladec-saliency",
        "format_version": 1,
        "cladec_version": __version__,
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "run": str(run.path),
        "dataset": {"name": ds_name, "split": "test", "n": int(x.shape[0]), "image_shape": list(x.shape[1:])},
        "layer": run.layer,
        "gradcam_layer": gc_layer,
        "alpha": run.alpha,
        "classifier": {
            "arch": run.classifier_info.get("arch"),
            "arch_kwargs": run.classifier_info.get("arch_kwargs"),
            "accuracy_on_scored_images": float((target.cpu() == y).float().mean()),
        },
        "methods": methods,
        "cladec_default_variant": DEFAULT_VARIANT,
        "scores": score_list,
        "seeds": seeds,
        "roar_k": ks,
        "settings": {
            "target": "the classifier's prediction on the clean image",
            "steps": steps,
            "deletion_baseline": deletion_baseline,
            "insertion_start": insertion_start,
            "road_fractions": list(fractions),
            "road_noise": 0.01,
            "roar_epochs": _roar_epochs(run, roar_epochs) if "roar" in score_list else None,
            "roar_train_images": len(train) if (train is not None and "roar" in score_list) else None,
            "roar_fill": "per-channel training-set mean",
        },
        "results": results,
        "paired": paired,
        "paired_info": paired_info,
        "device": str(next(model.parameters()).device),
        "seconds": round(time.perf_counter() - t_start, 1),
    }
    write_json(out / "results.json", result)
    _write_csv(out / "results.csv", result)
    try:
        _plot_curves(out / "curves.png", result)
        x_e, x_r = (
            reconstruct_pair(x[:6], run.cladec, run.refae)
            if run.refae is not None
            else (run.cladec.reconstruct(x[:6]), None)
        )
        first_maps = {m: maps_for(m, x, target, "test", seeds[0])[:6] for m in methods}
        _plot_maps(out / "maps.png", x[:6], x_r, x_e, first_maps, test.classes, target[:6].cpu())
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    return result


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``out/settings.json``; refuse an ``out`` whose stored results used other ones."""
    from ._io import read_json, write_json

    path = out / "settings.json"
    if path.is_file():
        old = read_json(path, "comparison settings")
        diff = [f"{k}: {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
        if diff:
            raise ConfigError(
                f"{out} holds results computed with other settings ({'; '.join(diff)}); give a new --out, or "
                "delete it to start over"
            )
        return
    if out.is_dir() and any(p.name in ("units", "maps") for p in out.iterdir()):
        raise ConfigError(
            f"{out} holds results of unknown settings (no settings.json, an older cladec?); give a "
            "new --out, or delete it to start over"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_json(path, settings)


def _stored(method: str) -> str:
    """Name under which a method's maps and units are stored: ``cladec`` is stored as its variant, so a
    changed default never reuses another variant's results."""
    if method == "cladec":
        from .relevance import DEFAULT_VARIANT

        return f"cladec-{DEFAULT_VARIANT}"
    return method


def _roar_epochs(run: Any, roar_epochs: int | None) -> int:
    if roar_epochs is not None:
        if isinstance(roar_epochs, bool) or not isinstance(roar_epochs, int) or roar_epochs < 1:
            raise ConfigError(f"roar_epochs must be a positive integer, got {roar_epochs!r}")
        return roar_epochs
    hist = (run.classifier_info or {}).get("history") or {}
    e = hist.get("epoch") if isinstance(hist, dict) else None
    return len(e) if e else 5


def _roar_units(
    run, model, train, test, methods, ks, seed, roar_epochs, norm, store, maps_for, per_seed, device, verbose
) -> None:
    from .classifier import predict
    from .models import create_model
    from .scores import roar_accuracy

    info = run.classifier_info or {}
    arch, kw = info.get("arch"), info.get("arch_kwargs")
    if not isinstance(arch, str) or not isinstance(kw, dict):
        raise ConfigError(
            "ROAR retrains the classifier from scratch and needs a checkpoint classifier "
            "(made with `cladec train-classifier`); this run's classifier has no recorded architecture"
        )
    epochs = _roar_epochs(run, roar_epochs)
    hist = info.get("history") or {}
    lr = float(hist["lr"][0]) if isinstance(hist, dict) and hist.get("lr") else 0.1
    xtr, ytr = train.tensors()
    xte, yte = test.tensors()
    fill = xtr.mean((0, 2, 3))
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda" and dev.index is None:  # an explicit index: "cuda" != "cuda:0" in device checks
        dev = torch.device("cuda", torch.cuda.current_device())

    def build():
        return create_model(arch, **kw)

    def unit(k, tr_maps=None, te_maps=None):
        r = roar_accuracy(
            build,
            (xtr, ytr),
            (xte, yte),
            k=k,
            train_maps=tr_maps,
            test_maps=te_maps,
            epochs=epochs,
            seed=seed,
            input_norm=norm,
            fill=fill,
            device=dev,
            train_kwargs={"lr": lr},
            verbose=verbose,
        )
        return r

    base = store.run(("baseline", "roar", 0, seed), lambda: unit(0))
    for method in methods:
        per_seed.setdefault((method, "roar"), []).append(base)
        todo = [k for k in ks if k > 0]
        if not todo:
            continue
        tr_maps = te_maps = None
        for k in todo:
            key = (_stored(method), "roar", k, seed)
            got = store.get(key)
            if got is None:
                if tr_maps is None:
                    if verbose:
                        print(f"[compare-saliency] ROAR maps for {method} on {len(xtr)} training images", flush=True)
                    tr_tgt = predict(model, xtr, input_norm=norm)
                    tr_maps = maps_for(method, xtr, tr_tgt, f"train{len(xtr)}", seed)
                    te_tgt = predict(model, xte, input_norm=norm)
                    te_maps = maps_for(method, xte, te_tgt, "test", seed)
                got = unit(k, tr_maps, te_maps)
                store.put(key, got)
            per_seed[(method, "roar")].append(got)


# ---------------------------------------------------------------------------------------------------
# outputs
# ---------------------------------------------------------------------------------------------------


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


def _write_csv(path: Path, result: dict) -> None:
    import csv
    import io

    from ._io import write_bytes

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


def _savefig(fig, path: Path) -> None:
    from ._io import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _plot_curves(path: Path, result: dict) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, str | None]] = []  # (title, score, sub-curve)
    sc = result["scores"]
    if "deletion" in sc:
        panels.append(("deletion (↓ AUC)", "deletion", None))
    if "insertion" in sc:
        panels.append(("insertion (↑ AUC)", "insertion", None))
    if "road" in sc:
        panels.append(("ROAD MoRF (↓)", "road", "morf"))
        panels.append(("ROAD LeRF (↑)", "road", "lerf"))
    if "roar" in sc:
        panels.append(("ROAR test accuracy (↓)", "roar", None))
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels), 3.1), squeeze=False)
    for ax, (title, score, sub) in zip(axes[0], panels, strict=True):
        ax.set_prop_cycle(color=list(plt.cm.tab20.colors))  # type: ignore[attr-defined]  # a ListedColormap
        for method, r in result["results"].items():
            if score not in r:
                continue
            e = r[score]
            style: dict[str, Any] = dict(lw=2.2) if method.startswith("cladec") else dict(lw=1.0)
            if method in ("random", "sobel"):
                style["ls"] = "--"
            if score in ("deletion", "insertion"):
                ax.plot(e["fractions"], e["curve"], label=f"{method} ({e['auc_mean']:.3f})", **style)
                ax.set_xlabel("fraction of pixels")
                ax.set_ylabel("p(target)")
            elif score == "road":
                ax.plot(e["fractions"], e[sub], marker=".", label=method, **style)
                ax.set_xlabel("fraction removed")
                ax.set_ylabel("accuracy (target)")
            else:
                ax.plot(e["k"], e["accuracy_mean"], marker=".", label=method, **style)
                ax.set_xlabel("k (% removed)")
                ax.set_ylabel("test accuracy after retraining")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=6)
    if len(panels) > 1:
        axes[0][1].legend(fontsize=6)
    fig.suptitle(f"{result['dataset']['name']}, layer {result['layer']}, n = {result['dataset']['n']}", fontsize=9)
    fig.tight_layout()
    _savefig(fig, path)
    plt.close(fig)


def _plot_maps(path: Path, x, x_r, x_e, maps: dict, classes, target) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    def show(ax, img):
        a = img.detach().float().clamp(0, 1).cpu()
        if a.shape[0] == 1:
            ax.imshow(a[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(a.permute(1, 2, 0).numpy())

    cols = [("input", None), ("RefAE x̂_R", None), ("ClaDec x̂_E", None)] + [(m, m) for m in maps]
    rows = x.shape[0]
    fig, axes = plt.subplots(rows, len(cols), figsize=(1.15 * len(cols), 1.2 * rows + 0.3), squeeze=False)
    for i in range(rows):
        for j, (title, m) in enumerate(cols):
            ax = axes[i][j]
            ax.axis("off")
            if j == 0:
                show(ax, x[i])
                name = classes[int(target[i])] if classes else str(int(target[i]))
                ax.text(0.5, -0.05, f"pred: {name}"[:16], transform=ax.transAxes, ha="center", va="top", fontsize=5)
            elif j == 1:
                if x_r is not None:
                    show(ax, x_r[i])
            elif j == 2:
                show(ax, x_e[i])
            else:
                mp = maps[m][i].float().cpu()
                lim = float(mp.abs().max()) or 1.0
                if float(mp.min()) < 0:
                    ax.imshow(mp.numpy(), cmap="bwr", vmin=-lim, vmax=lim)
                else:
                    ax.imshow(mp.numpy(), cmap="inferno", vmin=0, vmax=lim)
            if i == 0:
                ax.set_title(title, fontsize=6)
    fig.tight_layout(pad=0.3)
    _savefig(fig, path)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------------


def register(subparsers: Any) -> None:
    """Add the ``compare-saliency`` subcommand to an argparse ``subparsers`` object.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None (the parser's ``func`` is :func:`cmd_compare_saliency`).

    Examples:
        >>> import argparse
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> p.parse_args(["compare-saliency", "--run", "r", "--out", "c"]).methods
        'cladec,saliency,input-x-gradient,integrated-gradients,guided-backprop,gradcam,guided-gradcam,occlusion,random,sobel'
    """
    p = subparsers.add_parser(
        "compare-saliency",
        help="score ClaDec relevance maps against saliency methods (deletion/insertion, ROAD, ROAR)",
        description="Compute ClaDec relevance maps and captum saliency baselines for a run's classifier and "
        "score them by deletion/insertion AUC, ROAD and ROAR. Writes results.json, results.csv, curves.png "
        "and maps.png to --out; finished units are kept there and skipped when run again.",
    )
    p.add_argument("--run", required=True, help="run directory (made by `cladec fit`)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dataset", default=None, help="data set (default: the run's)")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated methods: cladec, cladec-<variant>, saliency, input-x-gradient, "
        "integrated-gradients, guided-backprop, gradcam, guided-gradcam, occlusion, random, sobel",
    )
    p.add_argument(
        "--scores",
        default="deletion,insertion,road",
        help="comma-separated scores: deletion, insertion, road, roar (default: all but roar)",
    )
    p.add_argument("--n", type=_pos_int, default=200, help="test images scored (200)")
    p.add_argument("--roar-k", default="10,30,50,70,90", help="ROAR percentages in [0, 100) (10,30,50,70,90)")
    p.add_argument(
        "--roar-epochs",
        type=_pos_int,
        default=None,
        help="epochs of each ROAR retraining (default: the classifier's own)",
    )
    p.add_argument("--seeds", type=csv_list(seed_int, "--seeds"), default=[0], help="comma-separated seeds (0)")
    p.add_argument("--data-root", default=None, help="data root (default: the run's, else $CLADEC_DATA)")
    p.add_argument("--limit", type=_pos_int, default=5000, help="training images for ROAR retraining (5000)")
    p.add_argument("--steps", type=_pos_int, default=32, help="deletion/insertion steps (32)")
    p.add_argument(
        "--insertion-start",
        default="zero",
        choices=["zero", "blur", "mean"],
        help="image insertion starts from (zero = black, default)",
    )
    p.add_argument(
        "--deletion-baseline",
        default="zero",
        choices=["zero", "blur", "mean"],
        help="what deleted pixels become (zero = black, default)",
    )
    p.add_argument(
        "--gradcam-layer",
        default=None,
        help="layer for Grad-CAM / guided Grad-CAM, with a spatial map larger than 1×1 (default: the "
        "run's layer if it has one, else the classifier's last layer that has one)",
    )
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compare_saliency)


def cmd_compare_saliency(args: argparse.Namespace) -> int:
    """Handler of ``cladec compare-saliency``.

    Args:
        args: The parsed arguments (see :func:`register`).

    Returns:
        0 on success (errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> from cladec.cli import build_parser
        >>> args = build_parser().parse_args(["compare-saliency", "--run", str(run_dir), "--out", "cmp",
        ...                                   "--methods", "cladec,gradcam", "--scores", "deletion", "--n", "8",
        ...                                   "--steps", "8", "--quiet"])
        >>> cmd_compare_saliency(args)
        method ...
        cladec ...
        gradcam ...
        0
    """
    from .saliency import canonical_method
    from .scores import check_roar_k, check_scores

    # validate before loading anything
    methods = [canonical_method(m) for m in args.methods.split(",") if m.strip()]
    scores = check_scores(args.scores)
    ks = check_roar_k(args.roar_k)
    res = compare_saliency(
        args.run,
        out=args.out,
        methods=methods,
        scores=scores,
        n=args.n,
        roar_k=ks,
        roar_epochs=args.roar_epochs,
        roar_train_limit=args.limit,
        seeds=args.seeds,
        dataset=args.dataset,
        data_root=args.data_root,
        steps=args.steps,
        insertion_start=args.insertion_start,
        deletion_baseline=args.deletion_baseline,
        device=args.device,
        layer=args.gradcam_layer,
        verbose=not args.quiet,
    )
    print(format_table(res))
    print(f"wrote {args.out}")
    return 0
