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

import datetime as _dt
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import positive_int
from .._errors import ConfigError, SaveFormatError
from .._io import file_sha256, load_tensors, read_json, save_tensors, write_json
from .._version import __version__
from ..data.load import load_dataset
from ..data.sizes import check_dataset_fits
from ..defaults import DEFAULT_METHODS
from ..models import create_model, load_model
from ..models.predict import predict
from ..models.sources import library_source
from ..runs import Run, load_run
from .baselines import gradcam_layer, saliency_maps
from .methods import DEFAULT_VARIANT, canonical_method, stored_name
from .plots import plot_curves, plot_maps
from .relevance import reconstruct_pair
from .results import aggregate, paired_section, write_csv
from .road import DEFAULT_ROAD_FRACTIONS, road
from .roar import check_roar_k, roar_accuracy
from .scores import check_scores, deletion, insertion
from .units import UnitStore

__all__ = ["compare_saliency"]


def _load_maps(path: Path) -> torch.Tensor | None:

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
        insertion_start: ``zero`` (default), ``blur`` or ``mean`` (see :mod:`cladec.saliency.scores`).
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
        fname = f"{stored_name(method)}__{tag}" + (f"__s{seed}" if seeded else "") + ".safetensors"
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

    per_seed: dict[tuple[str, str], list] = {}
    for seed in seeds:
        for method in methods:
            if verbose:
                print(f"[compare-saliency] seed {seed}: {method}", flush=True)
            maps = None
            for score in ("deletion", "insertion", "road"):
                if score not in score_list:
                    continue
                key = (stored_name(method), score, 0, seed)
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

    results = aggregate(per_seed, methods, score_list, int(x.shape[0]), fractions)
    paired, paired_info = paired_section(results, methods, score_list)
    if verbose:
        for score, rows in paired.items():
            old = [m for m, e in rows.items() if e.get("missing")]
            if old:
                print(
                    f"[compare-saliency] {score}: no paired comparison for {', '.join(old)}: {rows[old[0]]['missing']}",
                    flush=True,
                )

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
    write_csv(out / "results.csv", result)
    try:
        plot_curves(out / "curves.png", result)
        x_e, x_r = (
            reconstruct_pair(x[:6], run.cladec, run.refae)
            if run.refae is not None
            else (run.cladec.reconstruct(x[:6]), None)
        )
        first_maps = {m: maps_for(m, x, target, "test", seeds[0])[:6] for m in methods}
        plot_maps(out / "maps.png", x[:6], x_r, x_e, first_maps, test.classes, target[:6].cpu())
    finally:
        import matplotlib.pyplot as plt

        plt.close("all")
    return result


def _check_settings(out: Path, settings: dict[str, Any]) -> None:
    """Record ``settings`` in ``out/settings.json``; refuse an ``out`` whose stored results used other ones."""

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


def _roar_epochs(run: Any, roar_epochs: int | None) -> int:
    if roar_epochs is not None:
        return positive_int("roar_epochs", roar_epochs)
    hist = (run.classifier_info or {}).get("history") or {}
    e = hist.get("epoch") if isinstance(hist, dict) else None
    return len(e) if e else 5


def _roar_units(
    run, model, train, test, methods, ks, seed, roar_epochs, norm, store, maps_for, per_seed, device, verbose
) -> None:

    info = run.classifier_info or {}
    arch, kw = info.get("arch"), info.get("arch_kwargs")
    if not isinstance(arch, str) or not isinstance(kw, dict):
        raise ConfigError(
            "ROAR retrains the classifier from scratch and needs a checkpoint classifier "
            "(made with `cladec train-classifier`) or a torchvision:/timm: model; this run's classifier has no "
            "recorded architecture"
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

    def build():  # a torchvision/timm model (a source, or a checkpoint of one) from its library, fresh
        return load_model(arch, init_seed=None, **kw) if library_source(arch) else create_model(arch, **kw)

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
            key = (stored_name(method), "roar", k, seed)
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
