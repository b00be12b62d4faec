"""Run directories: one fitted (classifier, layer, α, seed) cell with its ClaDec and RefAE.

Layout written by :func:`fit_run` (and ``cladec fit``)::

    run/
      run.json        {"format": "cladec-run", "classifier": {...}, "dataset": {...}, "layer", "neurons",
                       "alpha", "epochs", "seed", "metrics": {...}, "timings": {...}, ...}
      cladec/         ClaDec save (cladec.json + weights.safetensors)
      refae/          RefAE save (absent when fitted with refae=False)

``run.json["classifier"]`` is ``{"type": "checkpoint", "path": ...}`` (a directory made by
``cladec train-classifier`` / :func:`cladec.models.save_classifier`; the path is stored relative
to the run directory when possible) or ``{"type": "factory", "factory": "pkg.mod:fn", "weights": ...,
"kwargs": {...}, "input_norm": ...}`` for a user's own model (``{"type": "source", "source": "timm:NAME", ...}`` for
one built by :func:`cladec.models.load_model`). Loading such a run imports that module and
calls the factory again, so a run directory is code you run: load only run directories you trust.

Both entries record ``"weights_sha256"``, the identity of the classifier's weights (the checkpoint's
recorded SHA-256, or that of the ``--weights`` file); :func:`load_run` refuses a run whose classifier has
been replaced since (e.g. a new ``cladec train-classifier --out`` at the same path), because its decoders
would then explain another model. Runs of earlier versions, without it, load unchecked.

What a run folder may point at (checked by :func:`load_run`):

* Its own files -- ``run.json``, ``cladec/`` and ``refae/`` with their ``cladec.json`` and
  ``weights.safetensors`` -- must lie in the run folder: a symbolic link (or a chain of them) that leads out of
  it is refused, naming the link and where it leads (cladec writes every one of them into the folder, so a link
  out was put there by hand). Links that stay inside the folder, and the run folder itself reached through a
  link, are fine. The same holds for the two files of a classifier checkpoint within its folder.
* ``classifier.path`` is a reference to the checkpoint the user named at fit time, stored relative to the run
  folder (usually ``../clf``, ``..`` included) with ``abs_path`` as a fallback, or absolute: it may lead outside
  the run folder (that is where checkpoints live), but it must name a classifier checkpoint, and that
  checkpoint's weights must be the ones ``weights_sha256`` recorded.
* Every field of ``run.json`` is checked against a schema (:data:`cladec._schema.RUN`) before it is used.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._checks import positive_int
from ._checks import seed as check_seed
from ._errors import ConfigError, SaveFormatError
from ._io import atomic_dir, check_inside, check_replaceable, read_json, write_json
from ._schema import RUN, validate
from ._tensors import device as checked_device
from ._tensors import image_tensor
from ._version import __version__
from .capture import resolve_layer_or_role
from .data.load import load_dataset
from .data.recorded import data_root_for, load_recorded_dataset, recorded_dataset_name, same_dataset
from .data.sizes import check_dataset_fits
from .explainers.cladec import ClaDec
from .explainers.refae import RefAE
from .explainers.together import fit_together
from .explanation import Explanation, explain
from .models.roles import ROLES, default_layers
from .models.spec import (
    check_fit_fits,
    classifier_classes,
    classifier_entry,
    entry_weights_sha256,
    load_classifier_spec,
    recorded_size,
    rel_or_abs,
)
from .persistence import load
from .training import distributed
from .training.options import compile_mode
from .training.schedule import resolve_recipe

__all__ = ["Run", "fit_run", "load_run", "explain_run"]


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


_RUN_HINT = "fit the run again with `cladec fit`"


def fit_run(
    out: str | os.PathLike,
    *,
    dataset: str | None = None,
    layer: str,
    classifier_dir: str | os.PathLike | None = None,
    factory: str | None = None,
    weights: str | None = None,
    factory_kwargs: dict[str, Any] | None = None,
    input_norm: Any = None,
    alpha: float = 0.001,
    neurons: Sequence[int] | None = None,
    layout: str | None = None,
    epochs: int = 5,
    refae: bool = True,
    refae_epochs: int | None = None,
    batch_size: int = 128,
    lr: float | None = None,
    seed: int = 0,
    size: int | None = None,
    limit: int | None = None,
    test_limit: int | None = 2000,
    data_root: str | None = None,
    device: str | None = None,
    decoder_norm: str | None = None,
    decoder_arch: str = "auto",
    fast: bool = True,
    compile: bool | str = False,
    verbose: bool = True,
    names: Mapping[str, str] | None = None,
    num_classes: int | None = None,
    pretrained: bool = False,
    lazy: bool = False,
    workers: int = 0,
    recipe: str = "paper",
    resume: bool = False,
) -> Run:
    """Fit ClaDec (and its RefAE) for one layer of a classifier and save them as a run directory.

    Args:
        out: Run directory to write (replaced atomically).
        dataset: Data set name for :func:`cladec.data.load_dataset` (default: the one the checkpoint records).
        layer: Dotted layer name, or a role the architecture names (``"last"``, ``"middle"``).
        classifier_dir: A classifier checkpoint directory (or give ``factory`` and ``weights`` instead), or a model
            source (``torchvision:NAME``, ``timm:NAME``; with ``weights``, ``num_classes``, ``pretrained``).
        factory: A user model's factory ``"pkg.mod:fn"`` (not with ``classifier_dir``).
        weights: The user model's weights file (safetensors or a state dict; never unpickled).
        factory_kwargs: Keyword arguments for ``factory``.
        input_norm: ``(mean, std)`` for a factory model (checkpoints record their own; not with
            ``classifier_dir``).
        alpha: ClaDec's α.
        neurons: Optional unit subset.
        layout: The layer output's layout (``"nchw"``, ``"nhwc"``, ``"tokens"``, ``"flat"``; default: detected).
        epochs: ClaDec epochs; ``refae_epochs`` (default: the same) for the RefAE (only with ``refae=True``).
        refae: Also fit the RefAE (with the same epochs, both at once: :func:`cladec.fit_together`).
        batch_size: Training batch size.
        lr: Learning rate (default: the recipe's; the peak of a scheduled one).
        seed: Seed of initialisation and shuffling.
        size: Resize images to ``size`` (e.g. 32 as in the paper); default: the size the classifier was trained
            at when its checkpoint records it (also for another data set: the classifier expects that size),
            else the data's own size.
        limit: Use the first ``limit`` training images.
        test_limit: Test images used for the quick metrics stored in ``run.json``.
        data_root: Data root (default: ``$CLADEC_DATA`` if set, else the one the checkpoint recorded for this
            data set if it exists, else the user cache).
        device: Device (default: CUDA if available, else CPU).
        decoder_norm: ``None`` or ``"batch"``.
        decoder_arch: ``"auto"``, ``"paper"`` or ``"scaled"`` (:func:`cladec.decoder.build_decoder`); recorded in
            ``run.json`` (``decoder_arch``; the built one in each save's ``cladec.json``).
        fast: Use the fast training path.
        compile: ``torch.compile`` the training losses, ``True`` or a mode (see :meth:`ClaDec.fit`; pays off
            for long fits).
        verbose: Progress bars.
        names: How messages name the arguments (the command line passes its options, ``--model``, ``--size``).
        lazy: Read the data set lazily (``load_dataset(lazy=True)``): training streams it and memory does not grow
            with the number of images; the ``test_limit`` test images are decoded for the metrics. Recorded in
            ``run.json`` (``dataset.lazy``), so ``cladec explain`` decodes only the images it draws.
        workers: DataLoader worker processes that decode the lazily read images (:meth:`ClaDec.fit`).
        recipe: The training recipe of both fits (:meth:`ClaDec.fit`): ``"paper"`` or ``"fast"``; in ``run.json``.
        resume: Write an epoch checkpoint of the fit to ``<out>.checkpoint/`` after every epoch and, when one of an
            interrupted fit with the same settings is there, continue from it (:mod:`cladec.training.resume`; also
            on another number of ranks); the folder is removed once the run directory is written.

    Raises:
        ConfigError: No classifier, an unknown layer, no data set, settings that would be ignored (``input_norm``,
            ``factory``, ``weights`` or ``factory_kwargs`` with ``classifier_dir``; ``refae_epochs`` with
            ``refae=False``), or images and batches that could not fit in memory (:func:`check_fit_fits`, checked
            before any data is loaded).
        SaveFormatError: ``out`` is a file or a non-empty folder that is not a run directory.

    Returns:
        The :class:`Run`.

    Examples:
        >>> run = fit_run(
        ...     "conv2-run", classifier_dir=clf_dir, dataset="fashion-mnist-mini", layer="conv2",
        ...     epochs=1, limit=500, test_limit=100, lr=3e-3, batch_size=32, verbose=False,
        ... )
        >>> run.layer, run.alpha, run.refae is not None
        ('conv2', 0.001, True)
        >>> sorted(p.name for p in run.path.iterdir())
        ['cladec', 'refae', 'run.json']
        >>> run.config["metrics"]["mse_cladec"] < 0.2
        True
    """
    import time

    out = Path(out)
    if distributed.is_main():  # data-parallel: only rank 0 writes the run (its path may exist on its node only)
        check_replaceable(out, "run.json", "cladec run directory")  # before any training
    spec = classifier_entry(
        classifier_dir,
        factory=factory,
        weights=weights,
        factory_kwargs=factory_kwargs,
        input_norm=input_norm,
        names=names,
        num_classes=num_classes,
        pretrained=pretrained,
    )
    resolve_recipe(recipe)  # an unknown name is refused before any work
    if not refae and refae_epochs is not None:
        raise ConfigError("refae_epochs sets the RefAE's epochs, but refae=False fits no RefAE; drop one of them")
    dev = checked_device(device, "device")
    model, info = load_classifier_spec(spec, Path.cwd(), device=dev)
    probed = layer in ROLES and not default_layers(model)  # a user's model that no family rule fits: see below
    layer = layer if probed else resolve_layer_or_role(model, layer)  # fails fast, listing valid names
    rec, shown = info.get("dataset") or {}, {"dataset": "dataset=", **(names or {})}
    dataset = recorded_dataset_name(dataset or rec.get("name"))  # a relative imagefolder: would break elsewhere
    if not dataset:
        raise ConfigError(f"give the data set ({shown['dataset']}): the classifier records none")
    check_fit_fits(
        dataset,
        model,
        info,
        size=size,
        limit=limit,
        test_limit=test_limit,
        batch_size=batch_size,
        device=dev,
        names=names,
        lazy=lazy,
    )
    # the classifier's identity, so that load_run notices when another classifier replaced it
    spec["weights_sha256"] = entry_weights_sha256(spec, info)
    norm = input_norm if spec["type"] == "factory" else info.get("input_norm")  # a source's: from its metadata
    same_data = same_dataset(rec.get("name"), dataset)
    size = recorded_size(info) if size is None else size  # the size the classifier was trained at (H, W too)
    if data_root is None and same_data:
        # where the classifier's training data was found (`train-classifier --data-root`), unless $CLADEC_DATA
        data_root = data_root_for(None, rec.get("root"), env_first=True)
    train = load_dataset(dataset, root=data_root, split="train", size=size, limit=limit, lazy=lazy)
    test = load_dataset(dataset, root=data_root, split="test", size=size, limit=test_limit, lazy=lazy)
    if probed:  # the role from one probe forward of a training image (cladec.models.roles)
        layer = resolve_layer_or_role(model, layer, image_tensor(train[0][0].unsqueeze(0)).to(dev))  # lazy: uint8
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    e = ClaDec(
        model,
        layer,
        alpha=alpha,
        neurons=neurons,
        input_norm=norm,
        decoder_norm=decoder_norm,
        layout=layout,
        decoder_arch=decoder_arch,
    )
    r = RefAE.like(e, init_seed=seed) if refae else None
    kw: dict[str, Any] = dict(batch_size=batch_size, lr=lr, seed=seed, verbose=verbose, fast=fast, compile=compile)
    kw.update(workers=workers, recipe=recipe)
    ckpt = out.parent / f"{out.name}.checkpoint"  # epoch checkpoints (resume=True)

    def checkpoint(name: str) -> Path | None:
        return ckpt / f"{name}.pt" if resume else None

    if r is not None and (refae_epochs or epochs) == epochs:
        # both at once: on a GPU their steps overlap (same result as one after the other); RefAE is made before
        # ClaDec is built, so both decoders are built from the same seed and start from the same weights
        fit_together([e, r], train, epochs=epochs, checkpoint=checkpoint("cladec+refae"), **kw)
        timings["cladec_refae_s"] = round(time.perf_counter() - t0, 2)
    else:
        fit_together([e], train, epochs=epochs, checkpoint=checkpoint("cladec"), **kw)
        timings["cladec_s"] = round(time.perf_counter() - t0, 2)
        if r is not None:
            t0 = time.perf_counter()
            fit_together([r], train, epochs=refae_epochs or epochs, checkpoint=checkpoint("refae"), **kw)
            timings["refae_s"] = round(time.perf_counter() - t0, 2)
    xt, yt = test.tensors()
    summary = explain(xt, cladec=e, refae=r, labels=yt).summary()
    config = {
        "format": "cladec-run",
        "format_version": 1,
        "classifier": spec,
        "dataset": {
            "name": dataset,
            "size": size,
            "root": str(Path(data_root).resolve()) if data_root else None,
            "limit": limit,
            "n_train": len(train),
            "classes": list(train.classes),
            "image_shape": list(train.image_shape),
            "lazy": lazy,
        },
        "image_shape": list(train.image_shape),
        "input_norm": norm,
        "layer": e.layer,
        "neurons": e.neurons,
        "alpha": alpha,
        "epochs": epochs,
        "refae_epochs": (refae_epochs or epochs) if refae else None,
        "batch_size": batch_size,
        "lr": e.fit_config["lr"],  # the recipe's when not given
        "recipe": e.fit_config["recipe"],
        "seed": seed,
        "fast": fast,
        "compile": compile_mode(compile) if fast else None,  # the plain path compiles nothing
        "decoder_arch": decoder_arch,
        "metrics": {"test_images": len(test), **summary},
        "timings": timings,
        "collapsed": {"cladec": e.collapsed, "refae": r.collapsed if r is not None else None},
        "device": str(dev),
    }

    config["cladec_version"] = __version__
    config["world_size"] = distributed.world()[1]
    if spec["type"] == "checkpoint":
        # store the classifier path relative to the final run directory when possible
        spec = dict(spec, path=rel_or_abs(Path(spec["path"]), out.resolve().parent / out.name), abs_path=spec["path"])
        config["classifier"] = spec

    def write() -> None:
        with atomic_dir(out, "run.json", "cladec run directory") as tmp:
            e.save(tmp / "cladec")
            if r is not None:
                r.save(tmp / "refae")
            write_json(tmp / "run.json", config)

    distributed.write_on_main(write)  # data-parallel: rank 0 writes, the others wait for it
    if resume and distributed.is_main():
        shutil.rmtree(ckpt, ignore_errors=True)  # the run is complete: nothing to resume
    return Run(path=out, config=config, classifier=model, classifier_info=info, cladec=e, refae=r)


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
    validate(cfg, RUN, cfg_file, _RUN_HINT)
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
