"""The classifier entry of a run (a checkpoint folder or a factory with weights): loading it, checking its identity."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, SaveFormatError, caller_level
from .._io import file_sha256
from .._limits import check_model_fits
from ..data.sizes import check_dataset_fits
from .checkpoint import WEIGHTS_FILE, load_classifier, load_user_model
from .sources import check_source, is_model_source, load_model

__all__ = ["classifier_entry", "load_classifier_spec", "recorded_image_shape", "recorded_size", "check_fit_fits"]


def classifier_entry(
    classifier_dir: str | os.PathLike | None = None,
    *,
    factory: str | None = None,
    weights: str | os.PathLike | None = None,
    factory_kwargs: Mapping[str, Any] | None = None,
    input_norm: Any = None,
    names: Mapping[str, str] | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
) -> dict[str, Any]:
    """The ``classifier`` entry of a run (``run.json``): a checkpoint folder, a model source
    (``torchvision:NAME``, ``timm:NAME``, a registered name; :func:`cladec.models.load_model`), or a factory with
    its weights.

    Args:
        classifier_dir: A classifier checkpoint folder (``cladec train-classifier``, :func:`save_classifier`), or
            a model source (an existing folder is always a checkpoint); a source takes ``weights``,
            ``factory_kwargs`` (passed to the library), ``input_norm``, ``num_classes`` and ``pretrained``.
        factory: Instead, a user model's factory ``"package.module:function"``.
        weights: The factory model's weights file (safetensors or a state dict).
        factory_kwargs: Keyword arguments for ``factory``.
        input_norm: ``(mean, std)`` the factory model expects (a checkpoint records its own).
        names: How messages name these arguments (default: as here); the command line passes its options,
            ``{"classifier_dir": "--model", "weights": "--weights", ...}``.
        num_classes: A source model's number of classes.
        pretrained: A source model with its library's pretrained weights (downloaded by the library).

    Returns:
        ``{"type": "checkpoint", "path"}``, ``{"type": "source", "source", "weights", "num_classes", "pretrained",
        "kwargs", "input_norm"}`` or ``{"type": "factory", "factory", "weights", "kwargs",
        "input_norm"}``, with absolute paths (see :mod:`cladec.runs`; :func:`load_classifier_spec` loads it).

    Raises:
        ConfigError: Neither a checkpoint nor a factory, both, settings a checkpoint would ignore, or a weights
            file that does not exist.

    Examples:
        >>> classifier_entry(clf_dir) == {"type": "checkpoint", "path": str(clf_dir.resolve())}
        True
        >>> classifier_entry(factory="cladec.models.vgg:vgg_paper", factory_kwargs={"width": 0.25})["kwargs"]
        {'width': 0.25}
        >>> classifier_entry(clf_dir, input_norm=([0.5], [0.5]))
        Traceback (most recent call last):
            ...
        cladec._errors.ConfigError: input_norm cannot go with classifier_dir: a checkpoint holds its own model, ...
    """
    shown = {k: k for k in "classifier_dir factory weights factory_kwargs input_norm num_classes pretrained".split()}
    shown.update(names or {})
    if is_model_source(classifier_dir):
        if factory is not None:
            raise ConfigError(
                f"give the classifier either as {shown['classifier_dir']} or as {shown['factory']}, not both"
            )
        if weights is not None and not Path(weights).is_file():
            raise ConfigError(f"{shown['weights']}: file not found: {weights}")
        check_source(str(classifier_dir))  # an unknown name: its error, not a warning about its weights first
        if weights is None and not pretrained:
            warnings.warn(
                f"{classifier_dir} gets random weights (no {shown['weights']}, no {shown['pretrained']}): the "
                "explanation shows what an untrained network keeps, not what a classifier learned",
                UserWarning,
                stacklevel=caller_level(),
            )
        return {
            "type": "source",
            "source": str(classifier_dir),
            "weights": str(Path(weights).resolve()) if weights is not None else None,
            "num_classes": num_classes,
            "pretrained": bool(pretrained),
            "kwargs": dict(factory_kwargs or {}),
            "input_norm": input_norm,
        }
    if classifier_dir is not None:
        others = {"factory": factory, "weights": weights, "factory_kwargs": factory_kwargs, "input_norm": input_norm}
        others.update(num_classes=num_classes, pretrained=pretrained or None)
        given = [k for k, v in others.items() if v is not None]
        if given:
            goes = [shown[k] for k in given if k != "factory"]
            raise ConfigError(
                f"{', '.join(shown[k] for k in given)} cannot go with {shown['classifier_dir']}: a checkpoint holds "
                "its own model, weights, input normalisation and the arguments that rebuild it"
                + (f" ({', '.join(goes)} {'goes' if len(goes) == 1 else 'go'} with {shown['factory']})" if goes else "")
                + (
                    f"; give the classifier either as {shown['classifier_dir']} or as {shown['factory']}, not both"
                    if "factory" in given
                    else f"; drop {' and '.join(goes)}"
                )
            )
        return {"type": "checkpoint", "path": str(Path(classifier_dir).resolve())}
    if factory is None:
        raise ConfigError(
            f"give the classifier: {shown['classifier_dir']} (a checkpoint folder from `cladec train-classifier`) "
            f"or {shown['factory']} (a 'package.module:function' that builds your model) with {shown['weights']}"
        )
    if weights is not None and not Path(weights).is_file():
        raise ConfigError(f"{shown['weights']}: file not found: {weights}")
    return {
        "type": "factory",
        "factory": factory,
        "weights": str(Path(weights).resolve()) if weights is not None else None,
        "kwargs": dict(factory_kwargs or {}),
        "input_norm": input_norm,
    }


def classifier_classes(info: Any) -> list[str] | None:
    """The class names recorded in a classifier checkpoint's ``classifier.json`` (``dataset.classes``), or None."""
    ds = info.get("dataset") if isinstance(info, dict) else None
    classes = ds.get("classes") if isinstance(ds, dict) else None
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def recorded_image_shape(info: Any) -> tuple[int, int, int] | None:
    """The input shape ``(C, H, W)`` a classifier checkpoint records (``classifier.json``'s
    ``dataset.image_shape``), or None.

    Args:
        info: What is known about the classifier (:func:`load_classifier_spec`'s ``info``).

    Returns:
        ``(C, H, W)``, or None when it is not recorded (a factory model).

    Examples:
        >>> recorded_image_shape({"dataset": {"image_shape": [1, 28, 28]}}), recorded_image_shape({})
        ((1, 28, 28), None)
    """
    ds = info.get("dataset") if isinstance(info, dict) else None
    shape = ds.get("image_shape") if isinstance(ds, dict) else None
    if isinstance(shape, (list, tuple)) and len(shape) == 3 and all(isinstance(s, int) for s in shape):
        return (int(shape[0]), int(shape[1]), int(shape[2]))
    return None


