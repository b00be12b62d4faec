"""The classifier's view of user data: (images, labels) of any channel count, in batches on a device."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from .._errors import DataError
from .._tensors import image_tensor, label_tensor
from .dataset import ImageDataset

MAX_MATERIALISE_BYTES = 4 * 2**30  # a generic Dataset is loaded into memory up to this size


@dataclass
class BatchSource:
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


def _split_xy_item(item: Any, what: str) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        for kx, ky in (("image", "label"), ("images", "labels"), ("x", "y")):
            if kx in item and ky in item:
                return item[kx], item[ky]
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(f"{what}: every item/batch must be (images, labels), got {type(item).__name__}")


def as_batch_source(data: Any, what: str, batch_size: int = 128) -> BatchSource:
    """Accept the data kinds listed in :data:`_DATA_KINDS`."""
    if isinstance(data, ImageDataset):
        return BatchSource(x=data.images, y=data.labels)
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor):
        x, y = _check_xy(data[0], data[1], what)
        _warn_range(x, what)
        return BatchSource(x=x, y=y)
    if isinstance(data, DataLoader):
        return BatchSource(loader=data)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        n = len(data)
        if n == 0:
            raise DataError(f"{what} is empty")
        xi, _ = _split_xy_item(data[0], what)
        if not isinstance(xi, torch.Tensor):
            raise DataError(
                f"{what}: images must be tensors (C, H, W) in [0, 1], got {type(xi).__name__}; convert them in "
                "the data set (e.g. a ToTensor transform) or use cladec.data.load_dataset"
            )
        if xi.numel() * 4 * n <= MAX_MATERIALISE_BYTES:
            xs, ys = [], []
            for batch in DataLoader(data, batch_size=512, shuffle=False):
                xb, yb = _split_xy_item(batch, what)
                xs.append(torch.as_tensor(xb))
                ys.append(torch.as_tensor(yb))
            x, y = _check_xy(torch.cat(xs), torch.cat(ys), what)
            _warn_range(x, what)
            return BatchSource(x=x, y=y)
        return BatchSource(loader=DataLoader(data, batch_size=batch_size, shuffle=True))
    raise DataError(f"{what} must be {_DATA_KINDS}; got {type(data).__name__}")


def iter_device_batches(
    d: BatchSource, batch_size: int, *, shuffle: bool, gen: torch.Generator | None, device: torch.device, what: str
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
        xb, yb = _split_xy_item(batch, what)
        xb, yb = _check_xy(torch.as_tensor(xb), torch.as_tensor(yb), what)
        if i == 0 and shuffle:
            _warn_range(xb, what)
        if shuffle and i > 0 and len(xb) == 1:
            continue  # training: a last batch of one image breaks BatchNorm (as for in-memory data)
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def place_on(d: BatchSource, device: torch.device) -> BatchSource:
    """Move in-memory data to an accelerator when it fits comfortably."""
    if d.x is None or device.type == "cpu" or d.x.device == device:
        return d
    need = d.x.nbytes + d.y.nbytes  # type: ignore[union-attr]  # y is set with x
    try:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    except Exception:  # noqa: BLE001 - free memory unknown (no CUDA query): the data stays where it is
        free = 0
    if need < 0.5 * free:
        return BatchSource(x=d.x.to(device), y=d.y.to(device))  # type: ignore[union-attr]  # y is set with x
    return d
