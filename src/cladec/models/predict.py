"""Predictions and accuracy of a classifier."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .._checks import positive_int
from .._errors import ConfigError, DataError, out_of_memory_types
from .._tensors import image_tensor, model_device
from ..data.adapt import Prepared, iter_device_batches, prepare
from ..data.dataset import ImageDataset
from ..normalize import InputNorm

__all__ = ["accuracy", "predict"]


def forward_checked(model: nn.Module, xb: torch.Tensor, yb: torch.Tensor | None, what: str) -> torch.Tensor:
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
        check_labels_fit(yb, out.shape[1], what)
    return out


def check_labels_fit(y: torch.Tensor, n_out: int, what: str) -> None:
    """Labels must index the model's outputs."""
    if len(y) and int(y.max()) >= n_out:
        raise DataError(
            f"{what} has label {int(y.max())} but the model outputs only {n_out} classes; "
            f"build it with num_classes >= {int(y.max()) + 1}"
        )


def accuracy_on(model: nn.Module, d: Prepared, batch_size: int, norm: InputNorm, dev: torch.device) -> float:
    was_training = model.training
    model.eval()
    correct, total = 0, 0
    try:
        with torch.no_grad():
            for i, (xb, yb) in enumerate(
                iter_device_batches(d, batch_size, shuffle=False, gen=None, device=dev, what="the data")
            ):
                xb = norm(xb)
                out = forward_checked(model, xb, yb, "the data") if i == 0 else model(xb)
                if i:
                    check_labels_fit(yb, out.shape[1], "the data")
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
        data: an ImageDataset, ``(images, labels)`` tensors, a Dataset of ``(image, label)`` (or of
            ``{"image", "label"}`` dicts), an IterableDataset, a DataLoader or a list of batches.
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
    batch_size = positive_int("batch_size", batch_size)
    dev = model_device(model)
    d = prepare(data, need_labels=True, batch_size=batch_size, images="raw", what="the data")
    norm = InputNorm(input_norm, int(d.x.shape[1]) if d.x is not None else None, device=dev, dtype=torch.float32)
    return accuracy_on(model, d, batch_size, norm, dev)


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
    batch_size = positive_int("batch_size", batch_size)
    if isinstance(x, ImageDataset):
        x = x.images
    if not isinstance(x, torch.Tensor):
        raise DataError(f"predict needs an image tensor (N, C, H, W) or an ImageDataset, got {type(x).__name__}")
    x = image_tensor(
        x, "the images", channels=None, scale_uint8=False, check_range=False, allow_empty=True, float32=False
    )
    if len(x) == 0:
        return torch.zeros(0, dtype=torch.int64)
    dev = model_device(model)
    norm = InputNorm(input_norm, int(x.shape[1]), device=dev, dtype=torch.float32)
    was_training = model.training
    model.eval()
    preds = []
    try:
        with torch.no_grad():
            for lo in range(0, len(x), batch_size):
                xb = norm(x[lo : lo + batch_size].to(dev, non_blocking=True))
                out = forward_checked(model, xb, None, "the images") if lo == 0 else model(xb)
                preds.append(out.argmax(1).cpu())
    finally:
        model.train(was_training)
    return torch.cat(preds).to(torch.int64)