def recorded_size(info: Any) -> Any:
    """The image size a classifier was trained at, as :func:`cladec.data.load_dataset` takes it: the resize its
    checkpoint records, else the height and width of its recorded input shape, else None (a factory model).

    Examples:
        >>> recorded_size({"dataset": {"size": 32}}), recorded_size({"dataset": {"image_shape": [1, 28, 28]}})
        (32, [28, 28])
    """
    ds = info.get("dataset") if isinstance(info, dict) else None
    shape = recorded_image_shape(info)
    return (ds.get("size") if isinstance(ds, dict) else None) or (list(shape[1:]) if shape else None)


def entry_weights_sha256(spec: dict[str, Any], info: Any) -> str | None:
    """The identity of a loaded classifier entry's weights, which a run records as ``weights_sha256``: the
    checkpoint's (:func:`checkpoint_weights_sha256`), or the SHA-256 of the factory's weights file (None without
    one)."""
    if spec.get("type") == "checkpoint":
        return checkpoint_weights_sha256(Path(spec["path"]), info)
    return file_sha256(spec["weights"]) if spec.get("weights") else None


def rel_or_abs(target: Path, base: Path) -> str:
    target = target.resolve()
    try:
        return os.path.relpath(target, base.resolve())
    except ValueError:
        return str(target)


def checkpoint_weights_sha256(path: Path, info: dict[str, Any]) -> str | None:
    """The identity of a loaded checkpoint's weights: its recorded SHA-256 (checked by load_classifier),
    else (checkpoints of earlier versions) the SHA-256 of its weights file."""

    recorded = info.get("weights_sha256") if isinstance(info, dict) else None
    if isinstance(recorded, str) and recorded:
        return recorded
    directory = path.parent if path.is_file() else path
    return file_sha256(directory / WEIGHTS_FILE)


def _check_identity(spec: dict[str, Any], where: Path, current: str | None, base: Path) -> None:
    recorded = spec.get("weights_sha256")
    if not isinstance(recorded, str) or not recorded or current == recorded:
        return  # runs of earlier versions record no identity: not checked
    raise SaveFormatError(
        f"the classifier at {where} is not the one the run in {base} was fitted with: its weights changed since "
        f"(SHA-256 {str(current)[:12]}..., the run recorded {recorded[:12]}...), e.g. a new "
        "`cladec train-classifier --out` wrote there. The run's decoders would explain another model; fit the "
        "run again (`cladec fit`) or put back the classifier it was fitted with"
    )


