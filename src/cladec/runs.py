"""Run directories: one fitted (classifier, layer, α, seed) cell with its ClaDec and RefAE.

Layout written by :func:`fit_run` (and ``cladec fit``)::

    run/
      run.json        {"format": "cladec-run", "classifier": {...}, "dataset": {...}, "layer", "neurons",
                       "alpha", "epochs", "seed", "metrics": {...}, "timings": {...}, ...}
      cladec/         ClaDec save (cladec.json + weights.safetensors)
      refae/          RefAE save (absent when fitted with refae=False)

``run.json["classifier"]`` is ``{"type": "checkpoint", "path": ...}`` (a directory made by
``cladec train-classifier`` / :func:`cladec.classifier.save_classifier`; the path is stored relative
to the run directory when possible) or ``{"type": "factory", "factory": "pkg.mod:fn", "weights": ...,
"kwargs": {...}, "input_norm": ...}`` for a user's own model. Loading such a run imports that module and
calls the factory again, so a run directory is code you run: load only run directories you trust.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ._errors import ConfigError, SaveFormatError
from ._io import atomic_dir, check_replaceable, read_json, write_json
from ._training import compile_mode

__all__ = ["Run", "fit_run", "load_run", "load_classifier_spec"]


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
        return tuple(self.config["image_shape"])  # type: ignore[return-value]

    def dataset(self, split: str = "test", *, limit: int | None = None, data_root: str | None = None):
        """Load ``split`` of the run's data set (same name and resizing as at fit time).

        Args:
            split: ``"train"`` or ``"test"``.
            limit: Keep the first ``limit`` images.
            data_root: Override the data root recorded in the run.

        Returns:
            A :class:`cladec.data.ImageDataset`.
        """
        from .data import load_dataset

        ds = self.config["dataset"]
        root = data_root if data_root is not None else ds.get("root")
        return load_dataset(ds["name"], root=root, split=split, size=ds.get("size"), limit=limit)


def _rel_or_abs(target: Path, base: Path) -> str:
    target = target.resolve()
    try:
        return os.path.relpath(target, base.resolve())
    except ValueError:
        return str(target)


def load_classifier_spec(spec: dict[str, Any], base: Path, device: str | torch.device = "cpu"):
    """Load the classifier described by a run's ``classifier`` entry; returns ``(model, info)``."""
    from .classifier import load_classifier, load_user_model

    kind = spec.get("type")
    if kind == "checkpoint":
        p = Path(spec["path"])
        if not p.is_absolute():
            p = (base / p).resolve()
        if not p.exists() and spec.get("abs_path"):
            p = Path(spec["abs_path"])
        return load_classifier(p, device=device)
    if kind == "factory":
        model = load_user_model(spec["factory"], spec.get("weights"), **spec.get("kwargs", {}))
        model.to(device).eval()
        return model, {"arch": spec["factory"], "input_norm": spec.get("input_norm")}
    raise SaveFormatError(f"unknown classifier entry {spec!r} in run.json")


def _same_dataset(a: Any, b: Any) -> bool:
    """Whether two data set names mean the same data set (aliases such as 'fmnist' normalised)."""
    from .data import _ALIASES

    if not isinstance(a, str) or not isinstance(b, str):
        return False
    na, nb = a.strip(), b.strip()
    return _ALIASES.get(na.lower(), na) == _ALIASES.get(nb.lower(), nb)


