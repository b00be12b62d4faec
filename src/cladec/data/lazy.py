"""Data sets read lazily, one image per item, for data that does not fit in memory.

``load_dataset(..., lazy=True)`` returns a :class:`LazyImageDataset`: an image folder or zip
(``imagefolder:PATH``) keeps only its file list and labels, a built-in set (MNIST, Fashion-MNIST, CIFAR-10, the
embedded subset) its native ``uint8`` arrays (small: 47 MB for MNIST, 150 MB for CIFAR-10's training split).
Each ``dataset[i]`` decodes (an image file) and resizes one image and returns it as ``uint8`` ``(C, H, W)`` with
its label, so memory does not grow with the number of images nor with the target size. It works in
:class:`~torch.utils.data.DataLoader` worker processes (it pickles without open files; a zip is opened once per
process). Training and evaluation stream it (:func:`make_loader`, :class:`StreamedBatches`): batches stay
``uint8`` until they are on the device.

What it gives, compared with the in-memory :class:`~cladec.data.ImageDataset` of the same files:

* the same images in the same order (classes interleaved, the same ``limit``), the same labels and classes, the
  same compositing of transparent pixels onto white (a ``UserWarning`` at the first such image in each process,
  not a count over the whole set: counting would decode every image);
* at the native size the same pixels; resized, the same antialiased bilinear resize, rounded to ``uint8``
  (within 0.5/255 of the in-memory ``float32`` values);
* grey or RGB: ``channels=1`` or ``3`` if given; else grey when the headers of the first :data:`CHANNEL_PEEK`
  images (in the interleaved order, so every class is seen) are all grey, else RGB. A grey image in an RGB set
  is repeated to 3 channels; a colour image found later in a set read as grey is refused (DataError naming
  the file and advising ``channels=3``), never silently turned grey;
* without ``size``, the image size of the first image; an image of another size is refused when it is read
  (the in-memory loader refuses mixed sizes at load time): pass ``size=``;
* a file that does not decode is refused when it is read, with the in-memory loader's message naming the file.
"""

from __future__ import annotations

import io
import math
import os
import warnings
import zipfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .._errors import CladecError, ConfigError, DataError
from ..training import distributed
from ._common import resize_images
from .decode import ALPHA_BACKGROUND_NAME, decode_images, is_grey_mode
from .folder import read_zip_member

__all__ = ["LazyImageDataset", "make_loader", "StreamedBatches", "CHANNEL_PEEK"]

#: Images whose headers decide grey or RGB when ``channels`` is not given.
CHANNEL_PEEK = 1000

#: Images decoded (evenly spaced over the data set) for :meth:`LazyImageDataset.mean_pixel`.
MEAN_SAMPLE = 256


class _Files:
    """Image files of a folder (paths) or a zip (member names); the zip is opened once per process."""

    def __init__(self, path: Path, members: list[str], is_zip: bool) -> None:
        self.path, self.members, self.is_zip = path, members, is_zip
        self._zf: zipfile.ZipFile | None = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_zf"] = state["_pid"] = None  # no open file crosses a process boundary
        return state

    def __len__(self) -> int:
        return len(self.members)

    def read(self, member: str) -> bytes:
        if not self.is_zip:
            return Path(member).read_bytes()
        if self._zf is None or self._pid != os.getpid():  # a forked worker never shares its parent's file position
            self._zf, self._pid = zipfile.ZipFile(self.path), os.getpid()
        return read_zip_member(self._zf, self.path, member)

    def item(self, i: int) -> tuple[np.ndarray, bool, str]:
        """Image ``i`` as uint8 (C, H, W) (grey or RGB as stored), whether it had transparency, its name."""
        m = self.members[i]
        images, transparent = decode_images(self, [m], str(self.path))  # DataError naming the file
        return images[0].transpose(2, 0, 1), bool(transparent[0]), m

    def colour_in_first(self, n: int) -> bool | None:
        """Whether one of the first ``n`` images' headers is a colour mode (None: no header could be read)."""
        from PIL import Image

        seen = False
        for m in self.members[:n]:
            try:
                with Image.open(io.BytesIO(self.read(m))) as im:
                    if not is_grey_mode(im.mode):
                        return True
                    seen = True
            except Exception:  # noqa: BLE001 - an unreadable file is refused, naming it, when it is read
                continue
        return False if seen else None

    def subset(self, idx: np.ndarray) -> _Files:
        return _Files(self.path, [self.members[int(i)] for i in idx], self.is_zip)


