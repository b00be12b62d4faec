"""Train, evaluate, save and load the image classifiers that cladec explains.

* :func:`train_classifier` -- SGD with momentum and the ClaDec authors' step decay, on in-memory tensors
  (fast path) or any data set / data loader.
* :func:`accuracy`, :func:`predict` -- batched inference.
* :func:`save_classifier` / :func:`load_classifier` -- a checkpoint directory::

      model.safetensors    the state dict (safetensors: never unpickled)
      classifier.json      {"format": "cladec-classifier", "version": 1, "arch", "arch_kwargs", "dataset",
                            "input_norm", "metrics", "history", "cladec_version"}

* :func:`load_user_model` -- any ``"package.module:function"`` factory plus optional weights.

Images are always in ``[0, 1]``; a classifier trained on normalised inputs gets ``input_norm=(mean, std)``
and every function here applies it before the model.
"""

from __future__ import annotations

import importlib
import math
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ._checks import image_tensor, label_tensor
from ._errors import ConfigError, DataError, SaveFormatError, TrainingError, out_of_memory_types
from ._io import check_inside, file_sha256, load_state_dict_file, load_tensors, read_json, save_tensors, write_json
from ._limits import check_fits
from ._schema import CLASSIFIER, validate
from ._version import __version__
from .capture import _model_device
from .data import ImageDataset
from .models import create_model, list_models

__all__ = [
    "train_classifier",
    "accuracy",
    "predict",
    "save_classifier",
    "load_classifier",
    "load_user_model",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
]

CHECKPOINT_FORMAT = "cladec-classifier"
CHECKPOINT_VERSION = 1
_WEIGHTS_FILE = "model.safetensors"
_INFO_FILE = "classifier.json"
_MAX_MATERIALISE_BYTES = 4 * 2**30  # a generic Dataset is loaded into memory up to this size


# --------------------------------------------------------------------------------------------------
# Data plumbing
# --------------------------------------------------------------------------------------------------


@dataclass
class _Data:
    """Either in-memory ``x`` (uint8 or float, N×C×H×W) and ``y`` (int64), or a ``loader`` of batches."""

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    loader: Iterable | None = None

    def __len__(self) -> int:
        if self.x is not None:
            return int(self.x.shape[0])
        return len(self.loader.dataset) if hasattr(self.loader, "dataset") else 0  # type: ignore[union-attr]  # a loader


_DATA_KINDS = (
    "an ImageDataset, a pair of tensors (images N×C×H×W in [0, 1] or uint8, integer labels N), "
    "a Dataset of (image, label) or a DataLoader of (images, labels) batches"
)


def _check_xy(x: Any, y: Any, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    # any channel count (the classifier is the user's); uint8 stays uint8 until a batch is used
    x = image_tensor(x, f"the images of {what}", channels=None, scale_uint8=False, check_range=False, float32=False)
    return x, label_tensor(y, len(x), what)


def _warn_range(x: torch.Tensor, what: str) -> None:
    """Warn (once per data set: in-memory data, or a loader's first batch) when float images leave [0, 1]:
    cladec gives the classifier [0, 1] images (normalised by ``input_norm``), so it should be trained on them."""
    if x.is_floating_point() and x.numel():
        lo, hi = float(x.min()), float(x.max())
        if not (lo >= -1e-3 and hi <= 1 + 1e-3):
            warnings.warn(
                f"the images of {what} lie in [{lo:.3g}, {hi:.3g}], not [0, 1]: ClaDec and the other tools give "
                "the classifier [0, 1] images. Train on unnormalised images and pass the normalisation as "
                "input_norm=(mean, std) (it is recorded in the checkpoint), unless you normalise consistently "
                "yourself.",
                UserWarning,
                stacklevel=4,
            )


def _split_item(item: Any, what: str) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        for kx, ky in (("image", "label"), ("images", "labels"), ("x", "y")):
            if kx in item and ky in item:
                return item[kx], item[ky]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(f"{what}: every item/batch must be (images, labels), got {type(item).__name__}")


def _as_data(data: Any, what: str, batch_size: int = 128) -> _Data:
    """Accept the data kinds listed in :data:`_DATA_KINDS`."""
    if isinstance(data, ImageDataset):
        return _Data(x=data.images, y=data.labels)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = _check_xy(data[0], data[1], what)
        _warn_range(x, what)
        return _Data(x=x, y=y)
    if isinstance(data, DataLoader):
        return _Data(loader=data)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)
        if n == 0:
            raise DataError(f"{what} is empty")
        xi, _ = _split_item(data[0], what)
        if not isinstance(xi, torch.Tensor):
            raise DataError(
                f"{what}: images must be tensors (C, H, W) in [0, 1], got {type(xi).__name__}; convert them in "
                "the data set (e.g. a ToTensor transform) or use cladec.data.load_dataset"
            )
        if xi.numel() * 4 * n <= _MAX_MATERIALISE_BYTES:
            xs, ys = [], []
            for batch in DataLoader(data, batch_size=512, shuffle=False):
                xb, yb = _split_item(batch, what)
                xs.append(torch.as_tensor(xb))
                ys.append(torch.as_tensor(yb))
            x, y = _check_xy(torch.cat(xs), torch.cat(ys), what)
            _warn_range(x, what)
            return _Data(x=x, y=y)
        return _Data(loader=DataLoader(data, batch_size=batch_size, shuffle=True))
    raise DataError(f"{what} must be {_DATA_KINDS}; got {type(data).__name__}")