def fit_run(
    out: str | os.PathLike,
    *,
    dataset: str,
    layer: str,
    classifier_dir: str | os.PathLike | None = None,
    factory: str | None = None,
    weights: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    input_norm: Any = None,
    alpha: float = 0.001,
    neurons: Sequence[int] | None = None,
    epochs: int = 5,
    refae: bool = True,
    refae_epochs: int | None = None,
    batch_size: int = 128,
    lr: float = 3e-4,
    seed: int = 0,
    size: int | None = None,
    limit: int | None = None,
    test_limit: int | None = 2000,
    data_root: str | None = None,
    device: str | None = None,
    decoder_norm: str | None = None,
    fast: bool = True,
    compile: bool | str = False,
    verbose: bool = True,
) -> Run:
    """Fit ClaDec (and its RefAE) for one layer of a classifier and save them as a run directory.

    Args:
        out: Run directory to write (replaced atomically).
        dataset: Data set name for :func:`cladec.data.load_dataset`.
        layer: Dotted layer name.
        classifier_dir: A classifier checkpoint directory, or
        factory, weights, factory_kwargs: a user model ``"pkg.mod:fn"`` and its weights file.
        input_norm: ``(mean, std)`` for a factory model (checkpoints record their own).
        alpha: ClaDec's α.
        neurons: Optional unit subset.
        epochs: ClaDec epochs; ``refae_epochs`` (default: the same) for the RefAE.
        refae: Also fit the RefAE (with the same epochs, both at once: :func:`cladec.fit_together`).
        batch_size, lr, seed: Training settings.
        size: Resize images to ``size`` (e.g. 32 as in the paper); default: the size the classifier was trained
            at when ``dataset`` is its training data set, else the data's own size.
        limit: Use the first ``limit`` training images.
        test_limit: Test images used for the quick metrics stored in ``run.json``.
        data_root: Data root (default: ``$CLADEC_DATA`` if set, else the one the checkpoint recorded for this
            data set if it exists, else the user cache).
        device: Device (default: CUDA if available, else CPU).
        decoder_norm: ``None`` or ``"batch"``.
        fast: Use the fast training path.
        compile: ``torch.compile`` the training losses, ``True`` or a mode (see :meth:`ClaDec.fit`; pays off
            for long fits).
        verbose: Progress bars.

    Returns:
        The :class:`Run`.

    Example:
        >>> run = fit_run("runs/conv4", classifier_dir="clf", dataset="fashion-mnist-mini", layer="conv4")  # doctest: +SKIP
    """
    import time

    from .data import load_dataset
    from .explainer import ClaDec, RefAE, fit_together
    from .explanation import explain

    out = Path(out)
    check_replaceable(out, "run.json", "cladec run directory")  # before any training
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if classifier_dir is not None:
        spec: dict[str, Any] = {"type": "checkpoint", "path": str(Path(classifier_dir).resolve())}
    elif factory is not None:
        spec = {"type": "factory", "factory": factory, "weights": str(Path(weights).resolve()) if weights else None,
                "kwargs": dict(factory_kwargs or {}), "input_norm": input_norm}
    else:
        raise ConfigError("give the classifier as classifier_dir= or as factory= (with weights=)")
    model, info = load_classifier_spec(spec, Path.cwd(), device=dev)
    norm = info.get("input_norm") if spec["type"] == "checkpoint" else input_norm
    rec = info.get("dataset") or {}
    same_data = _same_dataset(rec.get("name"), dataset)
    if size is None and same_data:  # the size the classifier was trained at: its recorded resize, else its shape
        shape = rec.get("image_shape")
        size = rec.get("size") or (list(shape[1:]) if isinstance(shape, (list, tuple)) and len(shape) == 3 else None)
    if (data_root is None and same_data and rec.get("root") and not os.environ.get("CLADEC_DATA")
            and Path(rec["root"]).is_dir()):
        data_root = rec["root"]  # where the classifier's training data was found (`train-classifier --data-root`)
    train = load_dataset(dataset, root=data_root, split="train", size=size, limit=limit)
    test = load_dataset(dataset, root=data_root, split="test", size=size, limit=test_limit)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    e = ClaDec(model, layer, alpha=alpha, neurons=neurons, input_norm=norm, decoder_norm=decoder_norm)
    r = RefAE.like(e, init_seed=seed) if refae else None
    kw = dict(batch_size=batch_size, lr=lr, seed=seed, verbose=verbose, fast=fast, compile=compile)
    if r is not None and (refae_epochs or epochs) == epochs:
        # both at once: on a GPU their steps overlap (same result as one after the other); RefAE is made before
        # ClaDec is built, so both decoders are built from the same seed and start from the same weights
        fit_together([e, r], train, epochs=epochs, **kw)
        timings["cladec_refae_s"] = round(time.perf_counter() - t0, 2)
    else:
        e.fit(train, epochs=epochs, **kw)
        timings["cladec_s"] = round(time.perf_counter() - t0, 2)
        if r is not None:
            t0 = time.perf_counter()
            r.fit(train, epochs=refae_epochs or epochs, **kw)
            timings["refae_s"] = round(time.perf_counter() - t0, 2)
    xt, yt = test.tensors()
    summary = explain(xt, cladec=e, refae=r, labels=yt).summary()
    config = {
        "format": "cladec-run",
        "format_version": 1,
        "classifier": spec,
        "dataset": {"name": dataset, "size": size, "root": str(Path(data_root).resolve()) if data_root else None,
                    "limit": limit, "n_train": len(train), "classes": list(train.classes),
                    "image_shape": list(train.image_shape)},
        "image_shape": list(train.image_shape),
        "input_norm": norm,
        "layer": e.layer,
        "neurons": e.neurons,
        "alpha": alpha,
        "epochs": epochs,
        "refae_epochs": (refae_epochs or epochs) if refae else None,
        "batch_size": batch_size,
        "lr": lr,
        "seed": seed,
        "fast": fast,
        "compile": compile_mode(compile) if fast else None,  # the plain path compiles nothing
        "metrics": {"test_images": len(test), **summary},
        "timings": timings,
        "collapsed": {"cladec": e.collapsed, "refae": r.collapsed if r is not None else None},
        "device": str(dev),
    }
    from ._version import __version__

    config["cladec_version"] = __version__
    with atomic_dir(out, "run.json", "cladec run directory") as tmp:
        if spec["type"] == "checkpoint":
            # store the classifier path relative to the final run directory when possible
            spec = dict(spec, path=_rel_or_abs(Path(spec["path"]), out.resolve().parent / out.name),
                        abs_path=spec["path"])
            config["classifier"] = spec
        e.save(tmp / "cladec")
        if r is not None:
            r.save(tmp / "refae")
        write_json(tmp / "run.json", config)
    return Run(path=out, config=config, classifier=model, classifier_info=info, cladec=e, refae=r)


