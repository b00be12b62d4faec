"""The classifier entry of a run (a checkpoint folder or a factory with weights): loading it, checking its identity."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .._errors import SaveFormatError
from .._io import file_sha256

__all__ = ["load_classifier_spec"]


def classifier_classes(info: Any) -> list[str] | None:
    """The class names recorded in a classifier checkpoint's ``classifier.json`` (``dataset.classes``), or None."""
    ds = info.get("dataset") if isinstance(info, dict) else None
    classes = ds.get("classes") if isinstance(ds, dict) else None
    if isinstance(classes, list) and classes and all(isinstance(c, str) for c in classes):
        return list(classes)
    return None


def rel_or_abs(target: Path, base: Path) -> str:
    target = target.resolve()
    try:
        return os.path.relpath(target, base.resolve())
    except ValueError:
        return str(target)


def checkpoint_weights_sha256(path: Path, info: dict[str, Any]) -> str | None:
    """The identity of a loaded checkpoint's weights: its recorded SHA-256 (checked by load_classifier),
    else (checkpoints of earlier versions) the SHA-256 of its weights file."""
    from .checkpoint import WEIGHTS_FILE

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
    from .checkpoint import load_classifier, load_user_model

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
    raise SaveFormatError(f"unknown classifier entry {spec!r} in run.json")