def _to_float(x: torch.Tensor) -> torch.Tensor:
    if x.dtype == torch.uint8:
        return x.to(torch.float32).div_(255.0)
    return x.to(torch.float32) if x.dtype != torch.float32 else x


class _Normalize:
    """``(x - mean) / std`` per channel, or the identity."""

    def __init__(self, input_norm: Any, channels: int | None, device: torch.device) -> None:
        self.mean = self.std = None
        if input_norm is None:
            return
        pair = _check_input_norm(input_norm)
        mean, std = (torch.tensor(v, dtype=torch.float32, device=device) for v in pair)
        if channels is not None and len(mean) not in (1, channels):
            raise ConfigError(
                f"input_norm has {len(mean)} values per statistic but the images have {channels} channels; "
                f"give 1 or {channels} means and stds"
            )
        self.mean, self.std = mean.view(1, -1, 1, 1), std.view(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = _to_float(x)
        if self.mean is None or self.std is None:  # both or neither
            return x
        return (x - self.mean) / self.std


def _check_input_norm(input_norm: Any) -> tuple[list[float], list[float]]:
    """Validate ``(mean, std)`` and return them as two equal-length lists of floats."""
    msg = (
        "input_norm must be None or (mean, std), each a number or a sequence with one value per channel and "
        f"std > 0, e.g. ((0.2861,), (0.3530,)); got {input_norm!r}"
    )
    if isinstance(input_norm, (torch.Tensor, np.ndarray)) and input_norm.ndim > 0 and len(input_norm) == 2:
        input_norm = list(input_norm)
    if not isinstance(input_norm, (tuple, list)) or len(input_norm) != 2:
        raise ConfigError(msg)
    out = []
    for v in input_norm:
        if isinstance(v, (torch.Tensor, np.ndarray)):
            v = v.flatten().tolist()
        if isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool):
            v = [v]
        if not isinstance(v, (tuple, list)) or not v:
            raise ConfigError(msg)
        try:
            vals = [float(t) for t in v]
        except (TypeError, ValueError):
            raise ConfigError(msg) from None
        if not all(math.isfinite(t) for t in vals):
            raise ConfigError(msg)
        out.append(vals)
    mean, std = out
    if len(mean) != len(std) or any(s <= 0 for s in std):
        raise ConfigError(msg)
    return mean, std


