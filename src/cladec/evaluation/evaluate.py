"""Evaluating one run directory: :func:`evaluate_run` (what it computes and writes is described in
:mod:`cladec.evaluation`)."""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .._errors import ConfigError, DataError
from .._io import check_replaceable
from .._tensors import device as checked_device
from .._version import __version__
from ..data.load import load_dataset
from ..data.sizes import check_dataset_fits
from ..models import create_model, list_models
from ..models.predict import predict
from ..models.reinit import reinitialise
from ..models.training import train_classifier
from ..runs import Run, load_run
from . import metrics as M
from .outputs import PER_CLASS_COLUMNS, write_outputs

__all__ = ["evaluate_run", "EVAL_FORMAT"]

EVAL_FORMAT = "cladec-eval"

SETS = ("original", "cladec", "refae")


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[cladec evaluate] {msg}", flush=True)


def _load(run_or_path: Any, device: str | None):

    if isinstance(run_or_path, Run):
        if device is not None:  # a loaded run is used where it is: a device it is not on would be ignored
            want = checked_device(device, "device")
            has = next((p.device for p in run_or_path.classifier.parameters()), torch.device("cpu"))
            if not _same_device(want, has):
                raise ConfigError(
                    f"device={str(device)!r}, but the given Run is loaded on {has} and is used where "
                    "it is: drop device, or pass the run directory (or load_run(path, "
                    f"device={str(device)!r}))"
                )
        return run_or_path
    if isinstance(run_or_path, (str, os.PathLike)):
        return load_run(run_or_path, device=device)
    raise ConfigError(f"run_or_path must be a run directory or a cladec.runs.Run, got {type(run_or_path).__name__}")


def _same_device(a: torch.device, b: torch.device) -> bool:
    """``cuda`` and ``cuda:<current>`` are the same device."""

    def norm(d: torch.device) -> torch.device:
        if d.type == "cuda" and d.index is None:
            return torch.device("cuda", torch.cuda.current_device())
        return d

    return a.type == b.type and (a.type != "cuda" or norm(a) == norm(b))


def _load_split(run, split: str, *, dataset: str | None, limit: int | None, data_root: str | None):
    """Load a split with the run's resizing, checking the image shape against the run."""

    ds_cfg = run.config.get("dataset", {})
    check_dataset_fits(
        dataset or ds_cfg.get("name"),
        [(split, limit)],
        ds_cfg.get("size"),
        what=f"the run's image size {ds_cfg.get('size')} (run.json dataset.size)",
    )
    if dataset is None:
        ds = run.dataset(split, limit=limit, data_root=data_root)
    else:
        root = data_root if data_root is not None else ds_cfg.get("root")
        ds = load_dataset(dataset, root=root, split=split, size=ds_cfg.get("size"), limit=limit)
    want = tuple(run.image_shape)
    if tuple(ds.image_shape) != want:
        raise DataError(
            f"the data set {ds.name!r} ({split}) has images of shape {tuple(ds.image_shape)} (C, H, W) but the run "
            f"{run.path} was fitted on images of shape {want} (data set {ds_cfg.get('name')!r}); evaluate it on "
            "that data set (or one with the same channels and size)"
        )
    n_classes = len(ds_cfg.get("classes") or ds.classes)
    if ds.num_classes != n_classes:
        raise DataError(
            f"the data set {ds.name!r} has {ds.num_classes} classes but the run's classifier was fitted on "
            f"{n_classes}; use a data set with the same classes"
        )
    return ds


def _fresh_classifier(run, eval_arch: str | None, eval_arch_kwargs: dict | None, image_shape, num_classes: int):
    """A freshly initialised classifier for the evaluation classifier (see :func:`evaluate_run`)."""

    info = run.classifier_info or {}
    if eval_arch is not None:
        kw = dict(eval_arch_kwargs or {})
        return create_model(eval_arch, in_channels=int(image_shape[0]), num_classes=num_classes, **kw), eval_arch
    arch, kwargs = info.get("arch"), info.get("arch_kwargs")
    if isinstance(arch, str) and isinstance(kwargs, dict):
        if arch.lower() in list_models():
            return create_model(arch, **kwargs), arch
    # a user's own model: copy the architecture and re-initialise every parameter

    model = reinitialise(copy.deepcopy(run.classifier), seed=None)
    return model, str(arch or type(run.classifier).__name__)