class _Arrays:
    """Native-size uint8 images (N, C, H, W) in memory (the built-in data sets)."""

    def __init__(self, images: np.ndarray, where: str) -> None:
        self.images, self.where = images, where

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def item(self, i: int) -> tuple[np.ndarray, bool, str]:
        return self.images[i], False, f"image {i} of {self.where}"

    def colour_in_first(self, n: int) -> bool | None:
        return int(self.images.shape[1]) != 1

    def subset(self, idx: np.ndarray) -> _Arrays:
        return _Arrays(np.ascontiguousarray(self.images[idx]), self.where)


class LazyImageDataset(Dataset):
    """Images decoded (and resized) one at a time, with their labels (see the module docstring).

    Made by :func:`cladec.data.load_dataset` with ``lazy=True``. It carries what an
    :class:`~cladec.data.ImageDataset` carries (``name``, ``split``, ``classes``, ``labels``, ``image_shape``,
    ``num_classes``, ``resized_to``, ``limit``, :meth:`describe`, :meth:`class_counts`, :meth:`subset`,
    :meth:`tensors`), but items are ``(uint8 (C, H, W) tensor, int)``: the 4× smaller batches go to the device as
    they are and become float in [0, 1] there.

    Examples:
        >>> from cladec.data import load_dataset
        >>> ds = load_dataset("fashion-mnist-mini", split="test", size=32, lazy=True)
        >>> x, y = ds[0]
        >>> x.dtype, tuple(x.shape), ds.image_shape, len(ds)
        (torch.uint8, (1, 32, 32), (1, 32, 32), 1000)
    """

    def __init__(
        self,
        source: Any,
        labels: np.ndarray | torch.Tensor,
        classes: Sequence[str],
        *,
        name: str,
        split: str,
        size: tuple[int, int] | None = None,
        resize_mode: str = "bilinear",
        channels: int | None = None,
    ) -> None:
        """Wrap a source of images (made by :func:`cladec.data.load_dataset`; see there for the arguments).

        Args:
            source: The images: a ``uint8`` array ``(N, C, H, W)`` or ``(folder_or_zip, members, is_zip)``.
            labels: ``N`` integer labels.
            classes: The class names (index = label).
            name: The data set's name (as :func:`cladec.data.load_dataset` got it).
            split: The split's name.
            size: ``(H, W)`` every image is resized to, or None (the first image's size).
            resize_mode: ``"bilinear"`` (antialiased) or ``"nearest"``.
            channels: 1 (grey) or 3 (RGB), or None (module docstring).

        Returns:
            None.

        Raises:
            ConfigError: ``channels`` not None, 1 or 3. DataError: no images, or labels that do not match them.

        Examples:
            >>> ds = LazyImageDataset(np.zeros((2, 1, 8, 8), np.uint8), [0, 1], ["a", "b"], name="toy", split="train")
            >>> ds.image_shape, ds.class_counts()
            ((1, 8, 8), [1, 1])
        """
        if channels not in (None, 1, 3):
            raise ConfigError(f"channels must be 1 (grey), 3 (RGB) or None (decided from the images), got {channels!r}")
        where = f"{name} ({split})"
        self._source: _Files | _Arrays = (
            _Files(Path(source[0]), list(source[1]), bool(source[2]))
            if isinstance(source, tuple)
            else _Arrays(np.asarray(source), where)
        )
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64).reshape(-1)
        if len(self._source) == 0:
            raise DataError(f"data set {where} has no images")
        if len(self.labels) != len(self._source):
            raise DataError(f"{len(self._source)} images but {len(self.labels)} labels; they must be the same number")
        self.classes = [str(c) for c in classes]
        self.name, self.split, self.resize_mode = name, split, resize_mode
        #: ``(H, W)`` the images are resized to (``load_dataset(size=...)``), else None
        self.resized_to: tuple[int, int] | None = size
        #: as :attr:`cladec.data.ImageDataset.limit`
        self.limit: int | None = None
        if channels is None:
            colour = self._source.colour_in_first(CHANNEL_PEEK)
            channels = 1 if colour is False else 3
        self.channels = channels
        if size is None:
            size = tuple(int(v) for v in self._source.item(0)[0].shape[-2:])  # type: ignore[assignment]
        self._hw: tuple[int, int] = size  # type: ignore[assignment]  # (H, W) either way
        self._warned = False
        self._mean: torch.Tensor | None = None

    # -- the Dataset protocol ------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of images."""
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """``(image, label)``: image ``index`` decoded and resized, ``uint8`` ``(C, H, W)``, and its label."""
        i = int(index)
        a, transparent, item = self._source.item(i)
        if transparent and not self._warned:
            self._warned = True
            warnings.warn(
                f"images in {self.name} ({self.split}) have transparent pixels (the first seen: {item}); they are "
                f"composited onto a {ALPHA_BACKGROUND_NAME} background before use",
                UserWarning,
                stacklevel=2,
            )
        c = a.shape[0]
        if c != self.channels:
            if c == 1:
                a = np.repeat(a, self.channels, axis=0)
            else:
                raise DataError(
                    f"image {item} in {self.name} ({self.split}) is in colour, but the data set is read as grey (the "
                    f"first {CHANNEL_PEEK} images are grey); pass channels=3 to load_dataset to read it as RGB"
                )
        x = torch.from_numpy(np.ascontiguousarray(a))
        if tuple(x.shape[-2:]) != self._hw:
            if self.resized_to is None:
                raise DataError(
                    f"image {item} in {self.name} ({self.split}) is {tuple(x.shape[-2:])} (H, W), the first image "
                    f"{self._hw}; pass size=... (e.g. size=32, --size 32) to resize them all to one size"
                )
            y = resize_images(x[None], self._hw, self.resize_mode)[0].numpy()
            # rounded in numpy: torch's round_ on one small image is ~20x slower with 2+ threads on busy cores
            x = torch.from_numpy(np.rint(y * 255.0).astype(np.uint8))
        return x, int(self.labels[i])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"LazyImageDataset(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"image_shape=({c}, {h}, {w}), num_classes={self.num_classes})"
        )

    # -- what ImageDataset carries -------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every item."""
        return (self.channels, int(self._hw[0]), int(self._hw[1]))

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    def class_counts(self) -> list[int]:
        """Number of images per class (from the labels: nothing is decoded).

        Returns:
            A list of ``num_classes`` counts.

        Examples:
            >>> from cladec.data import load_dataset
            >>> load_dataset("fashion-mnist-mini", split="test", lazy=True).class_counts()[:3]
            [100, 100, 100]
        """
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary: :meth:`cladec.data.ImageDataset.describe`'s keys and ``lazy: True``.

        Returns:
            ``dict(name, split, size, image_shape, num_classes, classes, lazy)``.

        Examples:
            >>> from cladec.data import load_dataset
            >>> load_dataset("fashion-mnist-mini", split="test", lazy=True).describe()["size"]
            1000
        """
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "lazy": True,
        }

    def subset(self, indices: Sequence[int] | torch.Tensor | slice | range) -> LazyImageDataset:
        """A lazy data set of the images at ``indices`` (same classes, name, split, size and channels).

        Args:
            indices: Integer indices, a boolean mask, a slice or a range.

        Returns:
            A new :class:`LazyImageDataset` (nothing is decoded).

        Examples:
            >>> from cladec.data import load_dataset
            >>> len(load_dataset("fashion-mnist-mini", lazy=True).subset(range(10)))
            10
        """
        n = len(self)
        if isinstance(indices, slice):
            idx = np.arange(n)[indices]
        else:
            t = torch.as_tensor(list(indices) if isinstance(indices, range) else indices).reshape(-1)
            if t.dtype == torch.bool:
                if len(t) != n:
                    raise DataError(f"a boolean subset mask needs one entry per image ({n}), got {len(t)}")
                t = t.nonzero().reshape(-1)
            if t.is_floating_point():
                raise DataError(f"subset indices must be integers, got dtype {t.dtype}")
            idx = t.to(torch.int64).numpy()
            if len(idx) and (int(idx.max()) >= n or int(idx.min()) < -n):
                raise DataError(f"subset index out of range for a data set of {n} images: {idx.min()}..{idx.max()}")
            idx = idx % n
        out = object.__new__(LazyImageDataset)
        out.__dict__.update(self.__dict__)
        out._source = self._source.subset(idx)
        out.labels = self.labels[torch.from_numpy(idx).to(torch.int64)]
        out.limit, out._mean, out._warned = None, None, False
        return out

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decode every image at once, for code that needs them in memory (a test split's metrics).

        Returns:
            ``(images, labels)``: ``float32`` ``(N, C, H, W)`` in ``[0, 1]`` and ``int64`` ``(N,)``.

        Raises:
            ConfigError: The images would not fit in memory as float32 (the message gives the size; take a
                :meth:`subset` or a ``limit``).

        Examples:
            >>> from cladec.data import load_dataset
            >>> x, y = load_dataset("fashion-mnist-mini", split="test", limit=8, lazy=True).tensors()
            >>> x.shape, x.dtype
            (torch.Size([8, 1, 28, 28]), torch.float32)
        """
        from .._limits import check_fits

        n = len(self)
        check_fits(n * math.prod(self.image_shape) * 4.0, f"the {n} images of {self.name} ({self.split}) as float32")
        x = torch.empty((n, *self.image_shape), dtype=torch.float32)
        for i in range(n):
            x[i] = self[i][0].to(torch.float32).div_(255.0)
        return x, self.labels.clone()

    def mean_pixel(self) -> torch.Tensor:
        """The mean value per channel (in [0, 1]) of up to :data:`MEAN_SAMPLE` images spread evenly over the set.

        Returns:
            A ``float32`` tensor ``(C,)``; the decoder's output bias starts there (as at the mean of all images for
            data in memory).

        Examples:
            >>> from cladec.data import load_dataset
            >>> load_dataset("fashion-mnist-mini", lazy=True).mean_pixel().shape
            torch.Size([1])
        """
        if self._mean is None:
            n = len(self)
            idx = np.unique(np.linspace(0, n - 1, min(n, MEAN_SAMPLE)).round().astype(np.int64))
            total = torch.zeros(self.channels, dtype=torch.float64)
            for i in idx:
                total += self[int(i)][0].to(torch.float64).mean(dim=(1, 2))
            self._mean = (total / (255.0 * len(idx))).to(torch.float32)
        return self._mean


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = True,
    workers: int = 0,
    seed: int | None = None,
    device: Any = None,
    shard: bool = False,
) -> DataLoader:
    """The DataLoader that streams a (lazy) data set: ``workers`` processes, pinned memory for a CUDA device.

    With ``shard`` under ``torch.distributed`` (several ranks, :mod:`cladec.training.distributed`) each rank reads
    its own share of the images through a :class:`~torch.utils.data.distributed.DistributedSampler` (one order,
    seeded with ``seed``, new each epoch), in batches of ``batch_size / ranks``: ``batch_size`` stays global.

    Args:
        dataset: A map-style Dataset (typically a :class:`LazyImageDataset`).
        batch_size: Images per batch (over all ranks when data-parallel: a multiple of their number).
        shuffle: A new random order each epoch, drawn from a generator seeded with ``seed``.
        workers: Worker processes decoding images (0: in this process); they stay alive between epochs.
        seed: Seeds the order (None: drawn from the global generator).
        device: Where the batches go (``cuda``: the loader pins its batches for faster copies).
        shard: Data-parallel training: each rank reads its share (without a process group: no effect).

    Returns:
        A :class:`torch.utils.data.DataLoader`.

    Raises:
        ConfigError: ``workers`` is not a non-negative integer, or data-parallel with a ``batch_size`` that is no
            multiple of the number of ranks.

    Examples:
        >>> from cladec.data import load_dataset
        >>> xb, yb = next(iter(make_loader(load_dataset("fashion-mnist-mini", lazy=True), 16, seed=0)))
        >>> xb.dtype, tuple(xb.shape), tuple(yb.shape)
        (torch.uint8, (16, 1, 28, 28), (16,))
    """
    workers = check_workers(workers)
    pin = device is not None and torch.device(device).type == "cuda"
    common: dict[str, Any] = dict(num_workers=workers, persistent_workers=workers > 0, pin_memory=pin)
    sampler = distributed.sampler(dataset, shuffle=shuffle, seed=seed) if shard else None
    if sampler is not None:
        batch = distributed.local_batch(batch_size, sampler.num_replicas)
        return DataLoader(dataset, batch_size=batch, sampler=sampler, **common)
    gen = None
    if shuffle:
        gen = torch.Generator()
        gen.manual_seed(seed if seed is not None else int(torch.randint(0, 2**62, ()).item()))
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=gen, **common)


