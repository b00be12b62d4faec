"""A run directory loaded (:class:`Run`, :func:`load_run`) and explained (:func:`explain_run`); the layout is in
:mod:`cladec.runs`."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._checks import positive_int
from .._checks import seed as check_seed
from .._errors import ConfigError, SaveFormatError
from .._io import check_inside, read_json
from .._schema import RUN, validate
from .._tensors import device as checked_device
from ..data.recorded import load_recorded_dataset
from ..data.sizes import check_dataset_fits
from ..explanation import Explanation, explain
from ..models.spec import (
    classifier_classes,
    load_classifier_spec,
)
from ..persistence import load

__all__ = ["Run", "load_run", "explain_run"]


@dataclass
class Run:
    """A loaded run directory."""

    path: Path
    config: dict[str, Any]
    classifier: nn.Module
    classifier_info: dict[str, Any]
    cladec: Any
    refae: Any | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def layer(self) -> str:
        return self.config["layer"]

    @property
    def alpha(self) -> float:
        return float(self.config["alpha"])

    @property
    def input_norm(self):
        return self.config.get("input_norm")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.config["image_shape"])

    @property
    def output_classes(self) -> list[str] | None:
        """The classifier's output classes: those recorded in its checkpoint (``classifier.json``'s
        ``dataset.classes``), else the run's data set's, else None (name outputs by number)."""
        recorded = classifier_classes(self.classifier_info)
        if recorded is not None:
            return recorded
        ds = self.config.get("dataset") or {}
        classes = ds.get("classes") if isinstance(ds, dict) else None
        return list(classes) if isinstance(classes, list) and classes else None

    def dataset(self, split: str = "test", *, limit: int | None = None, data_root: str | None = None):
        """Load ``split`` of the run's data set (same name and resizing as at fit time).

        Args:
            split: ``"train"`` or ``"test"``.
            limit: Keep the first ``limit`` images.
            data_root: Where the data set is (default: the root recorded in the run while it holds the data set, else
                ``$CLADEC_DATA``, else the user cache; see :func:`data_root_for`).

        Returns:
            A :class:`cladec.data.ImageDataset`.

        Examples:
            >>> test = load_run(run_dir).dataset("test", limit=100)  # run_dir: fitted on fashion-mnist-mini
            >>> test.name, test.split, len(test), test.image_shape
            ('fashion-mnist-mini', 'test', 100, (1, 28, 28))
        """
        ds = self.config["dataset"]
        return load_recorded_dataset(
            ds["name"], data_root, ds.get("root"), split=split, size=ds.get("size"), limit=limit
        )


RUN_HINT = "fit the run again with `cladec fit`"


def load_run(path: str | os.PathLike, device: str | torch.device | None = None) -> Run:
    """Load a run directory written by :func:`fit_run` / ``cladec fit``.

    Args:
        path: The run directory.
        device: Where to put the models (default: CUDA if available, else CPU).

    Returns:
        The :class:`Run` with classifier, ClaDec and RefAE (None if not fitted) loaded.

    Raises:
        SaveFormatError: If ``path`` is not a run directory, a field of its ``run.json`` is missing or malformed,
            one of its files is a link out of the run folder (see the module's docs), or its classifier is not the
            one the run was fitted with (other weights at the recorded path since; runs of earlier versions are
            not checked).

    Examples:
        >>> run = load_run(run_dir)  # run_dir: a run directory for conv2 (fit_run)
        >>> run.layer, type(run.cladec).__name__, type(run.refae).__name__
        ('conv2', 'ClaDec', 'RefAE')
        >>> run.cladec.reconstruct(x).shape
        torch.Size([16, 1, 28, 28])
    """

    path = Path(path)
    if not path.is_dir():
        raise SaveFormatError(f"run directory not found: {path} (make one with `cladec fit`)")
    cfg_file = path / "run.json"
    if not cfg_file.is_file():
        raise SaveFormatError(f"{path} is not a cladec run directory: it has no run.json (make one with `cladec fit`)")
    check_inside(cfg_file, path, "the run's settings")
    cfg = read_json(cfg_file, "cladec run file")
    if cfg.get("format") != "cladec-run":
        raise SaveFormatError(f"{cfg_file} is not a cladec run file (format {cfg.get('format')!r})")
    validate(cfg, RUN, cfg_file, RUN_HINT)
    dev = checked_device(device or None, "device")
    model, info = load_classifier_spec(cfg["classifier"], path, device=dev)
    e = load(check_inside(path / "cladec", path, "the run's ClaDec"), model)
    r = load(check_inside(path / "refae", path, "the run's RefAE"), model) if (path / "refae").is_dir() else None
    return Run(path=path, config=cfg, classifier=model, classifier_info=info, cladec=e, refae=r)


def explain_run(
    run: Run,
    *,
    n: int = 48,
    split: str = "test",
    dataset: str | None = None,
    data_root: str | None = None,
    seed: int = 0,
) -> tuple[Explanation, dict[str, Any]]:
    """Explain ``n`` images with a run's ClaDec and RefAE (what ``cladec explain`` draws).

    The images are a seeded random choice of the split, in the data set's order. On a data set whose classes are
    not those of the classifier (its outputs), the predictions are named with the classifier's classes and no
    true class is given (no accuracy can be measured).

    Args:
        run: A loaded run (:func:`load_run`).
        n: Number of images (at most the split's).
        split: ``"train"`` or ``"test"``.
        dataset: A data set with the run's image shape (default: the run's own).
        data_root: Where it is (default: the run's recorded root while it holds the data set, else
            ``$CLADEC_DATA``, else the user cache).
        seed: Seeds the choice of the images.

    Returns:
        ``(explanation, info)``: the :class:`~cladec.explanation.Explanation` and ``{"dataset": name, "split",
        "indices": [...], "summary": one line of its errors and accuracies, "notes": [caveats for the user]}``.

    Raises:
        ConfigError: No data set given and none recorded, or images that could not fit in memory.
        DataError: A data set of another image shape.

    Examples:
        >>> ex, info = explain_run(load_run(run_dir), n=8)  # run_dir: a run fitted on fashion-mnist-mini
        >>> len(ex), info["dataset"], info["notes"]
        (8, 'fashion-mnist-mini', [])
        >>> info["summary"]
        '8 fashion-mnist-mini test images, layer conv2: MSE ClaDec ..., RefAE ...; classifier accuracy originals ...'
    """
    n = positive_int("n", n)
    g = torch.Generator().manual_seed(int(check_seed(seed) or 0))
    ds_cfg = run.config.get("dataset", {})
    name = dataset or ds_cfg.get("name")
    if not name:
        raise ConfigError("give the data set (dataset=, `cladec explain --dataset NAME`): the run does not record one")
    size = ds_cfg.get("size")
    check_dataset_fits(name, [(split, None)], size, what=f"the run's image size {size} (run.json dataset.size)")
    lazy = bool(ds_cfg.get("lazy")) and not dataset  # a run fitted lazily: only the chosen images are decoded
    ds = load_recorded_dataset(name, data_root, ds_cfg.get("root"), split=split, size=size, lazy=lazy)
    n = min(n, len(ds))
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values
    x, y = ds.subset(idx).tensors()
    idx_all, idx = idx, torch.arange(n)
    out_classes = run.output_classes  # the classes the classifier was trained on (else those of the run's data)
    labels, notes = y[idx], []
    if out_classes and list(ds.classes) != list(out_classes):
        labels = None  # another label space: a true class is no class the classifier knows
        shown = ", ".join(map(str, list(out_classes)[:4])) + (", ..." if len(out_classes) > 4 else "")
        notes.append(
            f"the classes of {ds.name} are not the classifier's ({shown}); predictions are named with the "
            "classifier's classes and no accuracy is reported"
        )
    classes = list(out_classes) if out_classes else ds.classes
    ex = explain(x[idx], cladec=run.cladec, refae=run.refae, labels=labels, classes=classes)
    line = ex.format_summary(f"{n} {ds.name} {split} images")
    info = {"dataset": ds.name, "split": split, "indices": idx_all.tolist(), "summary": line, "notes": notes}
    return ex, info
