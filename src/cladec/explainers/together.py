"""Fitting several explainers of one classifier at once: :func:`fit_together` (one pass over the data; their steps
overlapped on a GPU), which :meth:`ClaDec.fit <cladec.explainers.fitting.FitMixin.fit>` also calls for one."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._errors import ConfigError, DataError
from ..data.adapt import prepare
from ..defaults import DEFAULT_RECIPE
from ..training import distributed
from ..training.engine import Engine, EngineConfig
from ..training.options import check_amp, check_fit_args
from ..training.schedule import Recipe, loader_steps, recipe_lr, resolve_recipe
from .validation import check_stopping, epoch_hook, n_images, prepare_validation, split_validation, stop_rule

if TYPE_CHECKING:
    from .base import DecoderExplainer

__all__ = ["fit_together"]


def fit_together(
    explainers: Sequence[DecoderExplainer],
    data: Any,
    epochs: int = 5,
    *,
    batch_size: int = 128,
    lr: float | None = None,
    weight_decay: float = 1e-5,
    lr_decay: str | None = None,
    seed: int | None = 0,
    verbose: bool = True,
    fast: bool = True,
    log_every: int = 50,
    channels_last: bool | None = None,
    compile: bool | str = False,
    amp: bool | None = None,
    workers: int = 0,
    recipe: str | Recipe = DEFAULT_RECIPE,
    checkpoint: str | os.PathLike | None = None,
    validation: Any = None,
    until_mse: float | None = None,
    patience: int | None = None,
) -> list[DecoderExplainer]:
    """Fit several explainers (typically a :class:`ClaDec` and its :class:`RefAE`) on the same data at once.

    They train in lockstep over one shuffled batch order with the same settings. On CUDA each one's
    training step runs on its own stream inside one CUDA graph, so the GPU overlaps their small kernels
    and the pair finishes sooner than two fits in a row (about 1.4× on an H200); elsewhere the steps simply
    alternate. Images and labels are placed on the device once for all of them. Each explainer ends up as
    :meth:`ClaDec.fit` with the same arguments would leave it (identical weights when the trained modules
    have no random layers such as dropout; otherwise the random draws differ); the ``seconds`` in its
    ``fit_config`` and ``history`` are those of the joint fit. Data that is streamed batch by batch (a
    DataLoader, or a Dataset too large to materialise) is fitted one explainer after the other.

    Args:
        explainers: The explainers to fit (distinct objects on the same device).
        data: As for :meth:`ClaDec.fit` (labels are needed if any explainer needs them).
        epochs: As for :meth:`ClaDec.fit`, shared by all explainers.
        batch_size: As for :meth:`ClaDec.fit`, shared by all explainers.
        lr: As for :meth:`ClaDec.fit`, shared by all explainers.
        weight_decay: As for :meth:`ClaDec.fit`, shared by all explainers.
        lr_decay: As for :meth:`ClaDec.fit`, shared by all explainers.
        seed: As for :meth:`ClaDec.fit`, shared by all explainers.
        verbose: As for :meth:`ClaDec.fit`, shared by all explainers.
        fast: As for :meth:`ClaDec.fit`, shared by all explainers.
        log_every: As for :meth:`ClaDec.fit`, shared by all explainers.
        channels_last: As for :meth:`ClaDec.fit`, shared by all explainers.
        compile: As for :meth:`ClaDec.fit`, shared by all explainers.
        amp: As for :meth:`ClaDec.fit`, shared by all explainers.
        workers: As for :meth:`ClaDec.fit` (a lazy data set is streamed: the explainers fit one after the other).
        recipe: As for :meth:`ClaDec.fit`, shared by all explainers.
        validation: As for :meth:`ClaDec.fit`; each explainer's ``val_mse`` is its own.
        until_mse: As for :meth:`ClaDec.fit`; fitted together, the explainers stop when every one has reached it.
        patience: As for :meth:`ClaDec.fit`; they stop when none has improved for that many epochs.
        checkpoint: A file for epoch checkpoints (:mod:`cladec.training.resume`): written after every epoch, and a
            fit with the same file and settings resumes from it (also on another number of ranks).

    Returns:
        The list of explainers, trained.

    Raises:
        ConfigError: For an empty list, a repeated explainer, explainers on different devices or sharing
            trainable parameters, or a bad setting (also ``compile`` with ``fast=False`` and ``amp=True`` on a
            device other than CUDA or CPU, which would be ignored).
        DataError: If an explainer was built for images of another shape, or a BatchNorm layer being trained
            would see one image (a single training image, a streamed batch of one).

    Examples:
        >>> ds = cladec.data.load_dataset("fashion-mnist-mini", limit=500)
        >>> e = cladec.ClaDec(classifier, "conv2", alpha=0.001)
        >>> r = cladec.RefAE.like(e, init_seed=0)
        >>> cladec.fit_together([e, r], ds, epochs=1, lr=3e-3, batch_size=32)
        [ClaDec(layer='conv2', ..., fitted=True), RefAE(layer='conv2', ..., fitted=True)]
    """
    import contextlib

    explainers = list(explainers)
    if not explainers:
        raise ConfigError("fit_together needs at least one explainer (e.g. [ClaDec(...), RefAE.like(...)])")
    for e in explainers:
        if not callable(getattr(e, "_fit_begin", None)):  # fitting.FitMixin's (which imports this module)
            raise ConfigError(f"fit_together takes ClaDec and RefAE explainers, got {type(e).__name__}")
    if len({id(e) for e in explainers}) != len(explainers):
        raise ConfigError("fit_together got the same explainer twice; pass each one once")
    devices = {str(e.device) for e in explainers}
    if len(devices) > 1:
        raise ConfigError(f"explainers fitted together must share a device, got {sorted(devices)}")
    rcp = resolve_recipe(recipe)
    check_stopping(validation, until_mse, patience)
    lr = recipe_lr(rcp, lr, batch_size)
    check_fit_args(epochs, batch_size, lr, weight_decay, lr_decay, log_every, compile, fast, seed, rcp)
    check_amp(amp, explainers[0].device)
    if batch_size < 2 and any(has_batchnorm(e) for e in explainers):
        raise ConfigError(
            "batch_size must be at least 2 here: the trained modules have BatchNorm layers, which in "
            "training mode need more than one value per channel"
        )
    kw = dict(
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_decay=lr_decay,
        seed=seed,
        verbose=verbose,
        fast=fast,
        log_every=log_every,
        channels_last=channels_last,
        compile=compile,
        amp=amp,
        workers=workers,
        recipe=rcp,
        until_mse=until_mse,
        patience=patience,
    )
    owners: dict[int, int] = {}
    for i, e in enumerate(explainers):  # one decoder trained by two explainers would be updated by both at once
        for p in e.decoder.parameters() if e.decoder is not None else []:
            if owners.setdefault(id(p), i) != i:
                raise ConfigError(
                    f"explainers {owners[id(p)]} ({explainers[owners[id(p)]].kind}) and {i} ({e.kind}) "
                    "share trainable parameters (the same decoder module?); give each its own"
                )
    needs_labels = any(e._needs_labels() for e in explainers)
    budget = min(e.cache_budget for e in explainers)
    dev = explainers[0].device
    train, val = split_validation(data, validation, seed)
    prepared = prepare(
        train,
        need_labels=needs_labels,
        max_bytes=budget * 4,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        device=dev,
        shard=True,
    )
    distributed.check_sharded(prepared.loader)
    for e in explainers:  # before any of them is built or trained
        e._check_image_shape(prepared.image_shape)  # type: ignore[arg-type]  # prepare() always sets image_shape
    if prepared.x is not None and prepared.x.shape[0] < 2 and any(has_batchnorm(e) for e in explainers):
        raise DataError(
            f"training needs at least 2 images here, got {prepared.x.shape[0]}: the trained modules have "
            "BatchNorm layers, which in training mode need more than one value per channel"
        )
    if len(explainers) > 1 and not prepared.in_memory:
        for e in explainers:  # streamed batches come one at a time: fit one explainer after the other
            own = None if checkpoint is None else f"{checkpoint}.{e.kind}"  # one file each
            fit_together([e], data, epochs, checkpoint=own, validation=validation, **kw)  # type: ignore[arg-type]  # kw: fit_together's
        return explainers
    tasks = [
        e._fit_begin(prepared, seed=seed, lr=lr, weight_decay=weight_decay, fast=fast, channels_last=channels_last)
        for e in explainers
    ]
    kinds = [e.kind for e in explainers]
    for i, t in enumerate(tasks):  # names shown in the progress bar and in errors: unique
        if kinds.count(t.name) > 1:
            t.name = f"{t.name}{kinds[: i + 1].count(t.name)}"
    cfg = EngineConfig(
        epochs=epochs,
        batch_size=batch_size,
        fast=fast,
        log_every=log_every,
        verbose=verbose,
        desc="+".join(e.kind for e in explainers),
        seed=seed,
        lr_decay=lr_decay,
        channels_last=channels_last,
        compile=compile,
        amp=amp,
        recipe=rcp if rcp.scheduled else None,  # a constant recipe sets no learning rate: the paper's fit bit for bit
        epoch_steps=loader_steps(prepared.loader),
        checkpoint=checkpoint,
        stop=stop_rule(until_mse, patience),
        set_epoch=getattr(prepared.loader, "set_epoch", None),
    )
    if val is not None:  # every epoch's record gets val_mse
        held_out = prepare_validation(val, batch_size=batch_size, max_bytes=budget * 4, workers=workers, device=dev)
        for e, t in zip(explainers, tasks, strict=True):
            t.on_epoch_end = epoch_hook(e, held_out, batch_size)
    placed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with contextlib.ExitStack() as stack:
        for e in explainers:
            stack.enter_context(e._training_mode())
            e._placed = placed  # images and labels placed on the device (or pinned) once for all of them

        def unplace() -> None:
            for e in explainers:
                e._placed = None

        stack.callback(unplace)
        engine = Engine.joint(tasks, dev, cfg)
        try:
            if prepared.in_memory:
                results = engine.run_all(tensors=[e._train_tensors(prepared) for e in explainers])
            else:
                first = explainers[0]
                results = engine.run_all(batches=lambda: first._stream(prepared))
        except ValueError as err:  # torch's BatchNorm check, for a streamed first batch of one image
            if "Expected more than 1 value per channel" not in str(err):
                raise
            raise DataError(
                "a batch of one image reached a BatchNorm layer in training mode, which needs more than "
                "one value per channel: give batches of at least 2 images"
            ) from err
    base = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, lr_decay=lr_decay, seed=seed, fast=fast
    )
    base["recipe"] = rcp.name
    if val is not None:
        base.update(validation=validation if isinstance(validation, float) else "data", n_val=n_images(held_out))
        base.update(until_mse=until_mse, patience=patience)
    for e, res in zip(explainers, results, strict=True):
        extra = {"fitted_with": [o.kind for o in explainers if o is not e]} if len(explainers) > 1 else {}
        e._fit_end(res, prepared, dict(base, **extra))
    return explainers


def has_batchnorm(e: DecoderExplainer) -> bool:
    """Whether an explainer trains BatchNorm layers (RefAE's encoder, a decoder with decoder_norm='batch')."""
    mods = [m for m in (e.decoder, getattr(e, "encoder", None)) if m is not None]
    if e.decoder is None and e.decoder_norm == "batch":
        return True
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for mod in mods for m in mod.modules())
