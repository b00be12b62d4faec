"""The end-to-end demo behind ``cladec demo``.

With no arguments and no network, :func:`run_demo`

1. trains the ClaDec paper's VGG-style classifier on ``fashion-mnist-mini`` (6,000 training / 1,000 test
   Fashion-MNIST images shipped inside the package),
2. fits ClaDec (α = 0.001) and the reference auto-encoder RefAE on two layers of it, the architecture's
   ``default_layers`` ``"last"`` and ``"middle"`` (``conv4`` and ``conv2`` for ``vgg-paper``),
3. writes a triplet grid (original | RefAE | ClaDec) per layer, ``summary.json`` and ``summary.txt``,
   and, when :mod:`cladec.report` is installed, an HTML report in ``report/``.

Output layout (``cladec-demo/`` by default)::

    classifier/               checkpoint (model.safetensors + classifier.json)
    runs/<layer>/             run directories (run.json, cladec/, refae/), one per layer
    triplets-<layer>.png      original | RefAE | ClaDec with true and predicted classes

(``<layer>`` is the layer's name, with characters other than ``A-Z a-z 0-9 _ . + -`` replaced by ``_``.)
    summary.json              accuracies, per-layer test MSE and accuracy on reconstructions, timings
    summary.txt               the same in words
    report/index.html         the HTML report (when available)
"""

from __future__ import annotations

import os
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import ConfigError
from ._io import atomic_dir, check_replaceable, read_json, write_bytes, write_json
from ._sampling import balanced_indices
from ._tensors import device as checked_device
from ._version import __version__
from .data.load import check_trainable, load_dataset
from .data.recorded import recorded_dataset_name
from .defaults import DEMO_SETTINGS
from .explainers.fitting import CollapseWarning
from .explanation import explain
from .models import create_model
from .models.checkpoint import dataset_entry, metrics_entry, save_classifier
from .models.training import train_classifier
from .runs import fit_run

__all__ = ["run_demo", "format_summary"]

_MARKER = ".cladec-demo"

_FORMAT = "cladec-demo"


def _check_out(out: Path) -> None:
    """Refuse an ``out`` the demo may not replace: a file, or a folder with other content than a demo's."""

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder; give a folder for the demo's output")
    if out.is_dir() and any(out.iterdir()) and not (out / _MARKER).is_file():
        raise ConfigError(
            f"--out {out} is a folder with other content that the demo would overwrite; give an empty or new "
            "folder (or one a previous `cladec demo` wrote)"
        )
    check_replaceable(out, _MARKER, "cladec demo folder")  # e.g. not the current folder, which cannot be swapped


def _file_stem(layer: str, taken: set[str]) -> str:
    """A file and folder name for ``layer``'s outputs (``runs/<stem>/``, ``triplets-<stem>.png``): the layer
    name itself when it is a plain name (``conv4``, ``layer4.1``), else with every character outside
    ``A-Z a-z 0-9 _ . + -`` replaced by ``_`` (a module name may hold ``/``, markup, spaces ...), never
    starting with a dot, and made unique among ``taken`` (which it is added to)."""
    import re

    stem = re.sub(r"[^A-Za-z0-9_.+-]", "_", layer)
    if not stem or stem.startswith("."):
        stem = "_" + stem
    base, k = stem, 2
    while stem in taken:
        stem, k = f"{base}-{k}", k + 1
    taken.add(stem)
    return stem


def _is_demo_entry(name: str) -> bool:
    """Whether a name in a demo folder is one of the demo's own outputs (replaced by the next demo)."""
    return name in (_MARKER, "classifier", "runs", "report", "summary.json", "summary.txt") or (
        name.startswith("triplets-") and name.endswith(".png")
    )


def _keep_user_entries(out: Path, new: Path) -> None:
    """Carry what a user added to an earlier demo folder (e.g. a compare-saliency output) into the new one.

    Files are hard-linked where the file system allows it (no copy of the data), else copied; the earlier
    folder is untouched until the new one replaces it.
    """
    import shutil

    if not out.is_dir():
        return

    def link_or_copy(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    for entry in out.iterdir():
        if _is_demo_entry(entry.name):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, new / entry.name, symlinks=True, copy_function=link_or_copy)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), new / entry.name)
        else:
            link_or_copy(str(entry), str(new / entry.name))


