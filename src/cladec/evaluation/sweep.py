"""α sweeps: ClaDec for several layers × α values × seeds, each cell a run directory with its evaluation.

Layout written by :func:`run_sweep` (and ``cladec sweep``)::

    sweep/
      sweep.json      {"format": "cladec-sweep", "config": {...}, "layers", "alphas", "seeds",
                       "refae": {"<layer>/s<seed>": "cells/..."}, "cells": [{layer, alpha, seed, run, eval,
                       status, refae, metrics, seconds}]}   (rewritten atomically after every cell)
      cells/<layer>__a<alpha>__s<seed>/     a run directory (see cladec.runs) with eval/ inside
      summary.csv, summary.json             mean ± std over seeds per (layer, α); RefAE and originals per layer
      tradeoff.png                          reconstruction error vs the classifier's accuracy on reconstructions

**One RefAE per (layer, seed).** The RefAE does not depend on α, so it is fitted once: the first cell of
each (layer, seed) that is computed (the first α in the order given) is fitted with its RefAE and
evaluated on all image sets (originals, ClaDec, RefAE, with evaluation classifiers for each); it is
recorded as that (layer, seed)'s *reference cell* in ``sweep.json["refae"]``. The other cells are fitted
without a RefAE (``refae/`` is absent from their run directories), and their ``eval/`` covers ClaDec only;
each records the reference cell it belongs to in ``cells[i]["refae"]``. RefAE figures in the summary come
from the reference cells.

**Resume.** Cells recorded with ``status: "done"`` (whose directories still exist) are not computed again.
Running again with more α values, seeds or layers adds cells. A sweep directory written with another
configuration (classifier, data set, epochs, limits, ...) is refused with a :class:`ConfigError` naming
what differs.
"""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._checks import positive_int
from .._checks import seed as check_seed
from .._errors import ConfigError
from .._io import write_json
from .._tensors import device as checked_device
from .._version import __version__
from ..capture import resolve_layer_or_role
from ..data.sizes import check_dataset_fits
from ..defaults import DEFAULT_ALPHAS, DEFAULT_RECIPE
from ..models.spec import classifier_entry, entry_weights_sha256, load_classifier_spec
from ..persistence import load
from ..runs import fit_run
from ..training import distributed
from ..training.schedule import recipe_lr, resolve_recipe
from .evaluate import evaluate_run
from .sweep_summary import SWEEP_FORMAT, read_state, summarize_sweep

__all__ = ["run_sweep", "cell_name"]

# configuration keys that identify a sweep (a sweep directory refuses another value for any of them)
_IDENTITY = (
    "classifier",
    "classifier_sha256",
    "dataset",
    "size",
    "limit",
    "test_limit",
    "epochs",
    "batch_size",
    "lr",
    "recipe",
    "decoder_norm",
    "decoder_arch",
    "layout",
    "eval_classifier",
    "eval_epochs",
    "refae",
)


def cell_name(layer: str, alpha: float, seed: int) -> str:
    """The directory name of a sweep cell.

    Args:
        layer: Layer name.
        alpha: α.
        seed: Seed.

    Returns:
        ``"<layer>__a<alpha>__s<seed>"``, e.g. ``"conv2__a0.001__s0"``.

    Examples:
        >>> cell_name("conv2", 0.001, 0)
        'conv2__a0.001__s0'
    """
    return f"{layer.replace('/', '_')}__a{float(alpha):.12g}__s{int(seed)}"  # :g alone merged 0.9999999 and 1


def _check_alpha(a: Any) -> float:
    try:
        v = float(a)
    except (TypeError, ValueError):
        raise ConfigError(f"α values must be numbers in [0, 1], got {a!r}") from None
    if math.isnan(v) or not 0.0 <= v <= 1.0:
        raise ConfigError(f"α values must lie in [0, 1], got {a!r}")
    return v


def _check_list(name: str, vals: Sequence[Any], conv) -> list:
    if isinstance(vals, (str, bytes)) or not hasattr(vals, "__iter__"):
        raise ConfigError(f"{name} must be a list, got {vals!r}")
    out = []
    for v in vals:
        c = conv(v)
        if c not in out:
            out.append(c)
    if not out:
        raise ConfigError(f"{name} must not be empty")
    return out


def _seed(s: Any) -> int:

    return check_seed(s, "seeds")  # type: ignore[return-value]  # not optional: an int


def _layer(s: Any) -> str:
    if not isinstance(s, str) or not s.strip():
        raise ConfigError(f"layers must be non-empty layer names, got {s!r}")
    return s.strip()