def check_workers(workers: Any) -> int:
    """``workers`` as an int, refused (ConfigError) unless it is a non-negative integer."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ConfigError(f"workers must be a non-negative integer (0: decode in this process), got {workers!r}")
    return int(workers)


class StreamedBatches:
    """A loader's ``(images, labels)`` batches, moved to ``device`` as they come (still ``uint8``: they become float
    where they are used). An error of cladec's raised in a worker process is raised again as its own message, not
    wrapped in the worker's traceback.

    Examples:
        >>> from cladec.data import load_dataset
        >>> ds = load_dataset("fashion-mnist-mini", lazy=True, limit=64)
        >>> [tuple(x.shape) for x, _ in StreamedBatches(make_loader(ds, 32, shuffle=False))]
        [(32, 1, 28, 28), (32, 1, 28, 28)]
    """

    def __init__(self, loader: DataLoader, device: Any = None) -> None:
        self.loader = loader
        self.device = torch.device(device) if device is not None else None
        self._epoch = 0  # a new order each pass, drawn from the epoch's number (a resumed fit replays it)
        gen = loader.generator
        self._seed = gen.initial_seed() if gen is not None else None

    def __len__(self) -> int:
        return len(self.loader)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass the order of epoch ``epoch`` (0-based), as a fit resumed after it needs."""
        self._epoch = epoch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        set_epoch = getattr(getattr(self.loader, "sampler", None), "set_epoch", None)
        if callable(set_epoch):  # a DistributedSampler: one order on every rank, drawn from its seed and the epoch
            set_epoch(self._epoch)
        elif self._seed is not None:  # the shuffled order of one process: the loader's seed plus the epoch
            self.loader.generator.manual_seed(self._seed + self._epoch)
        self._epoch += 1
        it = iter(self.loader)
        while True:
            try:
                xb, yb = next(it)
            except StopIteration:
                return
            except CladecError as e:
                raise type(e)(worker_message(e)) from None
            if self.device is not None:
                xb, yb = xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)
            yield xb, yb


def worker_message(e: BaseException) -> str:
    """The message of an error raised in a DataLoader worker, without the worker's traceback torch adds.

    Examples:
        >>> worker_message(DataError("Caught DataError in DataLoader worker process 0.\\nOriginal Traceback ...\\n"
        ...     "cladec._errors.DataError: cannot decode image a.png in pets\\n"))
        'cannot decode image a.png in pets'
    """
    text = str(e)
    if "Original Traceback" not in text:
        return text
    marker = f"{type(e).__module__}.{type(e).__qualname__}: "
    i = text.rfind(marker)
    return text[i + len(marker) :].strip() if i >= 0 else text