def _iter_batches(
    d: _Data, batch_size: int, *, shuffle: bool, gen: torch.Generator | None, device: torch.device, what: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, labels)`` on ``device``; images still uint8 or float as stored."""
    if d.x is not None:
        assert d.y is not None
        n = d.x.shape[0]
        order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
        on_dev = d.x.device == device
        if on_dev:
            order = order.to(device)
        for lo in range(0, n, batch_size):
            idx = order[lo : lo + batch_size]
            if shuffle and len(idx) == 1 and n > 1:
                continue  # a batch of one breaks BatchNorm in training mode (1×1 feature maps)
            xb, yb = d.x.index_select(0, idx), d.y.index_select(0, idx)
            if not on_dev:
                xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
            yield xb, yb
        return
    assert d.loader is not None  # not in memory: a loader
    for i, batch in enumerate(d.loader):
        xb, yb = _split_item(batch, what)
        xb, yb = _check_xy(torch.as_tensor(xb), torch.as_tensor(yb), what)
        if i == 0 and shuffle:
            _warn_range(xb, what)
        if shuffle and i > 0 and len(xb) == 1:
            continue  # training: a last batch of one image breaks BatchNorm (as for in-memory data)
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def _place(d: _Data, device: torch.device) -> _Data:
    """Move in-memory data to an accelerator when it fits comfortably."""
    if d.x is None or device.type == "cpu" or d.x.device == device:
        return d
    need = d.x.nbytes + d.y.nbytes  # type: ignore[union-attr]  # y is set with x
    try:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    except Exception:  # noqa: BLE001 - free memory unknown (no CUDA query): the data stays where it is
        free = 0
    if need < 0.5 * free:
        return _Data(x=d.x.to(device), y=d.y.to(device))  # type: ignore[union-attr]  # y is set with x
    return d


def _forward_checked(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor | None, what: str) -> torch.Tensor:
    """Forward the first batch with readable errors for the usual shape mistakes."""
    try:
        out = model(xb)
    except out_of_memory_types():
        raise
    except RuntimeError as e:
        if "out of memory" in str(e):
            raise
        raise DataError(
            f"the model could not process {what} of shape {tuple(xb.shape)} (N, C, H, W): {e}. Check that the "
            "model's in_channels and input size match the images"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"the model must return logits of shape (N, num_classes), got {shape}")
    if yb is not None:
        _check_labels_fit(yb, out.shape[1], what)
    return out


def _check_labels_fit(y: torch.Tensor, n_out: int, what: str) -> None:
    """Labels must index the model's outputs."""
    if len(y) and int(y.max()) >= n_out:
        raise DataError(
            f"{what} has label {int(y.max())} but the model outputs only {n_out} classes; "
            f"build it with num_classes >= {int(y.max()) + 1}"
        )


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def _positive_int(name: str, v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ConfigError(f"{name} must be a positive integer, got {v!r}")
    return v


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
) -> dict[str, list]:
    """Train a classifier with SGD + momentum and cross-entropy, as the ClaDec authors do.

    With ``lr_decay="step"`` the learning rate is multiplied by 0.1 after every epoch ``e`` (0-based) with
    ``(e + 1) % (epochs // 3 + epochs // 10 + 2) == 0``; ``None`` keeps it constant. In-memory data
    (an :class:`~cladec.data.ImageDataset` or a pair of tensors) is shuffled by index each epoch, without a
    DataLoader; a generic Dataset is loaded into memory first when it fits (4 GiB), else streamed.

    Args:
        model: the classifier (e.g. from :func:`cladec.models.create_model`); trained in place.
        data: training data: an ImageDataset, ``(images, labels)`` tensors (images in ``[0, 1]`` or
            ``uint8``), a Dataset of ``(image, label)`` or a DataLoader.
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
    epochs = _positive_int("epochs", epochs)
    batch_size = _positive_int("batch_size", batch_size)
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
    from . import _checks

    _checks.learning_rate(lr, "lr")  # also on the streamed path, which builds its own optimiser
    _checks.seed(seed, "seed", optional=True)
    if isinstance(lr_decay, str) and lr_decay.lower() in ("none", "constant"):
        lr_decay = None
    if lr_decay not in ("step", None):
        raise ConfigError(f"lr_decay must be 'step' or None, got {lr_decay!r}")
    from ._training import compile_mode

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

    dev = torch.device(device) if device is not None else _model_device(model)
    model.to(dev)
    train = _place(_as_data(data, "the training data", batch_size), dev)
    if fast_only and train.x is None:
        what = (
            "a DataLoader is streamed"
            if isinstance(data, DataLoader)
            else f"a Dataset over {_MAX_MATERIALISE_BYTES // 2**30} GiB as float32 is streamed"
        )
        _refuse_fast_only(
            fast_only,
            f"{what} by the plain loop",
            "pass the data in memory (an ImageDataset or (images, labels) tensors)",
        )
    test = _place(_as_data(test_data, "the test data", batch_size), dev) if test_data is not None else None
    has_bn = any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if has_bn and train.x is not None and len(train.x) < 2:
        raise DataError(
            f"training needs at least 2 images, got {len(train.x)} (the model's BatchNorm layers in "
            "training mode need more than one value per channel)"
        )
    from .data import check_trainable

    check_trainable(data, test_data)  # one class only, or test classes never seen in training: refused
    if batch_size < 2 and has_bn:
        raise ConfigError(
            "batch_size must be at least 2 for a model with BatchNorm layers (in training mode they "
            "need more than one value per channel), got 1"
        )
    channels = int(train.x.shape[1]) if train.x is not None else None
    norm = _Normalize(input_norm, channels, dev)

    if seed is not None:
        torch.manual_seed(seed)
    if train.x is not None and fast:
        return _train_in_memory(
            model,
            train,
            test,
            epochs,
            batch_size=batch_size,
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            lr_decay=lr_decay,
            norm=norm,
            seed=seed,
            dev=dev,
            verbose=verbose,
            channels_last=channels_last,
            compile=compile,
            amp=amp,
        )
    gen = torch.Generator()
    gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, (1,)).item()))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    period = epochs // 3 + epochs // 10 + 2
    steps = math.ceil(len(train) / batch_size) if train.x is not None else None

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
                _iter_batches(train, batch_size, shuffle=True, gen=gen, device=dev, what="the training data")
            ):
                xb = norm(xb)
                out = _forward_checked(model, xb, yb, "the training data") if step == 0 else model(xb)
                if step:
                    _check_labels_fit(yb, out.shape[1], "the training data")  # this loop syncs every step anyway
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
                history["test_acc"].append(_accuracy_data(model, test, 512, norm, dev))
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


def _train_in_memory(
    model,
    train,
    test,
    epochs,
    *,
    batch_size,
    lr,
    momentum,
    weight_decay,
    lr_decay,
    norm,
    seed,
    dev,
    verbose,
    channels_last=None,
    compile=False,
    amp=None,
) -> dict[str, list]:
    """Train on in-memory tensors with :class:`cladec._training.Engine` (the fast path)."""
    from ._training import Engine, EngineConfig, make_optimizer

    first = slice(0, min(batch_size, len(train)))
    was = model.training
    model.eval()
    with torch.no_grad():  # readable errors for shape mistakes, before anything is trained
        # all labels are known: check them all against the model's outputs, not just the first batch's
        _forward_checked(model, norm(train.x[first].to(dev)), train.y, "the training data")
    model.train(was)

    def loss_fn(batch):
        out = model(norm(batch["x"]))
        loss = F.cross_entropy(out.float(), batch["y"])
        return loss, {"acc": (out.detach().argmax(1) == batch["y"]).float().mean()}

    history: dict[str, list] = {"epoch": [], "lr": [], "train_loss": [], "train_acc": [], "seconds": []}
    if test is not None:
        history["test_acc"] = []

    def on_epoch_end(rec: dict) -> dict:
        if test is not None:
            rec["test_acc"] = _accuracy_data(model, test, 512, norm, dev)
            model.train()
        return rec

    opt = make_optimizer(
        "sgd", list(model.parameters()), lr=lr, weight_decay=weight_decay, momentum=momentum, device=dev, fast=True
    )
    cfg = EngineConfig(
        epochs=epochs,
        batch_size=batch_size,
        fast=True,
        verbose=verbose,
        desc="classifier",
        seed=seed,
        lr_decay=lr_decay,
        channels_last=channels_last,
        compile=compile,
        amp=amp,
    )
    tensors = {"x": train.x, "y": train.y}
    if dev.type == "cuda" and train.x.device.type == "cpu":
        tensors = {k: v.pin_memory() for k, v in tensors.items()}  # streamed from pinned host memory
    try:
        res = Engine(loss_fn, opt, [model], dev, cfg, ["acc"], on_epoch_end=on_epoch_end).run(tensors=tensors)
    finally:
        model.eval()
    for rec in res.history:
        history["epoch"].append(rec["epoch"])
        history["lr"].append(rec["lr"])
        history["train_loss"].append(rec["loss"])
        history["train_acc"].append(rec["acc"])
        history["seconds"].append(rec["seconds"])
        if test is not None:
            history["test_acc"].append(rec["test_acc"])
    return history


# --------------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------------


def _accuracy_data(model: nn.Module, d: _Data, batch_size: int, norm: _Normalize, dev: torch.device) -> float:
    was_training = model.training
    model.eval()
    correct, total = 0, 0
    try:
        with torch.no_grad():
            for i, (xb, yb) in enumerate(
                _iter_batches(d, batch_size, shuffle=False, gen=None, device=dev, what="the data")
            ):
                xb = norm(xb)
                out = _forward_checked(model, xb, yb, "the data") if i == 0 else model(xb)
                if i:
                    _check_labels_fit(yb, out.shape[1], "the data")
                correct += int((out.argmax(1) == yb).sum())
                total += len(yb)
    finally:
        model.train(was_training)
    if total == 0:
        raise DataError("the data yielded no images")
    return correct / total


def accuracy(model: nn.Module, data: Any, *, batch_size: int = 512, input_norm: Any = None) -> float:
    """Top-1 accuracy of ``model`` on ``data`` (batched, no gradients, eval mode, on the model's device).

    Args:
        model: the classifier (its train/eval mode is restored afterwards).
        data: an ImageDataset, ``(images, labels)`` tensors, a Dataset of ``(image, label)`` or a DataLoader.
        batch_size: images per forward pass.
        input_norm: ``(mean, std)`` applied before the model, or ``None``.

    Returns:
        The fraction of correctly classified images, in ``[0, 1]``.

    Examples:
        >>> from cladec.data import load_dataset
        >>> acc = accuracy(classifier, load_dataset("fashion-mnist-mini", split="test", limit=200))
        >>> 0.3 < acc <= 1.0  # chance is 0.1 (10 classes)
        True
        >>> accuracy(classifier, (x, y)) == accuracy(classifier, (x, y), batch_size=4)
        True
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch_size = _positive_int("batch_size", batch_size)
    dev = _model_device(model)
    d = _as_data(data, "the data", batch_size)
    norm = _Normalize(input_norm, int(d.x.shape[1]) if d.x is not None else None, dev)
    return _accuracy_data(model, d, batch_size, norm, dev)


def predict(model: nn.Module, x: Any, *, batch_size: int = 512, input_norm: Any = None) -> torch.Tensor:
    """Predicted class indices for a batch of images (batched, no gradients, eval mode).

    Args:
        model: the classifier (its train/eval mode is restored afterwards).
        x: images ``(N, C, H, W)`` in ``[0, 1]`` (float) or ``uint8``, or an ImageDataset.
        batch_size: images per forward pass.
        input_norm: ``(mean, std)`` applied before the model, or ``None``.

    Returns:
        A CPU ``LongTensor`` of shape ``(N,)``.

    Examples:
        >>> p = predict(classifier, x[:4])
        >>> p.shape, p.dtype, bool(p.min() >= 0 and p.max() < 10)
        (torch.Size([4]), torch.int64, True)
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    batch_size = _positive_int("batch_size", batch_size)
    if isinstance(x, ImageDataset):
        x = x.images
    if not isinstance(x, torch.Tensor):
        raise DataError(f"predict needs an image tensor (N, C, H, W) or an ImageDataset, got {type(x).__name__}")
    x = image_tensor(
        x, "the images", channels=None, scale_uint8=False, check_range=False, allow_empty=True, float32=False
    )
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.int64)
    dev = _model_device(model)
    norm = _Normalize(input_norm, int(x.shape[1]), dev)
    was_training = model.training
    model.eval()
    preds = []
    try:
        with torch.no_grad():
            for lo in range(0, len(x), batch_size):
                xb = norm(x[lo : lo + batch_size].to(dev, non_blocking=True))
                out = _forward_checked(model, xb, None, "the images") if lo == 0 else model(xb)
                preds.append(out.argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(preds).to(torch.int64)


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------


def _dataset_info(dataset: Any) -> dict | None:
    if dataset is None:
        return None
    if isinstance(dataset, ImageDataset):
        d = dataset.describe()
        # "size" is the resize applied when loading (as `cladec train-classifier --size` records it)
        size = getattr(dataset, "resized_to", None)
        return {
            "name": d["name"],
            "image_shape": d["image_shape"],
            "classes": d["classes"],
            "n_images": d["size"],
            "size": list(size) if size is not None else None,
        }
    if isinstance(dataset, Mapping):
        return dict(dataset)
    raise ConfigError(f"dataset must be an ImageDataset, a dict or None, got {type(dataset).__name__}")


def _check_state_dict_fits(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatched = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or mismatched:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s), e.g. {missing[:5]}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s), e.g. {unexpected[:5]}")
        if mismatched:
            parts.append(f"{len(mismatched)} shape mismatch(es), e.g. {mismatched[:3]}")
        raise SaveFormatError(
            f"the weights in {source} do not fit the model: {'; '.join(parts)}. Build the model with the same "
            "architecture and arguments (e.g. in_channels, num_classes, width) as the one that was saved"
        )


def save_classifier(
    directory: str | Path,
    model: nn.Module,
    *,
    arch: str | None = None,
    arch_kwargs: Mapping[str, Any] | None = None,
    dataset: Any = None,
    input_norm: Any = None,
    metrics: Mapping[str, Any] | None = None,
    history: Mapping[str, Any] | None = None,
) -> Path:
    """Save a registered-architecture classifier as a checkpoint directory (atomic file writes).

    Args:
        directory: the checkpoint directory (created if needed); ``model.safetensors`` and
            ``classifier.json`` are written into it, each atomically, weights first; ``classifier.json``
            records the weights' SHA-256, so a pair left mismatched by an interrupted re-save is refused on
            loading instead of read as one checkpoint.
        model: the classifier.
        arch: registered model name (see :func:`cladec.models.list_models`); default ``model.arch``
            (set by :func:`cladec.models.create_model`).
        arch_kwargs: the arguments that rebuild it (``in_channels``, ``num_classes``, ``width``, ...);
            default ``model.arch_kwargs``.
        dataset: an ImageDataset or a dict ``{name, image_shape, classes, size}`` describing the training data.
        input_norm: ``(mean, std)`` the classifier expects, or ``None``.
        metrics: e.g. ``{"train_acc": 0.93, "test_acc": 0.91}``.
        history: the dict returned by :func:`train_classifier`.

    Returns:
        The checkpoint directory as a ``Path``.

    Examples:
        >>> from cladec.models import create_model
        >>> net = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25)
        >>> save_classifier("clf", net, dataset=train, metrics={"test_acc": 0.9})
        PosixPath('clf')
        >>> sorted(p.name for p in Path("clf").iterdir())
        ['classifier.json', 'model.safetensors']
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    arch = arch if arch is not None else getattr(model, "arch", None)
    arch_kwargs = arch_kwargs if arch_kwargs is not None else getattr(model, "arch_kwargs", None)
    if not isinstance(arch, str) or arch.lower() not in list_models():
        raise ConfigError(
            "arch must name a registered model so the checkpoint can be loaded again "
            f"({', '.join(list_models())}), "
            f"got {arch!r}; models built with cladec.models.create_model() carry it"
        )
    if not isinstance(arch_kwargs, Mapping):
        raise ConfigError(
            "arch_kwargs must be a dict of the arguments that rebuild the model, e.g. "
            "{'in_channels': 1, 'num_classes': 10}"
        )
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise ConfigError(f"{directory} exists and is not a directory; give a directory for the checkpoint")
    info = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "arch": arch.lower(),
        "arch_kwargs": dict(arch_kwargs),
        "dataset": _dataset_info(dataset),
        "input_norm": list(_check_input_norm(input_norm)) if input_norm is not None else None,
        "metrics": dict(metrics) if metrics is not None else {},
        "history": dict(history) if history is not None else {},
        "cladec_version": __version__,
    }
    directory.mkdir(parents=True, exist_ok=True)
    save_tensors(directory / _WEIGHTS_FILE, model.state_dict())
    info["weights_sha256"] = file_sha256(directory / _WEIGHTS_FILE)
    write_json(directory / _INFO_FILE, info)
    return directory