def load_classifier_spec(spec: dict[str, Any], base: Path, device: str | torch.device = "cpu"):
    """Load the classifier described by a run's ``classifier`` entry.

    Args:
        spec: The entry (``run.json["classifier"]``): a checkpoint (``path`` relative to ``base`` or absolute)
            or a factory with its weights.
        base: The folder relative paths are resolved against (the run directory).
        device: Where to put the model.

    Returns:
        ``(model, info)``: the model in eval mode and what is known about it (the checkpoint's
        ``classifier.json``, or ``{"arch", "input_norm"}`` for a factory).

    Raises:
        SaveFormatError: An unknown entry, or a classifier whose weights are not those the entry recorded
            (``weights_sha256``; entries without it are not checked).

    Examples:
        >>> import json
        >>> spec = json.loads((run_dir / "run.json").read_text())["classifier"]
        >>> spec["type"]
        'checkpoint'
        >>> model, info = load_classifier_spec(spec, run_dir)
        >>> info["arch"], model.training
        ('vgg-paper', False)
    """

    if not isinstance(spec, dict):  # load_run checks run.json's entry field by field (the RUN schema) before
        raise SaveFormatError(f"the classifier entry must be an object, got {spec!r}")
    kind = spec.get("type")
    if kind == "checkpoint":
        p = Path(spec["path"])
        if not p.is_absolute():
            p = (base / p).resolve()
        if not p.exists() and spec.get("abs_path"):
            p = Path(spec["abs_path"])
        model, info = load_classifier(p, device=device)
        _check_identity(spec, p, checkpoint_weights_sha256(p, info), base)
        return model, info
    if kind == "factory":
        weights = spec.get("weights")
        if spec.get("weights_sha256") and weights and Path(weights).is_file():
            _check_identity(spec, Path(weights), file_sha256(weights), base)
        model = load_user_model(spec["factory"], weights, **spec.get("kwargs", {}))
        model.to(device).eval()
        return model, {"arch": spec["factory"], "input_norm": spec.get("input_norm")}
    if kind == "source":
        weights = spec.get("weights")
        if spec.get("weights_sha256") and weights and Path(weights).is_file():
            _check_identity(spec, Path(weights), file_sha256(weights), base)
        model = load_model(
            spec["source"],
            weights=weights,
            num_classes=spec.get("num_classes"),
            pretrained=bool(spec.get("pretrained")),
            input_norm=spec.get("input_norm"),
            **spec.get("kwargs", {}),
        )
        model.to(device).eval()
        # the input normalisation (unless the entry gives one) and the input shape from the model's metadata
        meta: dict[str, Any] = getattr(model, "source_info", {})
        rebuild = {"num_classes": spec["num_classes"]} if spec.get("num_classes") is not None else {}
        return model, {
            "arch": spec["source"],
            "arch_kwargs": {**rebuild, **spec.get("kwargs", {})},  # what rebuilds it fresh (ROAR's retraining)
            "input_norm": meta["input_norm"],
            "dataset": {"image_shape": meta["image_shape"]},
        }
    raise SaveFormatError(f"unknown classifier entry {spec!r} in run.json")


def check_fit_fits(
    dataset: str,
    model: nn.Module,
    info: Any,
    *,
    size: Any = None,
    limit: int | None = None,
    test_limit: int | None = None,
    batch_size: int = 128,
    device: Any = None,
    names: Mapping[str, str] | None = None,
    lazy: bool = False,
) -> None:
    """Refuse a fit (:func:`cladec.runs.fit_run`) whose images or batches could not fit in memory, before any data
    is loaded: the images counted at ``size``, else at the size the classifier records, as ``fit_run`` loads them.

    Args:
        dataset: The data set to fit on.
        model: The classifier (its weights and one batch's activations are estimated).
        info: What is known about it (a checkpoint's ``classifier.json``, see :func:`load_classifier_spec`).
        size, limit, test_limit, batch_size: As for :func:`cladec.runs.fit_run`.
        device: Where the fit runs (its memory is the limit; default: the host's).
        names: How messages name ``size`` and ``batch_size`` (the command line passes ``--size``, ...).
        lazy: The training images are read lazily (streamed): only the test images are counted.

    Returns:
        None.

    Raises:
        ConfigError: ``"size 100000 (100000×100000 images of mnist) needs about 3.8 TB of memory ..."``.

    Examples:
        >>> model, info = load_classifier_spec({"type": "checkpoint", "path": str(clf_dir)}, Path.cwd())
        >>> check_fit_fits("fashion-mnist-mini", model, info, limit=500, batch_size=32)  # fits: no error
    """
    shown = {"size": "size", "batch_size": "batch_size", **(names or {})}
    shape, given = recorded_image_shape(info), size is not None
    size = size if given else recorded_size(info)
    where = f"{shown['size']} {size}" if given else f"the classifier's recorded image size {size}"
    splits = [("test", test_limit)] if lazy else [("train", limit), ("test", test_limit)]
    check_dataset_fits(dataset, splits, size, what=where)
    hw = (size, size) if isinstance(size, int) else size
    if shape is not None and isinstance(hw, (list, tuple)) and len(hw) == 2 and all(isinstance(v, int) for v in hw):
        batch = min(batch_size, limit) if limit else batch_size
        check_model_fits(
            model,
            (shape[0], *hw),
            batch,
            device=device,
            train_copies=1,
            activation_copies=2,
            what=f"fitting on batches of {batch} {shape[0]}×{hw[0]}×{hw[1]} images ({shown['batch_size']})",
            hint=f"use a smaller {shown['batch_size']} or {shown['size']}",
        )