def _pct(v: float | None) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def format_summary(summary: dict[str, Any]) -> str:
    """The human-readable ``summary.txt`` of a demo.

    Args:
        summary: The dict :func:`run_demo` returns (also written as ``summary.json``).

    Returns:
        Plain text that states, per layer, whether RefAE reconstructs better than ClaDec and whether the
        classifier does better on ClaDec's reconstructions than on RefAE's.

    Examples:
        >>> import json
        >>> summary = json.load(open("cladec-demo/summary.json"))  # run_demo's: a minute  # doctest: +SKIP
        >>> print(format_summary(summary))  # of that demo  # doctest: +SKIP
    """
    ds, clf = summary["dataset"], summary["classifier"]
    shape = "×".join(map(str, ds["image_shape"]))
    lines = [
        f"ClaDec demo: {clf['arch']} classifier (width {clf['width']:g}) on {ds['name']} "
        f"({ds['n_train']} training / {ds['n_test']} test images, {shape}), α = {summary['alpha']:g}",
        "",
        f"Classifier test accuracy: {_pct(clf['test_accuracy'])} (chance: {_pct(1 / max(1, ds['num_classes']))}), "
        f"after {clf['epochs']} epoch(s).",
        "",
        "ClaDec decodes what the classifier keeps at a layer (decoder trained with (1 − α)·MSE + α·CE on the "
        "frozen classifier's activations); RefAE is the reference: the same architecture up to the layer, "
        "trained from scratch on reconstruction only. RefAE is expected to reconstruct better (lower MSE); the "
        "classifier is expected to do better on ClaDec's reconstructions, because they keep what it uses.",
    ]
    for L in summary["layers"]:
        role = f" ({L['role']} layer)" if L.get("role") else ""
        lines += ["", f"Layer {L['layer']}{role}, activations {'×'.join(map(str, L['activation_shape']))}:"]
        mse_e, mse_r = L["mse_cladec"], L.get("mse_refae")
        if mse_r is not None:
            verdict = "YES" if L["refae_reconstructs_better"] else "NO"
            lines.append(
                f"  Does RefAE reconstruct better than ClaDec?  {verdict}: test MSE RefAE {mse_r:.4f} vs "
                f"ClaDec {mse_e:.4f} (lower is better)."
            )
        else:
            lines.append(f"  Test MSE of ClaDec: {mse_e:.4f} (no RefAE fitted).")
        acc_o, acc_e, acc_r = L.get("accuracy_original"), L.get("accuracy_cladec"), L.get("accuracy_refae")
        if acc_r is not None:
            verdict = "YES" if L["classifier_better_on_cladec"] else "NO"
            lines.append(
                f"  Does the classifier do better on ClaDec's reconstructions?  {verdict}: accuracy "
                f"{_pct(acc_e)} on ClaDec's vs {_pct(acc_r)} on RefAE's (originals: {_pct(acc_o)})."
            )
        else:
            lines.append(f"  Classifier accuracy on ClaDec's reconstructions: {_pct(acc_e)} (originals {_pct(acc_o)}).")
        for kind, flag in (L.get("collapsed") or {}).items():
            if flag:
                lines.append(
                    f"  WARNING: {kind} collapsed to a nearly constant image; its numbers mean little "
                    "(train longer or on more images)."
                )
        t = L.get("timings", {})
        fit = (
            f"ClaDec + RefAE {t['cladec_refae_s']:.0f} s"
            if "cladec_refae_s" in t
            else f"ClaDec {t.get('cladec_s', 0):.0f} s, RefAE {t.get('refae_s', 0):.0f} s"
        )
        lines.append(f"  Triplets: {L['triplets']}   (fit: {fit})")
    tt = summary["timings"]
    lines += ["", f"Total time: {tt['total_s']:.0f} s (classifier {tt['classifier_s']:.0f} s) on {summary['device']}."]
    if summary.get("report"):
        lines.append(f"HTML report: {summary['report']}")
    lines += [
        "",
        "Files: classifier/ (checkpoint), runs/<layer>/ (ClaDec + RefAE, run.json), triplets-<layer>.png, "
        "summary.json.",
    ]
    return "\n".join(lines) + "\n"


