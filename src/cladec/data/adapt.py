"""Turn what users pass as ``data`` into tensors (or a stream of batches), with clear errors: the one data adapter
of the classifier's trainer (``images="raw"``) and of the explainers (``images="unit"``).

Accepted everywhere: ``(images, labels)`` tensors, an :class:`~cladec.data.ImageDataset`, a Dataset of
``(image, label)`` (or of ``{"image", "label"}`` dicts), an IterableDataset, a DataLoader or any re-iterable of
batches (a list of batches); the explainers also take images without labels (an image tensor, a Dataset of
images) where no labels are needed. One-shot iterators (generators) are refused: training needs one pass per
epoch.

``images="unit"`` (explainers): 1 or 3 channels, float32 in ``[0, 1]`` (uint8 scaled, other floats converted),
anything else a DataError. ``images="raw"`` (the user's classifier): any channel count, uint8 and float dtypes kept
(uint8 is scaled per batch by :class:`~cladec.normalize.InputNorm`), float values outside ``[0, 1]`` a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, NoReturn, cast

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from .._errors import ConfigError, DataError, caller_level
from .._tensors import image_tensor, label_tensor
from ..training import distributed
from .dataset import ImageDataset
from .lazy import LazyImageDataset, StreamedBatches, make_loader

#: A generic Dataset is loaded into memory up to this size (as float32) unless the caller gives ``max_bytes``;
#: read at each call (tests lower it).
MAX_MATERIALISE_BYTES = 4 * 2**30

Images = Literal["unit", "raw"]

#: What ``images="raw"`` accepts, for its error messages.
DATA_KINDS = (
    "an ImageDataset, a pair of tensors (images N×C×H×W in [0, 1] or uint8, integer labels N), "
    "a Dataset of (image, label), or a DataLoader or list of (images, labels) batches"
)

_MAPPING_KEYS = (("image", "label"), ("images", "labels"), ("x", "y"))


@dataclass
class Prepared:
    """Either in-memory tensors ``x`` (N, C, H, W) and ``y`` (N,) or None, or a ``loader`` of batches.

    ``image_shape`` is ``(C, H, W)``; it is always set by ``images="unit"``, and None for a DataLoader given with
    ``images="raw"`` (not read ahead: that would advance its sampler's random generator).
    """

    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    loader: Iterable | None = None
    image_shape: tuple[int, int, int] | None = None
    #: streamed lazy data: the mean value per channel of a sample of its images (the decoder's bias starts there)
    mean_pixel: torch.Tensor | None = None

    @property
    def in_memory(self) -> bool:
        return self.x is not None


def prepare(
    data: Any,
    *,
    need_labels: bool,
    max_bytes: int | None = None,
    batch_size: int = 128,
    images: Images = "unit",
    what: str = "the data",
    workers: int = 0,
    seed: int | None = None,
    device: Any = None,
    shuffle: bool = True,
    shard: bool = False,
) -> Prepared:
    """Normalise ``data`` (see the module docstring for the kinds) for training or evaluation.

    A Dataset is materialised into tensors when its images fit ``max_bytes`` as float32 (default
    :data:`MAX_MATERIALISE_BYTES`), else streamed in shuffled batches of ``batch_size``; a DataLoader or a list of
    batches is streamed as it is; an IterableDataset (no length, no indexing) is streamed in batches of
    ``batch_size`` in its own order. A :class:`~cladec.data.LazyImageDataset` is always streamed, by a DataLoader
    with ``workers`` processes (:func:`cladec.data.lazy.make_loader`), its ``uint8`` batches moved to ``device``
    as they come (:class:`~cladec.data.lazy.StreamedBatches`).

    Args:
        data: The data.
        need_labels: Labels are required (and checked); without, labels are ignored.
        max_bytes: The materialisation limit in bytes.
        batch_size: The batch size of loaders made here.
        images: ``"unit"`` or ``"raw"`` (module docstring).
        what: How ``images="raw"`` names the data in messages (``"the training data"``).
        workers: Lazy data: the DataLoader's worker processes.
        seed: Lazy data: seeds the shuffled order.
        device: Lazy data: where the batches go (pinned memory for CUDA).
        shuffle: Lazy data: a new random order each pass (training), else the data set's order.
        shard: Training data-parallel (:mod:`cladec.training.distributed`): each rank streams its share of a lazy
            or too-large data set (a DataLoader you give should shard itself with a ``DistributedSampler``).

    Raises:
        DataError: Data it cannot use. ConfigError: ``images="unit"`` and ``need_labels`` without labels.
    """
    if images not in ("unit", "raw"):
        raise ValueError(f"images must be 'unit' or 'raw', got {images!r}")
    limit = MAX_MATERIALISE_BYTES if max_bytes is None else max_bytes
    raw = images == "raw"
    if isinstance(data, LazyImageDataset):  # never materialised: streamed, uint8 until the device
        loader = make_loader(data, batch_size, shuffle=shuffle, workers=workers, seed=seed, device=device, shard=shard)
        mean = None if raw else data.mean_pixel()
        return Prepared(loader=StreamedBatches(loader, device), image_shape=data.image_shape, mean_pixel=mean)
    if isinstance(data, IterableDataset):
        data = DataLoader(data, batch_size=batch_size)  # streamed below; it yields single items in its order
    if raw and isinstance(data, ImageDataset):
        return _in_memory(data.images, data.labels, need_labels, images, what, check=False)
    if isinstance(data, torch.Tensor):
        data = (data, None)
    if isinstance(data, np.ndarray) or (isinstance(data, (tuple, list)) and data and isinstance(data[0], np.ndarray)):
        raise DataError(
            "the images are a numpy array: give a torch tensor (torch.from_numpy(images)), "
            "a Dataset or a DataLoader (labels may be a tensor, array or list)"
        )
    if _is_pair(data):
        return _in_memory(data[0], data[1], need_labels, images, what)
    if isinstance(data, DataLoader) and raw:
        return Prepared(loader=data)
    if isinstance(data, DataLoader) or (not isinstance(data, Dataset) and hasattr(data, "__iter__")):
        if isinstance(data, (str, bytes, Mapping)):
            _refuse(data, raw, what)
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
        if raw and not _is_batch(first):
            _refuse(data, raw, what)
        xb, _ = split_batch(first, need_labels, images, what, where="the first batch's images")
        return Prepared(loader=data, image_shape=_shape(xb))
    if isinstance(data, Dataset):
        return _dataset(data, need_labels, limit, batch_size, images, what, shard)
    _refuse(data, raw, what)


def _refuse(data: Any, raw: bool, what: str) -> NoReturn:
    if raw:
        raise DataError(f"{what} must be {DATA_KINDS}; got {type(data).__name__}")
    raise DataError(
        f"cannot use data of type {type(data).__name__}: give a pair of tensors (images, labels), "
        "an image tensor, a Dataset of (image, label) or a DataLoader"
    )


def _shape(x: torch.Tensor) -> tuple[int, int, int]:
    return cast(tuple[int, int, int], tuple(x.shape[1:]))


def _in_memory(x: Any, y: Any, need_labels: bool, images: Images, what: str, *, check: bool = True) -> Prepared:
    """``Prepared`` of in-memory images and labels (checked unless ``check`` is False: an ImageDataset's own)."""
    if check:
        x = _images(x, images, f"the images of {what}" if images == "raw" else "images")
    if y is None and need_labels:
        _no_labels(images, what, "pass (images, labels)")
    # labels are validated where they are used; otherwise they are ignored
    y = (label_tensor(y, x.shape[0], what if images == "raw" else "") if check else y) if need_labels else None
    if check and images == "raw":
        _warn_range(x, what)
    return Prepared(x=x, y=y, image_shape=_shape(x))


def _no_labels(images: Images, what: str, fix: str) -> NoReturn:
    if images == "unit":
        raise ConfigError(f"alpha > 0 needs class labels: {fix}")
    raise DataError(f"{what} must have class labels: {fix}")


def _images(x: Any, images: Images, where: str) -> torch.Tensor:
    if images == "unit":
        return image_tensor(x, where)
    # any channel count (the classifier is the user's); uint8 stays uint8 until a batch is used
    return image_tensor(x, where, channels=None, scale_uint8=False, check_range=False, float32=False)


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
                stacklevel=caller_level(),
            )


def _dataset(
    data: Dataset, need_labels: bool, limit: int, batch_size: int, images: Images, what: str, shard: bool = False
) -> Prepared:
    """A map-style Dataset: materialised when it fits ``limit``, else streamed in shuffled batches."""
    if images == "unit" and hasattr(data, "tensors") and callable(data.tensors):  # an ImageDataset: float32 copy
        x, y = data.tensors()
        return _in_memory(x, y, need_labels, images, what)
    try:
        n = len(data)  # type: ignore[arg-type]  # a map-style Dataset has __len__
    except TypeError:
        _refuse(data, images == "raw", what)
    if n == 0:
        raise DataError(f"{what} is empty" if images == "raw" else "the data set is empty")
    try:
        first = data[0]
    except IndexError:
        raise DataError("the data set is empty") from None
    xi, _ = split_batch(first, need_labels, images, what, check=False)
    if not isinstance(xi, torch.Tensor):
        raise DataError(
            f"{what}: images must be tensors (C, H, W) in [0, 1], got {type(xi).__name__}; convert them in "
            "the data set (e.g. a ToTensor transform) or use cladec.data.load_dataset"
        )
    if xi.numel() * 4 * n <= limit:
        xs, ys = [], []
        for batch in DataLoader(data, batch_size=512, shuffle=False):
            xb, yb = split_batch(batch, need_labels, images, what, check=False)
            xs.append(torch.as_tensor(xb))
            ys.append(yb)
        y = torch.cat([torch.as_tensor(t) for t in ys]) if need_labels else None
        return _in_memory(torch.cat(xs), y, need_labels, images, what)
    if shard and distributed.world()[1] > 1:  # each rank streams its share
        loader: DataLoader = make_loader(data, batch_size, shard=True)
    else:
        loader = DataLoader(data, batch_size=batch_size, shuffle=True)
    return Prepared(loader=loader, image_shape=_shape(_images(xi.unsqueeze(0), images, "the first image")))


def _is_pair(data: Any) -> bool:
    """``(images, labels)``: a 2-sequence of an image tensor and None or labels (1-D, or (N, 1)). A list of
    two image batches is a list of batches, not a pair."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor)):
        return False
    y = data[1]
    return not isinstance(y, torch.Tensor) or y.dim() <= 2  # anything else is checked as labels


def _is_batch(item: Any) -> bool:
    """An item or batch ``images="raw"`` can read: ``(images, labels, ...)``, ``[images, labels]`` or a mapping."""
    return isinstance(item, Mapping) or (isinstance(item, (tuple, list)) and len(item) >= 2)


def _split_item(item: Any, need_labels: bool, images: Images, what: str) -> tuple[Any, Any]:
    if isinstance(item, Mapping):
        for kx, ky in _MAPPING_KEYS:
            if kx in item and ky in item:
                return item[kx], item[ky]
        if images == "unit" and not need_labels:
            for kx in ("image", "images", "x"):
                if kx in item:
                    return item[kx], None
    if isinstance(item, torch.Tensor) and images == "unit":
        if need_labels:
            _no_labels(images, what, "the data set must yield (image, label)")
        return item, None
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    if isinstance(item, (tuple, list)) and len(item) == 1 and images == "unit":
        return _split_item(item[0], need_labels, images, what)
    if images == "raw":
        raise DataError(f"{what}: every item/batch must be (images, labels), got {type(item).__name__}")
    raise DataError(f"a data set item must be an image tensor or (image, label), got {type(item).__name__}")


def split_batch(
    batch: Any,
    need_labels: bool,
    images: Images = "unit",
    what: str = "the data",
    *,
    check: bool = True,
    where: str | None = None,
) -> tuple[Any, Any]:
    """``(images, labels)`` of one batch (or data-set item); labels None unless ``need_labels``.

    With ``check`` the images are validated as ``images`` says (:func:`prepare`) and the labels made int64;
    without, the parts are returned as they are (to be concatenated and checked once). ``where`` names the images
    in messages."""
    x, y = _split_item(batch, need_labels, images, what)
    if not check:
        return x, (y if need_labels else None)
    if not isinstance(x, torch.Tensor):
        raise DataError(f"batches must hold image tensors, got {type(x).__name__}")
    if where is None:
        where = f"the images of {what}" if images == "raw" else "a batch's images"
    x = _images(x, images, where)
    if y is None or not need_labels:
        if need_labels:
            _no_labels(images, what, "the batches must be (images, labels)")
        return x, None
    return x, label_tensor(y, len(x), what if images == "raw" else "a batch")


def iterate_batches(
    loader: Iterable, need_labels: bool, images: Images = "unit", what: str = "the data"
) -> Iterator[tuple[torch.Tensor, torch.Tensor | None]]:
    """Yield validated ``(images, labels)`` batches from a loader (labels None unless ``need_labels``)."""
    for batch in loader:
        yield split_batch(batch, need_labels, images, what)


def iter_device_batches(
    d: Prepared, batch_size: int, *, shuffle: bool, gen: torch.Generator | None, device: torch.device, what: str
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The classifier's batches of labelled data (``images="raw"``) on ``device``; images still uint8 or float as
    stored. In-memory data is cut into batches (in a random order with ``shuffle``); a loader's batches are
    checked as they come. With ``shuffle`` (training) a batch of one image is skipped: it breaks BatchNorm."""
    if d.x is not None:
        assert d.y is not None  # labelled data: prepare(need_labels=True)
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
    for i, (xb, lb) in enumerate(iterate_batches(d.loader, True, "raw", what)):
        assert lb is not None  # need_labels
        if i == 0 and shuffle:
            _warn_range(xb, what)
        if shuffle and i > 0 and len(xb) == 1:
            continue  # training: a last batch of one image breaks BatchNorm (as for in-memory data)
        yield xb.to(device, non_blocking=True), lb.to(device, non_blocking=True)


def place(d: Prepared, device: torch.device) -> Prepared:
    """In-memory data moved to an accelerator when it fits comfortably (at most half its free memory)."""
    if d.x is None or device.type == "cpu" or d.x.device == device:
        return d
    need = d.x.nbytes + (d.y.nbytes if d.y is not None else 0)
    try:
        free = torch.cuda.mem_get_info(device)[0] if device.type == "cuda" else 0
    except Exception:  # noqa: BLE001 - free memory unknown (no CUDA query): the data stays where it is
        free = 0
    if need < 0.5 * free:
        y = d.y.to(device) if d.y is not None else None
        return Prepared(x=d.x.to(device), y=y, image_shape=d.image_shape)
    return d