def _weight_bytes_on_meta(build: Any) -> float | None:
    """Bytes of the weights and buffers of the module ``build()`` makes, built on the ``meta`` device (nothing is
    allocated); ``inf`` when even their sizes overflow; None when it cannot be built there (building it for real
    then reports why)."""
    try:
        with torch.device("meta"):
            module = build()
    except RuntimeError as e:
        return math.inf if "overflow" in str(e).lower() else None
    except Exception:  # noqa: BLE001 - bad arguments: the real build reports them
        return None
    if not isinstance(module, nn.Module):
        return None
    return sum(float(t.numel()) * t.element_size() for t in module.state_dict().values())


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load a checkpoint written by :func:`save_classifier` (or ``cladec train-classifier``).

    Args:
        directory: the checkpoint directory (or its ``classifier.json``).
        device: where to put the model.

    Returns:
        ``(model, info)``: the model in eval mode and the parsed ``classifier.json`` (``info["input_norm"]``
        is ``None`` or ``[mean, std]``; ``info["dataset"]["classes"]`` names the classes).

    Raises:
        SaveFormatError: not such a checkpoint, a newer format, or weights that do not fit.

    Examples:
        >>> model, info = load_classifier(clf_dir)  # clf_dir: a saved vgg-paper checkpoint
        >>> info["arch"], info["arch_kwargs"]["width"], model.training
        ('vgg-paper', 0.25, False)
        >>> torch.equal(predict(model, x), predict(classifier, x))
        True
    """
    path = Path(directory)
    if path.is_file() and path.name == _INFO_FILE:
        path = path.parent
    hint = "make one with `cladec train-classifier` or save_classifier()"
    if not path.exists():
        raise SaveFormatError(f"{path} does not exist; expected a cladec classifier checkpoint directory ({hint})")
    if not path.is_dir() or not (path / _INFO_FILE).is_file():
        raise SaveFormatError(f"{path} is not a cladec classifier checkpoint: missing {_INFO_FILE}; {hint}")
    info_file = check_inside(path / _INFO_FILE, path, "the checkpoint's description")
    info = read_json(info_file, what="cladec classifier checkpoint")
    if info.get("format") != CHECKPOINT_FORMAT:
        raise SaveFormatError(
            f"{path / _INFO_FILE} is not a cladec classifier checkpoint: format is {info.get('format')!r}, "
            f"expected {CHECKPOINT_FORMAT!r}; {hint}"
        )
    version = info.get("version")
    if not isinstance(version, int) or version < 1:
        raise SaveFormatError(f"{path / _INFO_FILE} has an invalid version {version!r}; expected 1")
    if version > CHECKPOINT_VERSION:
        raise SaveFormatError(
            f"{path} was written by a newer cladec (checkpoint version {version}; this cladec "
            f"{__version__} reads up to {CHECKPOINT_VERSION}); upgrade cladec"
        )
    arch, kwargs = info.get("arch"), info.get("arch_kwargs")
    if not isinstance(arch, str) or arch.lower() not in list_models():
        raise SaveFormatError(
            f"{path / _INFO_FILE} names the architecture {arch!r}, which this cladec does not know "
            f"(known: {', '.join(list_models())})"
        )
    if not isinstance(kwargs, dict):
        raise SaveFormatError(f"{path / _INFO_FILE}: 'arch_kwargs' must be a JSON object, got {kwargs!r}")
    validate(
        info, CLASSIFIER, info_file, "save the classifier again with `cladec train-classifier` or save_classifier()"
    )
    # an absurd width or class count would ask the allocator for terabytes: estimate on the meta device first
    nbytes = _weight_bytes_on_meta(lambda: create_model(arch, **kwargs))
    if nbytes is not None:
        try:
            check_fits(
                nbytes,
                f"{info_file}: the {arch!r} model of 'arch_kwargs' {kwargs} (its weights)",
                hint="the file is damaged or was edited by hand; save the classifier again",
            )
        except ConfigError as e:
            raise SaveFormatError(str(e)) from None
    try:
        model = create_model(arch, **kwargs)
    except (ConfigError, TypeError) as e:
        raise SaveFormatError(f"{path / _INFO_FILE}: cannot rebuild {arch!r} from arch_kwargs {kwargs}: {e}") from None
    weights = path / _WEIGHTS_FILE
    if not weights.is_file():
        raise SaveFormatError(f"{path} is an incomplete cladec classifier checkpoint: {_WEIGHTS_FILE} is missing")
    check_inside(weights, path, "the checkpoint's weights")
    state = load_tensors(weights)  # a truncated or damaged file is named as such before the digest is compared
    recorded = info.get("weights_sha256")  # absent in checkpoints of earlier cladec versions: not checked
    if recorded is not None and file_sha256(weights) != recorded:
        raise SaveFormatError(
            f"{weights} is not the weights file {path / _INFO_FILE} was saved with (SHA-256 differs): the two "
            "files of this checkpoint do not belong together (an interrupted save, or the weights replaced by "
            "hand); save the classifier again with save_classifier() / `cladec train-classifier`"
        )
    _check_state_dict_fits(model, state, str(weights))
    model.load_state_dict(state, strict=True)
    model.to(device).eval()
    return model, info


# --------------------------------------------------------------------------------------------------
# User models
# --------------------------------------------------------------------------------------------------


def load_user_model(factory: str, weights: str | Path | None = None, **factory_kwargs: Any) -> nn.Module:
    """Build a model from any importable factory and optionally load weights into it.

    Args:
        factory: ``"package.module:function"`` (the attribute may be dotted, e.g. ``"mod:Class.build"``);
            for example ``"torchvision.models:resnet18"``.
        weights: optional ``.safetensors`` file or PyTorch state dict file (read with ``weights_only=True``,
            never a full pickle); a ``{"state_dict": ...}`` wrapper and a ``module.`` prefix (from
            ``DataParallel``) are accepted. Loading is strict.
        **factory_kwargs: keyword arguments for the factory (e.g. ``num_classes=10``).

    Returns:
        The model, in eval mode.

    Raises:
        ConfigError: malformed factory string, module not importable, attribute missing or not callable,
            factory failing or not returning an ``nn.Module``.
        SaveFormatError: unreadable weights, or weights that do not fit (missing/unexpected keys listed).

    Examples:
        >>> net = load_user_model("cladec.models.vgg:vgg_paper", in_channels=1, width=0.25)
        >>> net.training
        False
        >>> torch.save(classifier.state_dict(), "weights.pt")
        >>> net = load_user_model("cladec.models.vgg:vgg_paper", "weights.pt", in_channels=1, width=0.25)
        >>> torch.equal(net.fc.weight, classifier.fc.weight)
        True
        >>> net = load_user_model("torchvision.models:resnet18", num_classes=10)  # needs torchvision  # doctest: +SKIP
    """
    fmt = "factory must look like 'package.module:function' (e.g. 'torchvision.models:resnet18')"
    if not isinstance(factory, str) or factory.count(":") != 1:
        raise ConfigError(f"{fmt}, got {factory!r}")
    mod_name, attr_path = (s.strip() for s in factory.split(":"))
    if (
        not mod_name
        or not attr_path
        or not all(p.isidentifier() for p in attr_path.split("."))
        or not all(p.isidentifier() for p in mod_name.split("."))
    ):
        raise ConfigError(f"{fmt}, got {factory!r}")
    try:
        module = importlib.import_module(mod_name)
    except ModuleNotFoundError as e:
        raise ConfigError(
            f"cannot import module {mod_name!r} for factory {factory!r}: {e}; install the package or add its "
            "folder to PYTHONPATH"
        ) from None
    except Exception as e:  # noqa: BLE001 - the user's module failed while importing
        raise ConfigError(
            f"importing module {mod_name!r} for factory {factory!r} failed: {type(e).__name__}: {e}"
        ) from None
    obj: Any = module
    for part in attr_path.split("."):
        if not hasattr(obj, part):
            names = sorted(n for n in dir(obj) if not n.startswith("_") and callable(getattr(obj, n, None)))
            raise ConfigError(
                f"{factory!r}: {getattr(obj, '__name__', mod_name)!r} has no attribute {part!r}; callables there "
                f"include: {', '.join(names[:15]) or 'none'}"
            )
        obj = getattr(obj, part)
    if not callable(obj):
        raise ConfigError(f"{factory!r} is a {type(obj).__name__}, not a callable that builds a model")
    try:
        model = obj(**factory_kwargs)
    except Exception as e:  # noqa: BLE001 - report any failure of the user's factory
        raise ConfigError(f"calling {factory}(**{factory_kwargs!r}) failed: {type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{factory!r} returned a {type(model).__name__}, not a torch.nn.Module")
    if weights is not None:
        state = load_state_dict_file(weights)
        own = model.state_dict()
        if state and all(k.startswith("module.") for k in state) and not any(k.startswith("module.") for k in own):
            state = {k[len("module.") :]: v for k, v in state.items()}
        _check_state_dict_fits(model, state, str(weights))
        model.load_state_dict(state, strict=True)
    return model.eval()
