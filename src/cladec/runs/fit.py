"""Fitting a run directory: :func:`fit_run` (``cladec fit``); the layout is in :mod:`cladec.runs`."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._io import atomic_dir, check_replaceable, write_json
from .._tensors import device as checked_device
from .._tensors import image_tensor
from .._version import __version__
from ..capture import resolve_layer_or_role
from ..data.load import load_dataset
from ..data.recorded import data_root_for, recorded_dataset_name, same_dataset
from ..defaults import DEFAULT_RECIPE
from ..explainers.cladec import ClaDec
from ..explainers.refae import RefAE
from ..explainers.together import fit_together
from ..explainers.validation import check_stopping
from ..explanation import explain
from ..models.roles import ROLES, default_layers
from ..models.spec import (
    check_fit_fits,
    classifier_entry,
    entry_weights_sha256,
    load_classifier_spec,
    recorded_size,
    rel_or_abs,
)
from ..training import distributed
from ..training.options import compile_mode
from ..training.schedule import resolve_recipe
from .directory import Run

__all__ = ["fit_run"]


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
    recipe: str = DEFAULT_RECIPE,
    resume: bool = False,
    validation: float | None = None,
    until_mse: float | None = None,
    patience: int | None = None,
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
        recipe: The training recipe of both fits (:meth:`ClaDec.fit`): a name in ``RECIPES`` (``"paper"``,
            ``"fast"``, ...); in ``run.json``.
        resume: Write an epoch checkpoint of the fit to ``<out>.checkpoint/`` after every epoch and, when one of an
            interrupted fit with the same settings is there, continue from it (:mod:`cladec.training.resume`; also
            on another number of ranks); the folder is removed once the run directory is written.
        validation: Hold out this fraction of the training images (e.g. 0.1, not trained on) and record their
            reconstruction MSE after every epoch (``val_mse`` in each explainer's history; :meth:`ClaDec.fit`).
        until_mse: Stop each fit after the first epoch whose ``val_mse`` is at most this (needs ``validation``;
            ``epochs`` is then the most); ``run.json`` records the epochs run and why (``stopped``).
        patience: Stop each fit once ``val_mse`` has not improved for this many epochs (needs ``validation``).

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
    resolve_recipe(recipe)  # an unknown name or stopping rule is refused before any work
    check_stopping(validation, until_mse, patience)
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
    kw.update(workers=workers, recipe=recipe, validation=validation, until_mse=until_mse, patience=patience)
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
    if validation is not None:  # held out; the fits may have stopped before their epochs
        config.update(validation=validation, until_mse=until_mse, patience=patience)
        fits = {"cladec": e, "refae": r} if r is not None else {"cladec": e}
        config["stopped"] = {k: x.fit_config.get("stopped") for k, x in fits.items()}
        config["epochs_run"] = {k: len(x.history) for k, x in fits.items()}
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
