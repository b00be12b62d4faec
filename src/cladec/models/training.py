"""Training a classifier (the model to be explained, or the evaluation classifier)."""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from .. import _checks
from .._checks import positive_int
from .._checks import seed as check_seed
from .._errors import ConfigError, DataError, TrainingError
from .._io import check_replaceable
from .._limits import build_on_meta, check_model_fits
from .._tensors import device as checked_device
from .._tensors import model_device
from ..data import adapt
from ..data.adapt import iter_device_batches, place, prepare
from ..data.lazy import LazyImageDataset
from ..data.load import check_trainable, load_dataset
from ..data.sizes import check_dataset_fits
from ..normalize import InputNorm, model_input_norm
from ..training import distributed
from ..training.options import compile_mode
from ._registry import create_model
from .checkpoint import dataset_entry, metrics_entry, save_classifier
from .fast_train import train_fast
from .predict import accuracy_on, check_labels_fit, forward_checked
from .sources import build_library_model, check_arch, library_channels, load_model

__all__ = ["train_classifier", "train_checkpoint"]


def train_classifier(
    model: nn.Module,
    data: Any,
    epochs: int,
    *,
    test_data: Any = None,
    batch_size: int = 128,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    lr_decay: str | None = "step",
    input_norm: Any = None,
    seed: int | None = None,
    device: str | torch.device | None = None,
    verbose: bool = True,
    fast: bool = True,
    channels_last: bool | None = None,
    compile: bool | str = False,
    amp: bool | None = None,
    workers: int = 0,
) -> dict[str, list]:
    """Train a classifier with SGD + momentum and cross-entropy, as the ClaDec authors do.

    With ``lr_decay="step"`` the learning rate is multiplied by 0.1 after every epoch ``e`` (0-based) with
    ``(e + 1) % (epochs // 3 + epochs // 10 + 2) == 0``; ``None`` keeps it constant. In-memory data
    (an :class:`~cladec.data.ImageDataset` or a pair of tensors) is shuffled by index each epoch, without a
    DataLoader; a generic Dataset is loaded into memory first when it fits (4 GiB), else streamed.

    Args:
        model: the classifier (e.g. from :func:`cladec.models.create_model`); trained in place.
        data: training data: an ImageDataset, ``(images, labels)`` tensors (images in ``[0, 1]`` or
            ``uint8``), a Dataset of ``(image, label)`` (or of ``{"image", "label"}`` dicts), an IterableDataset,
            a DataLoader or a list of batches (:func:`cladec.data.adapt.prepare`).
        epochs: number of epochs (>= 1).
        test_data: optional data (same kinds) evaluated after every epoch.
        batch_size: minibatch size.
        lr: initial learning rate.
        momentum: SGD momentum.
        weight_decay: L2 weight decay.
        lr_decay: ``"step"`` (default) or ``None``.
        input_norm: ``(mean, std)`` per channel applied to images before the model, or ``None``.
        seed: seeds the shuffling order and ``torch.manual_seed`` (dropout) for a reproducible run.
        device: where to train; default the model's device.
        verbose: show a tqdm progress bar (epoch, loss, accuracy).
        fast: train in-memory data with cladec's training engine (no per-step host sync; on CUDA bf16
            autocast, fused SGD and CUDA graphs); ``False`` runs the plain loop that checks every step.
        channels_last: channels-last memory format while training (default: on for ``fast`` on CUDA).
        compile: ``torch.compile`` the loss before CUDA-graph capture (on an H200: 0.32 → 0.24 s per
            epoch of 60k Fashion-MNIST images for the paper's VGG, after about 12 s of compiling); a string
            picks the mode, ``"default"`` or ``"max-autotune-no-cudagraphs"``.
        amp: bf16 autocast (default: on CUDA and on CPUs with native bf16; ``False``: float32).
            ``amp=True``, ``compile`` and ``channels_last=True`` apply to the fast path only: with
            ``fast=False``, a DataLoader or a Dataset too big to load (streamed by the plain float32 loop)
            they are refused (ConfigError) rather than ignored.
        workers: DataLoader worker processes that decode a lazily read data set
            (``load_dataset(..., lazy=True)``: always streamed, by the plain loop; under torchrun by the engine,
            each rank its shard; ``uint8`` until the device).

    Returns:
        History ``{"epoch": [...], "lr": [...], "train_loss": [...], "train_acc": [...],
        "test_acc": [...] (only with test_data), "seconds": [...]}``, one entry per epoch; ``lr`` is the
        rate used during that epoch and ``train_acc`` the accuracy on the training batches while training.
        The model is left in eval mode.

    Raises:
        ConfigError: bad hyper-parameter, or a fast-path option where the plain loop runs. DataError: unusable
            data. TrainingError: the loss became NaN/inf.

    Examples:
        >>> from cladec.data import load_dataset
        >>> from cladec.models import create_model
        >>> train = load_dataset("fashion-mnist-mini", limit=2000)
        >>> test = load_dataset("fashion-mnist-mini", split="test", limit=200)
        >>> net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
        >>> hist = train_classifier(net, train, epochs=1, test_data=test, verbose=False)
        >>> sorted(hist), hist["epoch"]
        (['epoch', 'lr', 'seconds', 'test_acc', 'train_acc', 'train_loss'], [1])
        >>> hist["test_acc"][-1] > 0.3  # chance: 0.1
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    epochs = positive_int("epochs", epochs)
    batch_size = positive_int("batch_size", batch_size)
    hyper = (("lr", lr, False), ("momentum", momentum, True), ("weight_decay", weight_decay, True))
    for name, val, lo_ok in hyper:
        if (
            isinstance(val, bool)
            or not isinstance(val, (int, float))
            or not math.isfinite(val)
            or val < 0
            or (val == 0 and not lo_ok)
        ):
            raise ConfigError(f"{name} must be a {'non-negative' if lo_ok else 'positive'} number, got {val!r}")
    if momentum >= 1:
        raise ConfigError(f"momentum must be in [0, 1), got {momentum}")

    _checks.learning_rate(lr, "lr")  # also on the streamed path, which builds its own optimiser
    _checks.seed(seed, "seed", optional=True)
    if isinstance(lr_decay, str) and lr_decay.lower() in ("none", "constant"):
        lr_decay = None
    if lr_decay not in ("step", None):
        raise ConfigError(f"lr_decay must be 'step' or None, got {lr_decay!r}")

    compile_mode(compile)
    fast_only = [
        n
        for n, v in (
            ("amp", amp is True),
            ("compile", compile_mode(compile) is not None),
            ("channels_last", channels_last is True),
        )
        if v
    ]
    if fast_only and not fast:  # before any data is loaded
        _refuse_fast_only(fast_only, "fast=False runs the plain loop", "drop fast=False")

    dev = torch.device(device) if device is not None else model_device(model)
    model.to(dev)
    kw: dict[str, Any] = dict(need_labels=True, batch_size=batch_size, images="raw", workers=workers, device=dev)
    train = place(prepare(data, **kw, seed=seed, what="the training data", shard=True), dev)
    if fast_only and train.x is None:
        big = f"a Dataset over {adapt.MAX_MATERIALISE_BYTES // 2**30} GiB as float32 is streamed"
        what = "a DataLoader is streamed" if isinstance(data, DataLoader) else big
        what = "a lazily read data set is streamed" if isinstance(data, LazyImageDataset) else what
        fix = "pass the data in memory (an ImageDataset or (images, labels) tensors)"
        _refuse_fast_only(fast_only, f"{what} by the plain loop", fix)
    test = None if test_data is None else place(prepare(test_data, **kw, shuffle=False, what="the test data"), dev)
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and train.x is not None and len(train.x) < 2:
        raise DataError(
            f"training needs at least 2 images, got {len(train.x)} (the model's BatchNorm layers in "
            "training mode need more than one value per channel)"
        )

    check_trainable(data, test_data)  # one class only, or test classes never seen in training: refused
    if batch_size < 2 and has_bn:
        raise ConfigError(
            "batch_size must be at least 2 for a model with BatchNorm layers (in training mode they "
            "need more than one value per channel), got 1"
        )
    channels = int(train.x.shape[1]) if train.x is not None else None
    norm = InputNorm(input_norm, channels, device=dev, dtype=torch.float32)

    if seed is not None:
        torch.manual_seed(seed)
    fast_kw = dict(weight_decay=weight_decay, lr_decay=lr_decay, norm=norm, seed=seed, dev=dev, verbose=verbose)
    fast_kw.update(channels_last=channels_last, compile=compile, amp=amp)
    # in memory; streamed data too when data-parallel (each rank its shard; one process keeps the plain loop)
    if fast and (train.x is not None or distributed.world()[1] > 1):
        return train_fast(model, train, test, epochs, batch_size=batch_size, lr=lr, momentum=momentum, **fast_kw)
    distributed.refuse("training a classifier with fast=False (the plain loop)")
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    period = epochs // 3 + epochs // 10 + 2
    steps = math.ceil(len(train.x) / batch_size) if train.x is not None else None

    from tqdm.auto import tqdm

    history: dict[str, list] = {"epoch": [], "lr": [], "train_loss": [], "train_acc": [], "seconds": []}
    if test is not None:
        history["test_acc"] = []
    bar = tqdm(total=epochs * steps if steps else None, disable=not verbose, unit="step", dynamic_ncols=True)
    try:
        for epoch in range(epochs):
            t0 = time.perf_counter()
            model.train()
            cur_lr = float(opt.param_groups[0]["lr"])
            bar.set_description(f"epoch {epoch + 1}/{epochs}")
            loss_sum = torch.zeros((), dtype=torch.float64, device=dev)
            correct = torch.zeros((), dtype=torch.int64, device=dev)
            seen = 0
            for step, (xb, yb) in enumerate(
                iter_device_batches(train, batch_size, shuffle=True, gen=gen, device=dev, what="the training data")
            ):
                xb = norm(xb)
                out = forward_checked(model, xb, yb, "the training data") if step == 0 else model(xb)
                if step:
                    check_labels_fit(yb, out.shape[1], "the training data")  # this loop syncs every step anyway
                loss = F.cross_entropy(out, yb)
                if not bool(torch.isfinite(loss)):
                    raise TrainingError(
                        f"the classifier's loss became {float(loss.detach())} at epoch {epoch + 1}, "
                        f"step {step + 1}; "
                        f"training stopped. Lower the learning rate (now {cur_lr:g}) or check the images for "
                        "NaN/inf values"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += loss.detach().double() * len(yb)
                correct += (out.detach().argmax(1) == yb).sum()
                seen += len(yb)
                bar.update(1)
                if verbose and (step % 20 == 0):
                    bar.set_postfix(
                        loss=f"{float(loss_sum) / seen:.4f}", acc=f"{int(correct) / seen:.4f}", refresh=False
                    )
            if seen == 0:
                raise DataError("the training data yielded no batches")
            history["epoch"].append(epoch + 1)
            history["lr"].append(cur_lr)
            history["train_loss"].append(float(loss_sum) / seen)
            history["train_acc"].append(int(correct) / seen)
            if lr_decay == "step" and (epoch + 1) % period == 0:
                for g in opt.param_groups:
                    g["lr"] *= 0.1
            postfix = {"loss": f"{history['train_loss'][-1]:.4f}", "acc": f"{history['train_acc'][-1]:.4f}"}
            if test is not None:
                history["test_acc"].append(accuracy_on(model, test, 512, norm, dev))
                postfix["test_acc"] = f"{history['test_acc'][-1]:.4f}"
            history["seconds"].append(time.perf_counter() - t0)
            bar.set_postfix(postfix)
    finally:
        bar.close()
        model.eval()
    return history


def _refuse_fast_only(names: list[str], why: str, fix: str) -> None:
    """ConfigError for fast-path options (amp, compile, channels_last) given where the plain loop would ignore them."""
    raise ConfigError(
        f"{', '.join(names)} only appl{'ies' if len(names) == 1 else 'y'} to the fast path (in-memory data with "
        f"fast=True), but {why} (float32, contiguous, not compiled), which would ignore "
        f"{'it' if len(names) == 1 else 'them'}: drop {', '.join(names)}, or {fix}"
    )


def train_checkpoint(
    out: str | os.PathLike,
    *,
    dataset: str,
    arch: str = "vgg-paper",
    epochs: int = 5,
    size: int | None = None,
    limit: int | None = None,
    test_limit: int | None = None,
    batch_size: int = 128,
    lr: float = 0.1,
    width: float | None = None,
    input_norm: Any = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    pretrained: bool = False,
    data_root: str | os.PathLike | None = None,
    download: bool = False,
    seed: int = 0,
    device: str | torch.device | None = None,
    verbose: bool = True,
    names: Mapping[str, str] | None = None,
    lazy: bool = False,
    workers: int = 0,
) -> dict[str, Any]:
    """Train a registered architecture on a data set and save it as a checkpoint folder (``cladec
    train-classifier``): :func:`train_classifier`'s recipe, the test accuracy and the data set recorded.

    Before any data is loaded or a model is built, ``out`` is checked (new, empty, or a checkpoint, whose files
    are replaced) and so are the memory the images, the model and a batch would need.

    Args:
        out: The checkpoint folder (``model.safetensors`` and ``classifier.json`` are written into it).
        dataset: A data set name for :func:`cladec.data.load_dataset`.
        arch: A registered architecture (:func:`cladec.models.list_models`), or a library model
            ``torchvision:NAME`` / ``timm:NAME`` (:func:`cladec.models.load_model`, built for the data set's classes
            and, for timm, its channels); the checkpoint records it as its ``arch``, so ``cladec layers/fit --model
            clf/`` rebuild it. A library model's ``input_norm`` defaults to its metadata's (ImageNet's for most).
        epochs, batch_size, lr, input_norm, seed, device, verbose: As for :func:`train_classifier`
            (``seed`` also seeds the initial weights).
        size: Resize the images to ``size``×``size`` (default: their own size).
        limit, test_limit: Use the first training / test images only.
        width: The architecture's channel width multiplier (default: its own, 1.0; not for library models).
        arch_kwargs: More arguments for a library model's factory (e.g. ``{"img_size": 64}`` for a timm ViT).
        pretrained: Start a library model from the library's pretrained weights (downloaded by the library; the
            classification head is new): fine-tuning.
        data_root: Where the data set is (default: ``$CLADEC_DATA``, else the user cache).
        download: Download a missing MNIST / Fashion-MNIST / CIFAR-10.
        names: How messages name ``size``, ``width``, ``batch_size`` and ``device`` (the command line passes its
            options).
        lazy, workers: Read the data set lazily (``load_dataset(lazy=True)``) and stream it with ``workers``
            DataLoader processes (:func:`train_classifier`).

    Returns:
        ``{"path", "arch", "dataset", "metrics", "summary"}``: the checkpoint folder, its ``classifier.json``
        entries ``dataset`` (:func:`cladec.models.checkpoint.dataset_entry`) and ``metrics`` (``test_acc``,
        ``train_acc``, ``test_images``, ``train_seconds``), and one line saying so (``"test accuracy 0.8120 on
        100 fashion-mnist-mini test images (chance 0.10); trained in 3 s"``).

    Raises:
        ConfigError, DataError: Bad settings, missing data, or data, a model or batches that could not fit in
            memory. SaveFormatError: ``out`` is a file or a folder of other things.

    Examples:
        >>> res = train_checkpoint("clf", dataset="fashion-mnist-mini", width=0.25, epochs=1, limit=500,
        ...                        test_limit=100, verbose=False)
        >>> res["dataset"]["name"], res["metrics"]["test_images"], sorted(p.name for p in res["path"].iterdir())
        ('fashion-mnist-mini', 100, ['classifier.json', 'model.safetensors'])
    """
    shown = {k: k for k in "size width batch_size device arch_kwargs pretrained".split()} | dict(names or {})
    dev = checked_device(device, shown["device"])
    check_seed(seed, "seed")
    # files are written into `out` (never replaced as a folder), so it may be the current directory
    check_replaceable(out, "classifier.json", "cladec classifier checkpoint", in_place=True)
    source = check_arch(arch, width=width, arch_kwargs=arch_kwargs, pretrained=pretrained, names=shown)
    splits = [("test", test_limit)] if lazy else [("train", limit), ("test", test_limit)]  # lazy: streamed
    check_dataset_fits(dataset, splits, size, what=f"{shown['size']} {size}")
    load_kw: dict[str, Any] = dict(root=data_root, size=size, download=download, lazy=lazy)
    train = load_dataset(dataset, split="train", limit=limit, **load_kw)
    test = load_dataset(dataset, split="test", limit=test_limit, **load_kw)
    kw: dict[str, Any] = dict(arch_kwargs or {}) if source else {} if width is None else {"width": width}
    if source:
        kw = {"num_classes": train.num_classes, **library_channels(arch, train.image_shape[0]), **kw}

    def build() -> nn.Module:
        if source:
            return build_library_model(arch, **kw)
        return create_model(arch, in_channels=train.image_shape[0], num_classes=train.num_classes, **kw)

    meta = build_on_meta(build)  # before the real one: a width of 1e6 asks for petabytes of weights
    shape = "×".join(map(str, train.image_shape))
    if meta is not None:
        batch = min(batch_size, len(train))
        check_model_fits(
            meta,
            train.image_shape,
            batch,
            device=dev,
            what=f"training {arch}"
            + (f" at {shown['width']} {width:g}" if width else "")
            + f" on batches of {batch} {shape} images ({shown['batch_size']})",
            hint=f"use a smaller {shown['width']}, {shown['batch_size']} or {shown['size']}",
        )
        del meta
    torch.manual_seed(seed)
    model = (load_model(arch, pretrained=pretrained, init_seed=seed, **kw) if source else build()).to(dev)
    if source and input_norm is None:
        input_norm = model_input_norm(model)  # the model's metadata
    name = arch if source else model.arch
    if verbose:
        print(
            f"training {name} on {train.name} ({len(train)} training / {len(test)} test images, {shape}) "
            f"for {epochs} epoch(s) on {dev}",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    hist = train_classifier(
        model,
        train,
        epochs,
        test_data=test,
        batch_size=batch_size,
        lr=lr,
        input_norm=input_norm,
        seed=seed,
        device=dev,
        verbose=verbose,
        workers=workers,
    )
    ds = dataset_entry(train, test, size=size, root=data_root, limit=limit)
    metrics = metrics_entry(hist, test, time.perf_counter() - t0)
    extra: dict[str, Any] = {"arch": arch, "arch_kwargs": kw} if source else {}
    path = save_classifier(
        Path(out), model.cpu(), dataset=ds, input_norm=input_norm, metrics=metrics, history=hist, **extra
    )
    summary = (
        f"test accuracy {metrics['test_acc']:.4f} on {len(test)} {train.name} test images "
        f"(chance {1 / train.num_classes:.2f}); trained in {metrics['train_seconds']:.0f} s"
    )
    return {"path": path, "arch": name, "dataset": ds, "metrics": metrics, "summary": summary}