def run_demo(
    out: str | os.PathLike = "cladec-demo",
    quick: bool = False,
    dataset: str = "fashion-mnist-mini",
    data_root: str | os.PathLike | None = None,
    *,
    device: str | None = None,
    arch: str = "vgg-paper",
    limit: int | None = None,
    test_limit: int | None = None,
    epochs: int | None = None,
    decoder_epochs: int | None = None,
    width: float | None = None,
    alpha: float = 0.001,
    n_images: int = 24,
    seed: int = 0,
    download: bool = False,
    report: bool = True,
    verbose: bool = True,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the whole ClaDec pipeline on a small data set and write its results to ``out``.

    Args:
        out: Output folder. The results are written to a temporary folder beside it that replaces ``out``
            only when they are complete (the HTML report is added after), so bad options, an error or an
            interruption leave an earlier demo's results as they were. A folder from an earlier demo
            (holding ``.cladec-demo``) gets the new results in place of its own; what a user added there
            (e.g. a compare-saliency output) is kept. Any other non-empty folder is refused.
        quick: Smaller settings (quarter-width classifier, 3,000 images, fewer epochs): under a minute on
            two CPU cores instead of a few minutes.
        dataset: ``"fashion-mnist-mini"`` (embedded, default) or any name :func:`cladec.data.load_dataset`
            accepts (``"fashion-mnist"``, ``"mnist"``, ``"cifar10"``, ``"imagefolder:PATH"``).
        data_root: Where a non-embedded data set lives (default: ``$CLADEC_DATA``, else the user cache).
        device: ``"cpu"``, ``"cuda"`` ... (default: CUDA if available, else CPU).
        arch: Classifier architecture (a registered name: ``vgg-paper``, ``resnet10``, ``resnet18``).
        limit: Training images (default in :data:`DEMO_SETTINGS`).
        test_limit: Test images (default in :data:`DEMO_SETTINGS`).
        epochs: Classifier epochs; ``decoder_epochs``: epochs of each ClaDec and RefAE.
        width: Classifier width multiplier.
        alpha: ClaDec's α (the paper's 0.001).
        n_images: Test images per triplet grid (spread evenly over the classes; 4 triplets a row) and in the
            report's gallery.
        seed: Seed for everything.
        download: Download a missing MNIST / Fashion-MNIST / CIFAR-10.
        report: Build ``out/report/`` when :mod:`cladec.report` is available.
        verbose: Progress bars and messages.
        log: Where messages go (default: ``print`` to stdout).

    Returns:
        The summary dict (also written to ``out/summary.json``), with the classifier's test accuracy,
        per layer the test MSE of ClaDec and RefAE and the classifier's accuracy on both
        reconstructions, file paths and timings.

    Raises:
        ConfigError, DataError: Unknown data set, architecture or device, missing data (the message says where
            it looked and how to get it), data a classifier cannot learn from (fewer than 2 classes, test
            classes without training images: :func:`cladec.data.check_trainable`), an ``out`` that is not a
            demo folder. All are checked before any
            training and before ``out`` is touched.

    Examples:
        >>> from cladec.demo import run_demo
        >>> s = run_demo("cladec-demo", quick=True)  # takes about a minute  # doctest: +SKIP
        >>> s["layers"][0]["refae_reconstructs_better"]  # of that demo  # doctest: +SKIP
        True
    """
    import torch

    say = log or (lambda s: print(s, flush=True))
    t_start = time.perf_counter()
    cfg = dict(DEMO_SETTINGS["quick" if quick else "full"])
    for k, v in (
        ("limit", limit),
        ("test_limit", test_limit),
        ("epochs", epochs),
        ("decoder_epochs", decoder_epochs),
        ("width", width),
    ):
        if v is not None:
            cfg[k] = v

    # -- every option is checked before any work, and before `out` is touched ---------------------
    out = Path(out)
    _check_out(out)
    if isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 1:
        raise ConfigError(f"n_images must be a positive integer, got {n_images!r}")
    dev = checked_device(device, "device")
    probe = create_model(arch, width=cfg["width"])  # an unknown architecture or width fails here, not after data
    default_layers = getattr(probe, "default_layers", None) or {}
    roles = [(r, default_layers[r]) for r in ("last", "middle") if r in default_layers]
    if not roles:
        raise ConfigError(f"architecture {arch!r} names no default layers ('last', 'middle') for the demo")
    del probe
    root = str(Path(data_root).expanduser().resolve()) if data_root is not None else None

    # -- data ------------------------------------------------------------------------------------
    train = load_dataset(dataset, root=root, split="train", limit=cfg["limit"], download=download)
    test = load_dataset(dataset, root=root, split="test", limit=cfg["test_limit"], download=download)
    check_trainable(train, test)  # one class, or test classes without training images: refused before training
    ds_name = recorded_dataset_name(train.name)  # imagefolder: an absolute path, valid from any folder
    torch.manual_seed(seed)
    model = create_model(arch, in_channels=train.image_shape[0], num_classes=train.num_classes, width=cfg["width"]).to(
        dev
    )
    say(
        f"cladec demo: {train.name}, {len(train)} training / {len(test)} test images "
        f"({'×'.join(map(str, train.image_shape))}), {arch} classifier, device {dev}" + (" [quick]" if quick else "")
    )

    # everything is written into a temporary folder that replaces `out` only when it is complete
    with atomic_dir(out, _MARKER, "cladec demo folder") as tmp:
        (tmp / _MARKER).write_text("written by `cladec demo`; the folder may be overwritten by the next demo\n")

        # -- classifier --------------------------------------------------------------------------
        say(f"[1/3] training the classifier ({cfg['epochs']} epochs) ...")
        t0 = time.perf_counter()
        hist = train_classifier(model, train, cfg["epochs"], test_data=test, seed=seed, device=dev, verbose=verbose)
        clf_s = time.perf_counter() - t0
        test_acc = float(hist["test_acc"][-1])
        say(f"      test accuracy {_pct(test_acc)} (chance {_pct(1 / train.num_classes)}), {clf_s:.0f} s")
        clf_tmp = tmp / "classifier"
        ds_info = dataset_entry(train, test, root=root, limit=cfg["limit"])
        save_classifier(clf_tmp, model.cpu(), dataset=ds_info, metrics=metrics_entry(hist, test, clf_s), history=hist)

        # -- ClaDec + RefAE per layer ------------------------------------------------------------
        xt, yt = test.tensors()
        pick = balanced_indices(yt, n_images, order="class")
        layers: list[dict[str, Any]] = []
        stems: set[str] = set()
        for role, layer in roles:
            stem = _file_stem(layer, stems)
            say(
                f"[2/3] layer {layer} ({role}): fitting ClaDec (α = {alpha:g}) and RefAE, "
                f"{cfg['decoder_epochs']} epochs each ..."
            )
            run_dir = tmp / "runs" / stem
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", CollapseWarning)  # recorded in run.json and stated in summary.txt
                run = fit_run(
                    run_dir,
                    classifier_dir=clf_tmp,
                    dataset=dataset,
                    layer=layer,
                    alpha=alpha,
                    epochs=cfg["decoder_epochs"],
                    refae=True,
                    seed=seed,
                    limit=cfg["limit"],
                    batch_size=cfg["batch_size"],
                    test_limit=cfg["test_limit"],
                    data_root=root,
                    device=str(dev),
                    verbose=verbose,
                )
            # the run finds its classifier by the relative path ../../classifier; its absolute fallback must
            # name where the classifier will be, not the temporary folder
            run_cfg = read_json(run_dir / "run.json", "cladec run file")
            run_cfg["classifier"]["abs_path"] = str(out.resolve() / "classifier")
            write_json(run_dir / "run.json", run_cfg)
            m = run.config["metrics"]
            png = tmp / f"triplets-{stem}.png"
            ex = explain(xt[pick], cladec=run.cladec, refae=run.refae, labels=yt[pick], classes=test.classes)
            ex.save_grid(png, columns=min(4, len(pick)))
            entry = {
                "role": role,
                "layer": layer,
                "activation_shape": list(run.cladec.activation_shape),
                "run": str(run_dir.relative_to(tmp)),
                "triplets": str(png.relative_to(tmp)),
                "test_images": m.get("test_images"),
                "mse_cladec": m["mse_cladec"],
                "mse_refae": m.get("mse_refae"),
                "accuracy_original": m.get("accuracy_original"),
                "accuracy_cladec": m.get("accuracy_cladec"),
                "accuracy_refae": m.get("accuracy_refae"),
                "agreement_cladec": m.get("agreement_cladec"),
                "agreement_refae": m.get("agreement_refae"),
                "refae_reconstructs_better": (m.get("mse_refae") is not None and m["mse_refae"] < m["mse_cladec"]),
                "classifier_better_on_cladec": (
                    m.get("accuracy_refae") is not None and m["accuracy_cladec"] > m["accuracy_refae"]
                ),
                "collapsed": run.config.get("collapsed"),
                "timings": run.config.get("timings", {}),
            }
            layers.append(entry)
            for kind, flag in (entry["collapsed"] or {}).items():
                if flag:
                    say(f"      WARNING: {kind} collapsed to a nearly constant image (train longer / on more images)")
            say(
                f"      test MSE RefAE {entry['mse_refae']:.4f} / ClaDec {entry['mse_cladec']:.4f}; classifier "
                f"accuracy on RefAE's {_pct(entry['accuracy_refae'])} / ClaDec's {_pct(entry['accuracy_cladec'])} "
                "reconstructions"
            )

        summary: dict[str, Any] = {
            "format": _FORMAT,
            "format_version": 1,
            "cladec_version": __version__,
            "quick": bool(quick),
            "alpha": alpha,
            "seed": seed,
            "device": str(dev),
            "torch_threads": torch.get_num_threads(),
            "settings": cfg,
            "dataset": {
                "name": ds_name,
                "root": root,
                "n_train": len(train),
                "n_test": len(test),
                "image_shape": list(train.image_shape),
                "num_classes": train.num_classes,
                "classes": list(train.classes),
            },
            "classifier": {
                "arch": arch,
                "width": cfg["width"],
                "epochs": cfg["epochs"],
                "path": "classifier",
                "test_accuracy": test_acc,
                "train_accuracy": float(hist["train_acc"][-1]),
                "seconds": round(clf_s, 2),
            },
            "layers": layers,
            "refae_reconstructs_better": all(L["refae_reconstructs_better"] for L in layers),
            "classifier_better_on_cladec": all(L["classifier_better_on_cladec"] for L in layers),
            "report": None,
            "timings": {"classifier_s": round(clf_s, 2)},
        }
        summary["timings"].update({f"{L['layer']}_{k}": v for L in layers for k, v in L["timings"].items()})
        summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 2)
        write_json(tmp / "summary.json", summary)
        write_bytes(tmp / "summary.txt", format_summary(summary).encode("utf-8"))
        _keep_user_entries(out, tmp)
    clf_dir = out / "classifier"

    # -- report (optional) -----------------------------------------------------------------------
    # built from the results in place (the page names its source folder); the report is written atomically
    # itself, and the results stand without it
    if report:
        build_report = None
        try:
            from . import report as _report_mod

            build_report = getattr(_report_mod, "build_report", None)
        except ModuleNotFoundError as e:
            if e.name not in ("cladec.report", "jinja2"):
                raise
            if e.name == "jinja2":
                say("      (HTML report skipped: it needs jinja2 (pip install jinja2))")
        if build_report is not None:
            say("[3/3] building the HTML report ...")
            t0 = time.perf_counter()
            try:
                index = build_report(out, out / "report", data_root=root, n_images=n_images)
            except Exception as e:  # noqa: BLE001 - the demo's results stand without the report
                print(
                    f"cladec demo: warning: the HTML report could not be built: {type(e).__name__}: {e}",
                    file=sys.stderr,
                )
            else:
                summary["report"] = str(Path(index).relative_to(out)) if Path(index).is_relative_to(out) else str(index)
                summary["timings"]["report_s"] = round(time.perf_counter() - t0, 2)
        summary["timings"]["total_s"] = round(time.perf_counter() - t_start, 2)
        write_json(out / "summary.json", summary)
        write_bytes(out / "summary.txt", format_summary(summary).encode("utf-8"))

    # -- where everything is ---------------------------------------------------------------------
    say("")
    say(format_summary(summary).rstrip())
    say("")
    say(f"Done in {summary['timings']['total_s']:.0f} s. Results in {out}/:")
    for L in layers:
        say(f"  triplets    {out / L['triplets']}")
    say(f"  summary     {out / 'summary.txt'}  and  {out / 'summary.json'}")
    say(f"  classifier  {clf_dir}/   runs  {out / 'runs'}/")
    if summary["report"]:
        say(f"  report      {out / summary['report']}")
    return summary