def evaluate_run(
    run_or_path: Any,
    *,
    split: str = "test",
    limit: int | None = None,
    data_root: str | None = None,
    dataset: str | None = None,
    eval_classifier: bool = True,
    eval_epochs: int | None = None,
    eval_arch: str | None = None,
    eval_arch_kwargs: dict | None = None,
    train_limit: int | None = None,
    sets: Sequence[str] | None = None,
    refae: Any = None,
    refae_source: str | None = None,
    out: str | os.PathLike | None = None,
    write: bool = True,
    seed: int = 0,
    batch_size: int = 256,
    device: str | None = None,
    verbose: bool = True,
) -> dict:
    """Evaluate a run's ClaDec and RefAE on a split of its data set and write the results.

    Args:
        run_or_path: A run directory (see :mod:`cladec.runs`) or a loaded :class:`cladec.runs.Run`.
        split: The split to evaluate on (``"test"``).
        limit: Use the first ``limit`` images of ``split`` (default: all).
        data_root: Data root (default: the one recorded in the run, else ``$CLADEC_DATA`` / user cache).
        dataset: Evaluate on another data set name than the run's (same image shape and class count).
        eval_classifier: Train and test the evaluation classifiers (the slow part; one per image set).
        eval_epochs: Epochs of each evaluation classifier (default: the run's decoder ``epochs``).
        eval_arch: Registered model name of the evaluation classifier (default: the architecture and
            arguments of the run's classifier from its checkpoint; for a user's own model, a
            re-initialised copy of it).
        eval_arch_kwargs: Extra arguments for ``eval_arch`` (e.g. ``{"width": 0.5}``).
        train_limit: Training images for the evaluation classifiers (default: the run's ``limit``).
        sets: Image sets to evaluate, a subset of ``("original", "cladec", "refae")`` (default: all
            available; ``"refae"`` only if the run has one). The classifier's accuracy on the originals is
            always reported; an evaluation classifier on the originals is trained only when ``sets`` is
            ``None`` or names ``"original"``.
        refae: A fitted :class:`cladec.RefAE` to use instead of the run's own (e.g. one shared by the
            cells of a sweep).
        refae_source: Where ``refae`` came from, recorded in ``metrics.json`` (``"refae_source"``); only
            with ``refae``.
        out: Output directory (default: ``<run>/eval``); replaced atomically. Only with ``write=True``.
        write: Write the output directory (``False``: only return the results).
        seed: Seed of the evaluation classifiers.
        batch_size: Images per forward pass when reconstructing.
        device: Device to load a run directory on (default: CUDA if available, else CPU). A loaded
            :class:`~cladec.runs.Run` is used on the device it is on: ``device`` must then be that one.
        verbose: Print progress.

    Returns:
        The content of ``metrics.json``: ``{"format": "cladec-eval", "run", "layer", "alpha", "dataset",
        "sets": {set: {"n", "mse", "mse_std", "psnr", "psnr_std", "ssim", "ssim_std", "accuracy",
        "agreement", "eval_accuracy", "eval_accuracy_on_original"}}, "eval_classifier": {...} | None,
        "per_class": {set: {class: {...}}}, "summary": {"mse_cladec", "accuracy_cladec", ...}, "collapsed",
        "timings", "out"}``. For ``original``, MSE is 0, SSIM 1 and PSNR ``None``.

    Raises:
        SaveFormatError: ``run_or_path`` is not a run directory.
        DataError: The data set's image shape or class count does not match the run.
        ConfigError: Bad arguments, or arguments that would be ignored (``refae_source`` without ``refae``,
            ``out`` with ``write=False``, a ``device`` other than a given Run's).

    Examples:
        >>> res = evaluate_run(run_dir, limit=100, eval_classifier=False, write=False, verbose=False)
        >>> res["layer"], sorted(res["sets"]), res["sets"]["cladec"]["n"]
        ('conv2', ['cladec', 'original', 'refae'], 100)
        >>> res["sets"]["original"]["mse"], res["sets"]["cladec"]["mse"] < 0.2
        (0.0, True)
        >>> res = evaluate_run(run_dir, limit=100, eval_epochs=1, train_limit=300, write=False, verbose=False)
        >>> sorted(res["eval_classifier"]["history"]), res["eval_classifier"]["n_train"]  # one per image set
        (['cladec', 'original', 'refae'], 300)
        >>> 0 <= res["sets"]["cladec"]["eval_accuracy"] <= 1
        True
    """

    t_start = time.perf_counter()
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    if split == "train" and eval_classifier:
        raise ConfigError(
            "the evaluation classifiers are trained on the training split, so they cannot be tested "
            "on it: use split='test', or eval_classifier=False (--no-eval-classifier) with split='train'"
        )
    for name, v in (("limit", limit), ("train_limit", train_limit), ("eval_epochs", eval_epochs)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"{name} must be a positive integer or None, got {v!r}")
    if not eval_classifier:  # options of the evaluation classifiers would be ignored without them
        given = [
            n
            for n, v in (
                ("eval_epochs", eval_epochs),
                ("eval_arch", eval_arch),
                ("eval_arch_kwargs", eval_arch_kwargs),
                ("train_limit", train_limit),
            )
            if v is not None
        ]
        if given:
            raise ConfigError(
                f"{', '.join(given)} set the evaluation classifiers, which eval_classifier=False turns "
                "off: drop them, or keep eval_classifier=True"
            )
    # options that would be ignored are refused, before any work
    if refae_source is not None and refae is None:
        raise ConfigError(
            "refae_source says where refae= came from, but no refae was given (the run's own RefAE "
            "is recorded as 'run'): drop refae_source, or pass the RefAE as refae="
        )
    if out is not None and not write:
        raise ConfigError(
            f"out={str(out)!r} names the output directory, but write=False writes nothing: drop out, or keep write=True"
        )
    run = _load(run_or_path, device)
    if write:  # a folder that is not an earlier evaluation is refused before any work
        check_replaceable(
            Path(out) if out is not None else Path(run.path) / "eval", "metrics.json", "cladec evaluation"
        )
    ref = refae if refae is not None else run.refae
    if ref is not None and ref.layer != run.cladec.layer:
        raise ConfigError(f"the RefAE explains layer {ref.layer!r} but the run's ClaDec explains {run.cladec.layer!r}")
    available = ["original", "cladec"] + (["refae"] if ref is not None else [])
    if sets is None:
        chosen = available
    else:
        bad = [s for s in sets if s not in SETS]
        if bad:
            raise ConfigError(f"unknown image set(s) {bad}; valid: {list(SETS)}")
        if "refae" in sets and ref is None:
            raise ConfigError(f"the run {run.path} has no RefAE (fitted with refae=False): drop 'refae' from sets")
        chosen = [s for s in SETS if s in sets or s == "original"]
    # evaluation classifiers are trained only for the sets asked for (originals: only when asked or by default)
    eval_for = list(chosen) if sets is None else [s for s in chosen if s in sets]

    test = _load_split(run, split, dataset=dataset, limit=limit, data_root=data_root)
    classes = list(test.classes)
    x, y = test.tensors()
    norm = run.input_norm
    model = run.classifier
    _log(verbose, f"{run.path}: layer {run.layer}, α = {run.alpha:g}, {len(test)} {split} images")

    def recon(s: str, xs: torch.Tensor) -> torch.Tensor:
        if s == "original":
            return xs
        e = run.cladec if s == "cladec" else ref
        return e.reconstruct(xs, batch_size=batch_size).cpu()

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    images = {s: recon(s, x) for s in chosen}
    timings["reconstruct_s"] = round(time.perf_counter() - t0, 2)
    preds = {s: predict(model, images[s], input_norm=norm) for s in chosen}
    correct = {s: (preds[s] == y) for s in chosen}
    agree = {s: (preds[s] == preds["original"]) for s in chosen}

    result_sets: dict[str, dict] = {}
    per_image: dict[str, dict[str, torch.Tensor]] = {}
    for s in chosen:
        if s == "original":
            rm: dict[str, Any] = {
                "n": len(test),
                "mse": 0.0,
                "mse_std": 0.0,
                "psnr": None,
                "psnr_std": None,
                "ssim": 1.0,
                "ssim_std": 0.0,
            }
            per_image[s] = {}
        else:
            per_image[s] = M.reconstruction_metrics(x, images[s], per_image=True)
            rm = M.reconstruction_metrics(x, images[s])
        rm["accuracy"] = M.accuracy(preds[s], y)
        rm["agreement"] = M.agreement(preds[s], preds["original"])
        rm["eval_accuracy"] = None
        rm["eval_accuracy_on_original"] = None
        result_sets[s] = rm

    # -- evaluation classifiers -------------------------------------------------------------------
    eval_info = None
    eval_correct: dict[str, torch.Tensor] = {}
    eval_correct_orig: dict[str, torch.Tensor] = {}
    if eval_classifier:
        t0 = time.perf_counter()
        epochs = int(eval_epochs if eval_epochs is not None else (run.config.get("epochs") or 5))
        tl = train_limit if train_limit is not None else run.config.get("dataset", {}).get("limit")
        train = _load_split(run, "train", dataset=dataset, limit=tl, data_root=data_root)
        xtr, ytr = train.tensors()
        arch_name = None
        histories = {}
        for s in eval_for:
            _log(verbose, f"evaluation classifier on {s} images ({len(train)} training images, {epochs} epoch(s))")
            xs_train = recon(s, xtr)
            torch.manual_seed(seed)  # every image set's classifier starts from the same weights, whatever ran before
            net, arch_name = _fresh_classifier(run, eval_arch, eval_arch_kwargs, run.image_shape, len(classes))
            dev = next(model.parameters()).device if any(True for _ in model.parameters()) else torch.device("cpu")
            net.to(dev)
            hist = train_classifier(net, (xs_train, ytr), epochs, input_norm=norm, seed=seed, verbose=False)
            histories[s] = {k: hist[k] for k in ("train_loss", "train_acc") if k in hist}
            p = predict(net, images[s], input_norm=norm)
            eval_correct[s] = p == y
            po = p if s == "original" else predict(net, x, input_norm=norm)
            eval_correct_orig[s] = po == y
            result_sets[s]["eval_accuracy"] = M.accuracy(p, y)
            result_sets[s]["eval_accuracy_on_original"] = M.accuracy(po, y)
            del net, xs_train
        timings["eval_classifier_s"] = round(time.perf_counter() - t0, 2)
        eval_info = {
            "arch": arch_name,
            "arch_kwargs": dict(eval_arch_kwargs or {}) if eval_arch else None,
            "epochs": epochs,
            "n_train": len(train),
            "train_limit": tl,
            "seed": seed,
            "input_norm": norm,
            "history": histories,
            "note": "one fresh classifier per image set, trained on that set made from the training split and "
            "tested on the same set made from the evaluation split (eval_accuracy) and on the original "
            "images (eval_accuracy_on_original)",
        }

    # -- per class ------------------------------------------------------------------------------------
    pc: dict[str, dict[str, dict]] = {}
    for s in chosen:
        cols: dict[str, dict] = {}
        for name, vals in per_image[s].items():
            cols[name] = M.per_class(vals, y, classes)
        cols["accuracy"] = M.per_class(correct[s], y, classes)
        cols["agreement"] = M.per_class(agree[s], y, classes)
        if s in eval_correct:
            cols["eval_accuracy"] = M.per_class(eval_correct[s], y, classes)
            cols["eval_accuracy_on_original"] = M.per_class(eval_correct_orig[s], y, classes)
        pc[s] = {}
        for c in classes:
            row: dict[str, Any] = {"n": cols["accuracy"][c]["n"]}
            for k in PER_CLASS_COLUMNS:
                if k in cols:
                    row[k] = cols[k][c]["mean"]
                    if k in ("mse", "psnr", "ssim"):
                        row[f"{k}_std"] = cols[k][c]["std"]
                elif s == "original" and k in ("mse", "ssim"):
                    row[k] = 0.0 if k == "mse" else 1.0
                else:
                    row[k] = None
            pc[s][c] = row

    summary: dict[str, Any] = {"n": len(test)}
    for s in chosen:
        for k in ("mse", "psnr", "ssim", "accuracy", "agreement", "eval_accuracy", "eval_accuracy_on_original"):
            summary[f"{k}_{s}"] = result_sets[s][k]
    timings["total_s"] = round(time.perf_counter() - t_start, 2)

    out_path = Path(out) if out is not None else Path(run.path) / "eval"
    result = {
        "format": EVAL_FORMAT,
        "format_version": 1,
        "cladec_version": __version__,
        "run": str(Path(run.path).resolve()),
        "layer": run.layer,
        "alpha": run.alpha,
        "dataset": {
            "name": test.name,
            "split": split,
            "n": len(test),
            "limit": limit,
            "image_shape": list(test.image_shape),
            "classes": classes,
        },
        "refae_source": (
            str(refae_source)
            if refae is not None and refae_source is not None
            else ("given" if refae is not None else ("run" if ref is not None else None))
        ),
        "sets": result_sets,
        "eval_classifier": eval_info,
        "per_class": pc,
        "summary": summary,
        "collapsed": {
            "cladec": bool(getattr(run.cladec, "collapsed", False)),
            "refae": bool(getattr(ref, "collapsed", False)) if ref is not None else None,
        },
        "timings": timings,
        "out": str(out_path) if write else None,
    }
    if write:
        write_outputs(result, out_path)
        _log(verbose, f"wrote {out_path}")
    return result