def _resolve_layers(model: Any, layers: list[str]) -> list[str]:
    """The layers' module names in ``model``; an architecture's default-layer roles (``"last"``, ``"middle"``)
    stand for the layers they name, as in ``cladec fit --layer``. Unknown names raise a ConfigError."""

    out: list[str] = []
    for layer in layers:
        name = resolve_layer_or_role(model, layer)
        if name not in out:
            out.append(name)
    return out


def _log(verbose: bool, msg: str) -> None:
    if verbose:
        print(f"[cladec sweep] {msg}", flush=True)


def _diff_config(old: dict, new: dict) -> list[str]:
    def identity(cfg: dict) -> dict:
        cfg = {k: cfg.get(k) for k in _IDENTITY}
        if not cfg["eval_classifier"]:  # eval_epochs means nothing without evaluation classifiers (older
            cfg["eval_epochs"] = None  # sweeps recorded it anyway)
        cfg["decoder_arch"] = cfg["decoder_arch"] or "auto"  # sweeps before the option: "auto" picks their decoder
        cfg["recipe"] = cfg["recipe"] or "paper"  # sweeps before recipes were fitted with the paper's
        return cfg

    old, new = identity(old), identity(new)
    diffs = []
    for k in _IDENTITY:
        if old.get(k) != new.get(k):
            diffs.append(f"{k}: {old.get(k)!r} in the directory vs {new.get(k)!r} now")
    return diffs


