"""Turn what users pass as ``data`` into tensors (or a stream of batches), with clear errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .._errors import ConfigError, DataError
from .._tensors import image_tensor, label_tensor


@dataclass
class Prepared:
    """Either in-memory tensors ``x`` (N, C, H, W) in [0, 1] and ``y`` (N,) or None, or a loader."""

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    loader: Iterable | None = None
    image_shape: tuple[int, int, int] | None = None

    @property
    def in_memory(self) -> bool:
        return self.x is not None


def _first_item(ds: Dataset) -> Any:
    try:
        return ds[0]
    except IndexError:
        raise DataError("the data set is empty") from None


def prepare(data: Any, *, need_labels: bool, max_bytes: int, batch_size: int = 128) -> Prepared:
    """Normalise ``data`` (pair of tensors, tensor, Dataset, DataLoader) for training.

    A Dataset is materialised into tensors when it fits ``max_bytes``, else streamed in shuffled batches
    of ``batch_size``; a DataLoader is streamed as it is; an IterableDataset (no length, no indexing) is
    streamed in batches of ``batch_size`` in its own order.
    """
    if isinstance(data, IterableDataset):
        data = DataLoader(data, batch_size=batch_size)  # streamed below; it yields single items in its order
    if isinstance(data, torch.Tensor):
        data = (data, None)
    if isinstance(data, np.ndarray) or (isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray)):
        raise DataError(
            "the images are a numpy array: give a torch tensor (torch.from_numpy(images)), "
            "a Dataset or a DataLoader (labels may be a tensor, array or list)"
        )
    if _is_pair(data):
        x, y = data
        x = image_tensor(x)
        # labels are validated where they are used (alpha > 0); otherwise they are ignored
        y = label_tensor(y, x.shape[0]) if (y is not None and need_labels) else None
        if need_labels and y is None:
            raise ConfigError("alpha > 0 needs class labels: pass (images, labels)")
        return Prepared(x=x, y=y, image_shape=tuple(x.shape[1:]))  # type: ignore[arg-type]  # (C, H, W)
    if isinstance(data, DataLoader) or (not isinstance(data, Dataset) and hasattr(data, "__iter__")):
        it = iter(data)
        if it is data:
            raise DataError(
                "data is a one-shot iterator (e.g. a generator): training needs one pass per epoch; "
                "give a DataLoader, a list of batches or a Dataset"
            )
        try:
            first = next(it)
        except StopIteration:
            raise DataError("the data loader yields no batches: the data set is empty") from None
        xb, yb = _split_batch(first, need_labels)
        xb = image_tensor(xb, "the first batch's images")
        return Prepared(loader=data, image_shape=tuple(xb.shape[1:]))  # type: ignore[arg-type]  # (C, H, W)
    if isinstance(data, Dataset):
        if hasattr(data, "tensors") and callable(data.tensors):
            x, y = data.tensors()
            return prepare((x, y), need_labels=need_labels, max_bytes=max_bytes)
        n = len(data)  # type: ignore[arg-type]  # a map-style Dataset: has __len__
        if n == 0:
            raise DataError("the data set is empty")
        first = _first_item(data)
        xi, yi = _split_item(first, need_labels)
        if not isinstance(xi, torch.Tensor):
            raise DataError(f"data set items must hold image tensors, got {type(xi).__name__}")
        est = xi.numel() * 4 * n
        if est <= max_bytes:
            xs, ys = [], []
            for batch in DataLoader(data, batch_size=512, shuffle=False):
                xb, yb = _split_batch(batch, need_labels)
                xs.append(xb)
                ys.append(yb)
            x = torch.cat(xs)
            y = torch.cat(cast(list[torch.Tensor], ys)) if all(t is not None for t in ys) else None
            return prepare((x, y), need_labels=need_labels, max_bytes=max_bytes)
        loader = DataLoader(data, batch_size=batch_size, shuffle=True)
        shape = tuple(image_tensor(xi.unsqueeze(0)).shape[1:])
        return Prepared(loader=loader, image_shape=shape)  # type: ignore[arg-type]  # (C, H, W)
    raise DataError(
        f"cannot use data of type {type(data).__name__}: give a pair of tensors (images, labels), "
        "an image tensor, a Dataset of (image, label) or a DataLoader"
    )


def _is_pair(data: Any) -> bool:
    """``(images, labels)``: a 2-sequence of an image tensor and None or labels (1-D, or (N, 1)). A list of
    two image batches is a list of batches, not a pair."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)):
        return False
    y = data[1]
    return not isinstance(y, torch.Tensor) or y.dim() <= 2  # anything else is checked as labels


def _split_item(item: Any, need_labels: bool) -> tuple[torch.Tensor, Any]:
    if isinstance(item, torch.Tensor):
        if need_labels:
            raise ConfigError("alpha > 0 needs class labels: the data set must yield (image, label)")
        return item, None
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    if isinstance(item, (tuple, list)) and len(item) == 1:
        return _split_item(item[0], need_labels)
    raise DataError(f"a data set item must be an image tensor or (image, label), got {type(item).__name__}")


def _split_batch(batch: Any, need_labels: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    x, y = _split_item(batch, need_labels)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"batches must hold image tensors, got {type(x).__name__}")
    if y is None or not need_labels:
        return x, None
    return x, label_tensor(y, len(x), "a batch")


def iterate_batches(loader: Iterable, need_labels: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield validated (images, labels) batches from a loader."""
    for batch in loader:
        x, y = _split_batch(batch, need_labels)
        yield image_tensor(x, "a batch's images"), y