def load_run(path: str | os.PathLike, device: str | torch.device | None = None) -> Run:
    """Load a run directory written by :func:`fit_run` / ``cladec fit``.

    Args:
        path: The run directory.
        device: Where to put the models (default: CUDA if available, else CPU).

    Returns:
        The :class:`Run` with classifier, ClaDec and RefAE (None if not fitted) loaded.

    Raises:
        SaveFormatError: If ``path`` is not a run directory.

    Example:
        >>> run = load_run("runs/conv4")  # doctest: +SKIP
        >>> run.cladec.reconstruct(x)  # doctest: +SKIP
    """
    from .persistence import load

    path = Path(path)
    if not path.is_dir():
        raise SaveFormatError(f"run directory not found: {path} (make one with `cladec fit`)")
    cfg_file = path / "run.json"
    if not cfg_file.is_file():
        raise SaveFormatError(f"{path} is not a cladec run directory: it has no run.json (make one with `cladec fit`)")
    cfg = read_json(cfg_file, "cladec run file")
    if cfg.get("format") != "cladec-run":
        raise SaveFormatError(f"{cfg_file} is not a cladec run file (format {cfg.get('format')!r})")
    dev = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, info = load_classifier_spec(cfg["classifier"], path, device=dev)
    e = load(path / "cladec", model)
    r = load(path / "refae", model) if (path / "refae").is_dir() else None
    return Run(path=path, config=cfg, classifier=model, classifier_info=info, cladec=e, refae=r)