def run_sweep(
    out: str | os.PathLike,
    *,
    classifier_dir: str | os.PathLike,
    dataset: str,
    weights: str | os.PathLike | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    factory_kwargs: dict[str, Any] | None = None,
    layout: str | None = None,
    names: Mapping[str, str] | None = None,
    layers: Sequence[str],
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    seeds: Sequence[int] = (0,),
    epochs: int = 5,
    limit: int | None = None,
    test_limit: int | None = 2000,
    data_root: str | None = None,
    size: int | None = None,
    eval_classifier: bool = True,
    eval_epochs: int | None = None,
    batch_size: int = 128,
    lr: float | None = None,
    recipe: str = DEFAULT_RECIPE,
    decoder_norm: str | None = None,
    decoder_arch: str = "auto",
    device: str | None = None,
    verbose: bool = True,
) -> dict:
    """Fit and evaluate ClaDec for every (layer, α, seed), one RefAE per (layer, seed); resumable.

    Args:
        out: Sweep directory (created; an existing one with the same configuration is resumed).
        classifier_dir: Classifier checkpoint directory (``cladec train-classifier``), or a model source
            (``torchvision:NAME``, ``timm:NAME``; :func:`cladec.models.load_model`) with ``weights``,
            ``num_classes``, ``pretrained`` and ``factory_kwargs`` (the library's arguments); every cell records
            the source (``run.json``'s classifier entry) and reloads it.
        dataset: Data set name for :func:`cladec.data.load_dataset`.
        weights, num_classes, pretrained, factory_kwargs: A model source's (see :func:`cladec.runs.fit_run`).
        layout: The layers' output layout (``"nchw"``, ``"nhwc"``, ``"tokens"``, ``"flat"``; default: detected).
        names: How messages name the classifier's arguments (the command line passes ``--model``, ``--weights``).
        layers: Layer names (e.g. ``["conv4", "conv2"]``), or the architecture's default-layer roles
            (``"last"``, ``"middle"``), which are recorded as the layers they name.
        alphas: α values (default: 0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1).
        seeds: Seeds; each gives an independent decoder (and RefAE) initialisation and data order.
        epochs: Decoder (and RefAE) epochs per cell; also the evaluation classifiers' epochs unless
            ``eval_epochs`` is given.
        limit: Training images per cell (default: all).
        test_limit: Test images for the evaluation (default 2000; ``None``: all).
        data_root: Data root (not part of the sweep's identity: a resumed sweep may read the same data
            from elsewhere).
        size: Resize images (default: the classifier's data size).
        eval_classifier: Train evaluation classifiers (see :func:`cladec.evaluation.evaluate_run`).
        eval_epochs: Epochs of the evaluation classifiers.
        batch_size: Decoder training batch size.
        lr: Decoder learning rate, the peak of a scheduled recipe (default: the recipe's; recorded as the
            rate used).
        recipe: The explainers' training recipe (:meth:`cladec.ClaDec.fit`), a name in
            :data:`cladec.training.schedule.RECIPES` (``"paper"``: Adam 3e-4, constant); part of the sweep's identity.
        decoder_norm: ``None`` or ``"batch"``.
        decoder_arch: ``"auto"``, ``"paper"`` or ``"scaled"`` (:func:`cladec.decoder.build_decoder`).
        device: Device (default: CUDA if available, else CPU).
        verbose: Print progress.

    Nothing is written before the arguments are checked: the classifier is loaded, the layers are found in
    it, and the device is checked before ``sweep.json`` is created.

    Returns:
        The summary (the content of ``summary.json``): ``{"rows": [{"layer", "method", "alpha", "n_seeds",
        "<metric>_mean", "<metric>_std", ...}], ...}``.

    Raises:
        ConfigError: Bad arguments (an unknown layer or device, ...), or ``out`` holds a sweep with another
            configuration.

    Examples:
        >>> s = run_sweep("sweep", classifier_dir=clf_dir, dataset="fashion-mnist-mini", layers=["conv2"],
        ...               alphas=[0.001], epochs=1, limit=500, test_limit=100, eval_classifier=False,
        ...               lr=3e-3, batch_size=32, verbose=False)
        >>> [(r["method"], r["alpha"]) for r in s["rows"]]
        [('original', None), ('refae', None), ('cladec', 0.001)]
        >>> sorted(p.name for p in Path("sweep").iterdir())
        ['cells', 'summary.csv', 'summary.json', 'sweep.json', 'tradeoff.png']
    """

    out = Path(out)
    layers_l = _check_list("layers", layers, _layer)
    alphas_l = _check_list("alphas", alphas, _check_alpha)
    seeds_l = _check_list("seeds", seeds, _seed)
    positive_int("epochs", epochs)
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 < lr < math.inf):
        raise ConfigError(f"lr must be a positive number or None (the recipe's), got {lr!r}")
    if not isinstance(recipe, str):
        raise ConfigError(f"recipe must be a recipe's name (a sweep records it), got {recipe!r}")
    lr = recipe_lr(resolve_recipe(recipe), lr, batch_size)  # an unknown recipe: ConfigError listing the names
    if not eval_classifier and eval_epochs is not None:
        raise ConfigError(
            "eval_epochs sets the evaluation classifiers, which eval_classifier=False turns off: drop "
            "it, or keep eval_classifier=True"
        )
    dev = checked_device(device, "device")  # the one device check (ConfigError)
    # a checkpoint folder or a model source, checked and loaded as `cladec fit` does (its warning once, here)
    spec = classifier_entry(
        classifier_dir,
        weights=weights,
        factory_kwargs=factory_kwargs,
        num_classes=num_classes,
        pretrained=pretrained,
        names=names,
    )
    if spec["type"] == "checkpoint" and not (Path(spec["path"]) / "classifier.json").is_file():
        raise ConfigError(
            f"{classifier_dir} is not a classifier checkpoint directory (no classifier.json); make one with "
            "`cladec train-classifier`, or name a model: torchvision:NAME, timm:NAME"
        )
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} exists and is not a directory; give a directory for the sweep")
    model, info = load_classifier_spec(spec, Path.cwd())  # to find the layers before anything is written
    layers_l = _resolve_layers(model, layers_l)
    sha = entry_weights_sha256(spec, info)
    del model
    if size is None:
        # the classifier's image size (height), read from its checkpoint: every cell then gets an explicit size
        shape = (info.get("dataset") or {}).get("image_shape")
        if isinstance(shape, list) and len(shape) == 3 and shape[1] == shape[2]:
            size = int(shape[1])
    source = spec if spec["type"] == "source" else None
    cell_model: dict[str, Any] = {"classifier_dir": spec["path"] if source is None else spec["source"]}
    if source is not None:
        cell_model.update(weights=weights, num_classes=num_classes, pretrained=pretrained)
        cell_model.update(factory_kwargs=factory_kwargs, layout=layout)
    elif layout is not None:
        cell_model["layout"] = layout

    # before anything is written: every cell holds its training and test images at this size
    check_dataset_fits(dataset, [("train", limit), ("test", test_limit)], size, what=f"size {size}")
    config = {
        "classifier": str(Path(spec["path"]).resolve())
        if source is None
        else {k: spec[k] for k in ("source", "weights", "num_classes", "pretrained", "kwargs")},
        "classifier_sha256": sha,
        "dataset": dataset,
        "size": size,
        "limit": limit,
        "test_limit": test_limit,
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "recipe": recipe,
        "decoder_norm": decoder_norm,
        "decoder_arch": decoder_arch,
        "layout": layout,
        "eval_classifier": bool(eval_classifier),
        "eval_epochs": eval_epochs,
        "refae": "one per (layer, seed), fitted in the first cell computed",
        "data_root": str(Path(data_root).resolve()) if data_root else None,
    }
    state = distributed.from_main(read_state(out) if out.is_dir() else None)  # data-parallel: rank 0's files
    if state is not None:
        diffs = _diff_config(state.get("config", {}), config)
        if diffs:
            raise ConfigError(
                f"{out} holds a sweep made with another configuration ({'; '.join(diffs)}). Use a new output "
                "directory, or repeat the same settings (only α values, seeds and layers may be added)"
            )
        state["config"]["data_root"] = config["data_root"]
    else:
        state = {
            "format": SWEEP_FORMAT,
            "format_version": 1,
            "cladec_version": __version__,
            "config": config,
            "layers": [],
            "alphas": [],
            "seeds": [],
            "refae": {},
            "cells": [],
        }
    for key, vals in (("layers", layers_l), ("alphas", alphas_l), ("seeds", seeds_l)):
        for v in vals:
            if v not in state[key]:
                state[key].append(v)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "sweep.json", state)

    def find(layer, alpha, seed):
        for c in state["cells"]:
            if c["layer"] == layer and float(c["alpha"]) == alpha and int(c["seed"]) == seed:
                return c
        return None

    # seeds outermost: an interrupted sweep has every layer and α for the first seed(s)
    todo = [(la, a, s) for s in seeds_l for la in layers_l for a in alphas_l]
    n_done = 0
    for i, (layer, alpha, seed) in enumerate(todo):
        cell = find(layer, alpha, seed)
        rel = f"cells/{cell_name(layer, alpha, seed)}"
        if distributed.from_main(
            cell is not None
            and cell.get("status") == "done"
            and (out / rel / "run.json").is_file()
            and (out / rel / "eval" / "metrics.json").is_file()
        ):
            n_done += 1
            continue
        if cell is None:
            cell = {"layer": layer, "alpha": alpha, "seed": seed, "run": rel, "eval": f"{rel}/eval"}
            state["cells"].append(cell)
        ref_key = f"{layer}/s{seed}"
        ref_rel = state["refae"].get(ref_key)
        ref_ok = distributed.from_main(ref_rel is not None and (out / ref_rel / "refae" / "cladec.json").is_file())
        is_ref = not ref_ok or ref_rel == rel
        cell.update(status="running", refae=rel if is_ref else ref_rel, error=None)
        write_json(out / "sweep.json", state)
        _log(
            verbose,
            f"cell {i + 1}/{len(todo)}: layer {layer}, α = {alpha:g}, seed {seed}"
            + (" (with its RefAE)" if is_ref else f" (RefAE from {ref_rel})"),
        )
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():  # a source without weights: warned once, above
                warnings.filterwarnings("ignore", "(?s).*gets random weights", UserWarning)
                run = fit_run(
                    out / rel,
                    **cell_model,
                    dataset=dataset,
                    layer=layer,
                    alpha=alpha,
                    epochs=epochs,
                    refae=is_ref,
                    batch_size=batch_size,
                    lr=lr,
                    recipe=recipe,
                    seed=seed,
                    size=size,
                    limit=limit,
                    test_limit=test_limit,
                    data_root=data_root,
                    device=dev,  # type: ignore[arg-type]  # fit_run takes a torch.device as well
                    decoder_norm=decoder_norm,
                    decoder_arch=decoder_arch,
                    verbose=False,
                )
            # a cell without its own RefAE evaluates its ClaDec against the shared one
            shared: dict[str, Any] = (
                {}
                if is_ref
                else dict(sets=("cladec",), refae=load(out / ref_rel / "refae", run.classifier), refae_source=ref_rel)
            )
            res = evaluate_run(
                run,
                limit=test_limit,
                data_root=data_root,
                eval_classifier=eval_classifier,
                eval_epochs=eval_epochs,
                seed=seed,
                out=out / rel / "eval",
                verbose=verbose,
                **shared,
            )
        except BaseException as e:
            cell.update(status="failed", error=f"{type(e).__name__}: {e}")
            write_json(out / "sweep.json", state)
            raise
        cell.update(
            status="done",
            seconds=round(time.perf_counter() - t0, 2),
            metrics=res["summary"],
            collapsed=res["collapsed"],
        )
        if is_ref:
            state["refae"][ref_key] = rel
        write_json(out / "sweep.json", state)
        n_done += 1
    _log(verbose, f"{n_done}/{len(todo)} cells done")
    summary = summarize_sweep(out)
    return summary
