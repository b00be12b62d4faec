"""Image-classification data sets as in-memory tensors.

:func:`load_dataset` reads MNIST, Fashion-MNIST, CIFAR-10, any image folder (or zip of one) and the small
Fashion-MNIST subset embedded in the package, and returns an :class:`ImageDataset`.

Storage and value range
    Images at their native size are stored as ``uint8`` tensors ``(N, C, H, W)``; images resized with
    ``size=...`` are stored as ``float32`` in ``[0, 1]`` (resizing is done on float tensors, so they are not
    rounded back to 8 bit). Either way ``dataset[i]`` and :meth:`ImageDataset.tensors` give ``float32``
    in ``[0, 1]``.

Order of the images
    * IDX files (MNIST, Fashion-MNIST) and the official CIFAR-10 python batches: the official file order.
    * Image folders and zips (``imagefolder:PATH``, the ``cifar10-jpeg`` zip/folder): file names are sorted
      within each class, and the classes are then **interleaved round-robin** (1st image of class 0, 1st of
      class 1, ..., 2nd of class 0, ...). So ``limit=N`` gives a class-balanced subset, not only class 0.

Where the data is looked for
    ``root`` if given, else the environment variable ``CLADEC_DATA``, else the user cache directory
    (``platformdirs.user_cache_dir("cladec")``). ``download=True`` fetches missing MNIST / Fashion-MNIST /
    CIFAR-10 files from the official mirrors into that root (MD5-verified, written atomically).

Decoded-image cache
    Decoding the 60,000 JPEGs of the CIFAR-10 zip takes a few seconds, so a full (``limit=None``) decode of
    a zip is cached as an uncompressed ``.npz`` in ``<user cache dir>/decoded`` (or ``$CLADEC_CACHE_DIR``),
    keyed by the zip's absolute path, size and modification time, and read back with
    ``allow_pickle=False``. Pass ``cache=False`` to skip it. Nothing is ever written next to the data. When a
    zip is replaced, the next full decode writes a new entry and removes the old one(s) of that zip and split.

Transparent images
    In image folders and zips, images with transparency (alpha channel, transparent palette entry or colour
    key) are composited onto a white background, and the load warns once (``UserWarning``) with the number of
    such images; see ``imagefolder`` under :func:`load_dataset`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import importlib.resources
import io
import os
import pickle
import re
import tarfile
import urllib.error
import urllib.request
import warnings
import zipfile
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from ._checks import image_tensor, label_tensor
from ._errors import ConfigError, DataError, MissingDataError
from ._io import atomic_path

__all__ = [
    "ImageDataset",
    "load_dataset",
    "check_trainable",
    "available_datasets",
    "read_idx",
    "check_md5",
    "default_data_root",
    "IMAGE_EXTENSIONS",
    "MNIST_CLASSES",
    "FASHION_MNIST_CLASSES",
    "CIFAR10_CLASSES",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
MNIST_CLASSES = [str(i) for i in range(10)]
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

_SPLITS = ("train", "test")
_CANONICAL_NAMES = ("mnist", "fashion-mnist", "cifar10", "fashion-mnist-mini")
_ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "fashion-mnist-mini": "fashion-mnist-mini",
    "fashion_mnist_mini": "fashion-mnist-mini",
    "fashionmnist-mini": "fashion-mnist-mini",
    "fmnist-mini": "fashion-mnist-mini",
}
_EMBEDDED_DIR = "_data/fashion-mnist-mini"


# --------------------------------------------------------------------------------------------------
# The data set object
# --------------------------------------------------------------------------------------------------


class ImageDataset(Dataset):
    """Images and integer labels held in memory.

    Attributes:
        images: ``uint8`` tensor ``(N, C, H, W)`` (native size) or ``float32`` in ``[0, 1]`` (resized).
        labels: ``int64`` tensor ``(N,)`` with values in ``[0, num_classes)``.
        classes: class names, index = label.
        name: data set name (e.g. ``"fashion-mnist"``).
        split: ``"train"`` or ``"test"`` (or any string for hand-made sets).

    Examples:
        >>> ds = ImageDataset(torch.zeros(4, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 0, 1]), ["a", "b"])
        >>> x, y = ds[1]
        >>> x.shape, y
        (torch.Size([1, 8, 8]), 1)
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor | Sequence[int],
        classes: Sequence[str] | None = None,
        *,
        name: str = "custom",
        split: str = "train",
    ) -> None:
        """Wrap image and label tensors.

        Args:
            images: ``(N, C, H, W)`` tensor, ``uint8`` (0..255) or floating point in ``[0, 1]``
                (stored as ``float32``).
            labels: ``N`` integer labels.
            classes: class names; default ``["0", "1", ...]`` up to the largest label.
            name: data set name used in messages and checkpoints.
            split: split name.

        Returns:
            None.

        Examples:
            >>> ImageDataset(torch.rand(2, 3, 4, 4), [0, 0], ["cat"]).image_shape
            (3, 4, 4)
        """
        images = image_tensor(images, "images", channels=None, scale_uint8=False, check_range=True, allow_empty=True)
        labels = label_tensor(labels, len(images))
        if len(images) == 0:
            raise DataError(f"data set {name!r} ({split}) is empty: it needs at least one image")
        if classes is None:
            classes = [str(i) for i in range(int(labels.max()) + 1)]
        classes = [str(c) for c in classes]
        if len(classes) == 0:
            raise DataError("classes must name at least one class")
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= len(classes):
            raise DataError(f"labels must lie in [0, {len(classes) - 1}] for {len(classes)} classes, found {lo}..{hi}")
        self.images = images
        self.labels = labels
        self.classes = classes
        self.name = name
        self.split = split
        #: ``(H, W)`` the images were resized to when loaded (``load_dataset(size=...)``), else None
        self.resized_to: tuple[int, int] | None = None
        #: the ``limit`` of :func:`load_dataset` when it kept exactly that many images (the split may hold more,
        #: so the images may be cut short), else None; :func:`check_trainable` then advises a larger limit
        self.limit: int | None = None

    # -- basic protocol -------------------------------------------------------------------------
    def __len__(self) -> int:
        """Number of images."""
        return int(self.images.shape[0])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        """Return ``(image, label)``: a ``float32`` ``C×H×W`` tensor in ``[0, 1]`` and an ``int``."""
        img = self.images[index]
        if img.dtype == torch.uint8:
            img = img.to(torch.float32).div_(255.0)
        return img, int(self.labels[index])

    def __repr__(self) -> str:
        c, h, w = self.image_shape
        return (
            f"ImageDataset(name={self.name!r}, split={self.split!r}, size={len(self)}, "
            f"image_shape=({c}, {h}, {w}), num_classes={self.num_classes})"
        )

    # -- properties -----------------------------------------------------------------------------
    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of every image."""
        _, c, h, w = self.images.shape
        return (int(c), int(h), int(w))

    @property
    def num_classes(self) -> int:
        """Number of classes (``len(classes)``)."""
        return len(self.classes)

    # -- helpers --------------------------------------------------------------------------------
    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images and labels at once, the fast path for in-memory training.

        Returns:
            ``(images, labels)``: ``float32`` ``(N, C, H, W)`` in ``[0, 1]`` and ``int64`` ``(N,)``. For a
            resized (float) data set the images tensor is the stored one itself, not a copy.

        Examples:
            >>> x, y = load_dataset("fashion-mnist-mini", split="test").tensors()
            >>> x.shape, x.dtype, y.dtype
            (torch.Size([1000, 1, 28, 28]), torch.float32, torch.int64)
        """
        if self.images.dtype == torch.uint8:
            return self.images.to(torch.float32).div_(255.0), self.labels
        return self.images, self.labels

    def subset(self, indices: Sequence[int] | torch.Tensor | slice | range) -> ImageDataset:
        """A new data set with the images at ``indices`` (same classes, name and split).

        Args:
            indices: integer indices, a boolean mask, a slice or a range.

        Returns:
            A new :class:`ImageDataset`.

        Examples:
            >>> ds = load_dataset("fashion-mnist-mini")
            >>> len(ds.subset(range(100)))
            100
        """
        if isinstance(indices, slice):
            idx: Any = indices
        elif isinstance(indices, range):
            idx = slice(indices.start, indices.stop, indices.step) if indices.step > 0 else list(indices)
        else:
            idx = torch.as_tensor(indices)
            if idx.numel() == 0:
                idx = idx.to(torch.int64).reshape(-1)
            if idx.dtype == torch.bool and tuple(idx.shape) != (len(self),):
                raise DataError(
                    f"a boolean subset mask needs one entry per image ({len(self)}), got shape {tuple(idx.shape)}"
                )
            if idx.dtype != torch.bool:
                if idx.is_floating_point():
                    raise DataError(f"subset indices must be integers, got dtype {idx.dtype}")
                idx = idx.to(torch.int64).reshape(-1)
                if len(idx) and (int(idx.max()) >= len(self) or int(idx.min()) < -len(self)):
                    raise DataError(
                        f"subset index out of range for a data set of {len(self)} images: "
                        f"got values {int(idx.min())}..{int(idx.max())}"
                    )
        out = ImageDataset(self.images[idx], self.labels[idx], self.classes, name=self.name, split=self.split)
        out.resized_to = self.resized_to
        return out

    def class_counts(self) -> list[int]:
        """Number of images per class.

        Returns:
            A list of ``num_classes`` counts.

        Examples:
            >>> load_dataset("fashion-mnist-mini", split="test").class_counts()
            [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
        """
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary.

        Returns:
            ``dict(name, split, size, image_shape, num_classes, classes)``; ``size`` is the number of images.

        Examples:
            >>> load_dataset("fashion-mnist-mini", split="test").describe()["size"]
            1000
        """
        return {
            "name": self.name,
            "split": self.split,
            "size": len(self),
            "image_shape": list(self.image_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
        }


# --------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`.

    Returns:
        The canonical names plus the pattern ``"imagefolder:PATH"``.

    Examples:
        >>> "mnist" in available_datasets()
        True
    """
    return list(_CANONICAL_NAMES) + ["imagefolder:PATH"]


def default_data_root() -> Path:
    """Where data sets are looked for when ``root`` is not given.

    Returns:
        ``$CLADEC_DATA`` if set, else ``platformdirs.user_cache_dir("cladec")``.

    Examples:
        >>> isinstance(default_data_root(), Path)
        True
    """
    env = os.environ.get("CLADEC_DATA")
    if env:
        return Path(env).expanduser()
    return _user_cache_dir()


def load_dataset(
    name: str,
    root: str | os.PathLike | None = None,
    split: str = "train",
    size: int | tuple[int, int] | None = None,
    limit: int | None = None,
    download: bool = False,
    *,
    resize_mode: str = "bilinear",
    cache: bool = True,
) -> ImageDataset:
    """Load a data set split into memory.

    Args:
        name: ``"mnist"``, ``"fashion-mnist"`` (aliases ``"fashionmnist"``, ``"fmnist"``), ``"cifar10"``,
            ``"fashion-mnist-mini"`` (embedded in the package; ``root`` is ignored) or
            ``"imagefolder:PATH"`` (a folder or ``.zip`` with ``<split>/<class>/*.png|jpg|jpeg|bmp|tif|tiff``).
            Case-insensitive. Transparent pixels of folder/zip images (RGBA, LA, P with transparency) are
            composited onto white -- what viewers show behind them, so dark objects on a clear background
            stay visible -- instead of keeping the colour hidden under them, with one ``UserWarning`` per
            load giving the folder/zip and the number of such images.
        root: folder holding the data (e.g. ``root/MNIST/raw/...``, ``root/FashionMNIST/raw/...``,
            ``root/cifar10-jpeg.zip``, ``root/cifar10-jpeg/`` or ``root/cifar-10-batches-py/``). Default:
            ``$CLADEC_DATA``, else the user cache directory.
        split: ``"train"`` or ``"test"``.
        size: ``None`` keeps the native size; an ``int`` or ``(H, W)`` resizes every image (antialiased
            bilinear on float tensors via ``torch.nn.functional.interpolate``; the result is stored as
            ``float32``).
        limit: keep only the first ``limit`` images (see the module docstring for the order; image folders
            are interleaved by class so this is class-balanced). More than available keeps all.
        download: fetch missing MNIST / Fashion-MNIST / CIFAR-10 files from the official mirrors.
        resize_mode: ``"bilinear"`` (default, antialiased) or ``"nearest"`` (what the ClaDec authors' code
            does, ``F.interpolate(x, size=32)``).
        cache: allow the decoded-image cache for zips (see module docstring; one entry per zip and split,
            older entries of a replaced zip are removed).

    Returns:
        An :class:`ImageDataset`.

    Raises:
        ConfigError: unknown name, bad split, size or limit.
        DataError: files missing (the message lists every path tried) or unreadable, or no images.

    Examples:
        >>> ds = load_dataset("fashion-mnist-mini", split="test", size=32, limit=20)
        >>> ds.image_shape, len(ds)
        ((1, 32, 32), 20)
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"data set name must be a non-empty string; valid names: {_valid_names_text()}")
    if not isinstance(split, str) or split.lower() not in _SPLITS:
        raise ConfigError(f"split must be one of {list(_SPLITS)}, got {split!r}")
    split = split.lower()
    out_size = _check_size(size)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
        if limit <= 0:
            raise ConfigError(f"limit must be a positive integer or None, got {limit}")
        limit = int(limit)
    if resize_mode not in ("bilinear", "nearest"):
        raise ConfigError(f"resize_mode must be 'bilinear' or 'nearest', got {resize_mode!r}")

    raw = name.strip()
    if raw.lower().startswith("imagefolder:"):
        path = raw[len("imagefolder:") :]
        if not path:
            raise ConfigError("imagefolder needs a path: use 'imagefolder:PATH' with PATH a folder or .zip")
        ds_name = f"imagefolder:{path}"
        images, labels, classes = _load_image_folder(
            Path(path).expanduser(), split, limit, cache=cache, size=out_size, mode=resize_mode
        )
    else:
        key = _ALIASES.get(raw.lower())
        if key is None:
            raise ConfigError(f"unknown data set {name!r}; valid names: {_valid_names_text()}")
        ds_name = key
        if key == "fashion-mnist-mini":
            images, labels, classes = _load_embedded(split, limit)
        else:
            data_root = Path(root).expanduser() if root is not None else default_data_root()
            if key in ("mnist", "fashion-mnist"):
                images, labels, classes = _load_idx_dataset(_IDX_SPECS[key], data_root, split, limit, download)
            else:
                images, labels, classes = _load_cifar10(data_root, split, limit, download, cache=cache)

    if images.shape[0] == 0:
        raise DataError(f"data set {ds_name!r} ({split}) has no images")
    img_t = torch.from_numpy(np.ascontiguousarray(images))
    if out_size is not None and tuple(img_t.shape[-2:]) != out_size:
        img_t = _resize(img_t, out_size, resize_mode)
    lab_t = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
    ds = ImageDataset(img_t, lab_t, classes, name=ds_name, split=split)
    ds.resized_to = out_size  # recorded in classifier checkpoints, so that `fit` loads the same size
    ds.limit = limit if limit is not None and len(ds) == limit else None
    return ds


def check_trainable(train: Any, test: Any = None) -> None:
    """Refuse data a classifier cannot learn from: fewer than 2 classes, or test classes never trained on.

    A classifier trained on one class always predicts it, and reports "accuracy 1.0 (chance 1.00)"; one
    whose test split holds classes without training images is scored on classes it never saw. Call this
    before training.

    Args:
        train: the training data: an :class:`ImageDataset` (its ``classes`` name the classes in the messages)
            or an ``(images, labels)`` pair of tensors (classes named by their label). Other kinds of data (a
            generic ``Dataset``, a ``DataLoader``) are not checked, as counting their labels means reading them.
        test: the test data (same kinds), or None.

    Returns:
        None.

    Raises:
        DataError: the training data has images of fewer than 2 classes; the test data has images of a class
            the training data has none of (the message names those classes and their test-image counts); or
            the two data sets name different classes. When the training set was cut by ``limit``
            (``load_dataset(limit=...)`` kept exactly that many images) the message advises a larger
            ``--limit``.

    Examples:
        >>> check_trainable(load_dataset("fashion-mnist-mini", limit=100), load_dataset("fashion-mnist-mini", "test"))
        >>> check_trainable(ImageDataset(torch.zeros(3, 1, 4, 4), [0, 0, 0], ["cat"], name="pets"))
        Traceback (most recent call last):
            ...
        cladec._errors.DataError: a classifier needs images of at least 2 classes; pets (train) has 1: 'cat' (3 images)
    """
    tr = _label_counts(train, "training")
    if tr is None:
        return
    tr_classes, tr_counts, tr_where, tr_role, tr_limit = tr
    limit_hint = (
        f"; the training split was cut to its first {tr_limit} images (limit={tr_limit}): a larger --limit "
        "may include more classes"
        if tr_limit is not None
        else ""
    )
    present = [(c, n) for c, n in zip(tr_classes, tr_counts, strict=False) if n > 0]
    if len(present) < 2:
        listed = ", ".join(f"{c!r} ({n} image{'s' if n != 1 else ''})" for c, n in present)
        hint = limit_hint
        if not hint and tr_where.startswith("imagefolder:"):
            hint = "; give the folder one sub-folder of images per class under train/ (and test/), at least 2"
        raise DataError(
            f"a classifier needs images of at least 2 classes; {tr_where} has {len(present)}: {listed}{hint}"
        )
    if test is None:
        return
    te = _label_counts(test, "test")
    if te is None:
        return
    te_classes, te_counts, te_where, te_role, _ = te
    if isinstance(train, ImageDataset) and isinstance(test, ImageDataset) and list(te_classes) != list(tr_classes):
        raise DataError(
            f"{te_role} names other classes than {tr_role}: "
            f"{_short_list(te_classes)} against {_short_list(tr_classes)}; both must name the same classes in the "
            "same order (the labels index them)"
        )
    if len(te_counts) > len(tr_counts):
        tr_counts = list(tr_counts) + [0] * (len(te_counts) - len(tr_counts))
    unseen = [(te_classes[k], n) for k, n in enumerate(te_counts) if n > 0 and tr_counts[k] == 0]
    if unseen:
        listed = ", ".join(f"{c!r} ({n} test image{'s' if n != 1 else ''})" for c, n in unseen)
        them = "it" if len(unseen) == 1 else "them"
        hint = (
            limit_hint.replace("more classes", them)
            if limit_hint
            else (
                "; add training images of "
                + ("it" if len(unseen) == 1 else "them")
                + (" (train/<class>/ in the folder)" if tr_where.startswith("imagefolder:") else "")
                + ", or remove "
                + ("it" if len(unseen) == 1 else "them")
                + " from the test data"
            )
        )
        raise DataError(
            f"{te_role} has images of {len(unseen)} class{'es' if len(unseen) != 1 else ''} {tr_role} has no "
            f"images of, so the classifier could never predict {them}: {listed}{hint}"
        )


def _short_list(names: Sequence[str], n: int = 6) -> str:
    shown = ", ".join(repr(c) for c in names[:n])
    return f"[{shown}{', ...' if len(names) > n else ''}] ({len(names)})"


def _label_counts(data: Any, role: str) -> tuple[list[str], list[int], str, str, int | None] | None:
    """``(class names, images per class, where, role phrase, limit)`` of an ImageDataset or (images, labels)
    pair: ``where`` is ``"NAME (SPLIT)"`` (a pair: ``"the ROLE data"``), the role phrase ``"the ROLE data NAME
    (SPLIT)"``."""
    if isinstance(data, ImageDataset):
        where = f"{data.name} ({data.split})"
        return list(data.classes), data.class_counts(), where, f"the {role} data {where}", data.limit
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        labels = data[1].reshape(-1)
        if labels.numel() == 0 or labels.is_floating_point() or labels.is_complex() or int(labels.min()) < 0:
            return None  # the training code refuses such labels with its own message
        counts = torch.bincount(labels.to(torch.int64)).tolist()
        return [str(k) for k in range(len(counts))], counts, f"the {role} data", f"the {role} data", None
    return None


# --------------------------------------------------------------------------------------------------
# Argument helpers
# --------------------------------------------------------------------------------------------------


def _valid_names_text() -> str:
    return ", ".join(repr(n) for n in available_datasets()) + " (aliases: 'fashionmnist', 'fmnist', 'cifar-10')"


def _check_size(size: Any) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        if size <= 0:
            raise ConfigError(f"size must be a positive integer or (H, W) pair, got {size}")
        return (int(size), int(size))
    if isinstance(size, (tuple, list)) and len(size) == 2:
        if all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) and s > 0 for s in size):
            return (int(size[0]), int(size[1]))
    raise ConfigError(f"size must be None, a positive integer or an (H, W) pair of positive integers, got {size!r}")


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str, chunk: int = 4096) -> torch.Tensor:
    """Resize ``(N, C, H, W)`` uint8/float images to float32 ``(N, C, *size)`` in [0, 1], in chunks."""
    out = torch.empty((images.shape[0], images.shape[1], *size), dtype=torch.float32)
    for start in range(0, images.shape[0], chunk):
        x = images[start : start + chunk].to(torch.float32)
        if images.dtype == torch.uint8:
            x = x.div_(255.0)
        if mode == "bilinear":
            y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        else:
            y = F.interpolate(x, size=size, mode="nearest")
        out[start : start + chunk] = y.clamp_(0.0, 1.0)
    return out


def _user_cache_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_cache_dir("cladec"))


def _decoded_cache_dir() -> Path:
    env = os.environ.get("CLADEC_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return _user_cache_dir() / "decoded"


def _how_to_get(name: str) -> str:
    return (
        f"To get {name}: pass download=True (on the command line: --download), or set the environment "
        "variable CLADEC_DATA (or pass root=...) to a folder that holds it, e.g. one with MNIST/raw/..., "
        "FashionMNIST/raw/... or cifar10-jpeg.zip in it. Without any data, use the embedded "
        "'fashion-mnist-mini'."
    )


# --------------------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------------

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class _IdxSpec:
    title: str
    folder: str
    mirrors: tuple[str, ...]
    files: dict[str, tuple[tuple[str, str], tuple[str, str]]]  # split -> ((images, md5), (labels, md5))
    classes: tuple[str, ...]


_IDX_SPECS = {
    "mnist": _IdxSpec(
        title="MNIST",
        folder="MNIST",
        mirrors=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        files={
            "train": (
                ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
                ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
            ),
            "test": (
                ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
                ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
            ),
        },
        classes=tuple(MNIST_CLASSES),
    ),
    "fashion-mnist": _IdxSpec(
        title="Fashion-MNIST",
        folder="FashionMNIST",
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        files={
            "train": (
                ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
                ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ),
            "test": (
                ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
                ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
            ),
        },
        classes=tuple(FASHION_MNIST_CLASSES),
    ),
}


def read_idx(source: str | os.PathLike | BinaryIO, limit: int | None = None) -> np.ndarray:
    """Parse an IDX file (the MNIST format), gzipped or not, without per-item Python loops.

    Args:
        source: a path or a binary file object (gzip is detected from the magic bytes).
        limit: read only the first ``limit`` items (``None``: all). The length of the data is still checked
            against the header's item count: exactly for uncompressed files (the file size) and, for gzip,
            from the uncompressed size in the gzip trailer (the rest is decompressed only if that disagrees).

    Returns:
        A read-only numpy array of shape ``(N, *dims)`` in the file's dtype (``uint8`` for MNIST).

    Raises:
        DataError: the file is not IDX, is truncated, or holds more or less data than its header says.

    Examples:
        >>> mini = Path(__file__).parent / "_data" / "fashion-mnist-mini"  # the embedded data set's files
        >>> labels = read_idx(mini / "t10k-labels-idx1-ubyte.gz")
        >>> labels.shape, labels[:3]
        ((1000,), array([9, 2, 1], dtype=uint8))
        >>> read_idx(mini / "t10k-images-idx3-ubyte.gz", limit=5).shape
        (5, 28, 28)
    """
    return _read_idx_file(source, limit)[0]


def _read_idx_file(source: str | os.PathLike | BinaryIO, limit: int | None) -> tuple[np.ndarray, int]:
    """:func:`read_idx`, also returning the item count of the file's header (``N`` of the whole file)."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        try:
            with path.open("rb") as f:
                return _read_idx_stream(f, str(path), limit)
        except OSError as e:
            raise DataError(f"cannot read IDX file {path}: {e}") from None
    return _read_idx_stream(source, getattr(source, "name", "<stream>"), limit)


def _read_exact(f: IO[bytes] | gzip.GzipFile, n: int) -> bytearray:
    """Read exactly ``n`` bytes (fewer only at end of file) into a writable buffer."""
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = f.readinto(view[got:])  # type: ignore[union-attr]  # typeshed's IO has no readinto; files do
        if not k:
            break
        got += k
    view.release()
    if got < n:
        del buf[got:]
    return buf


def _raw_length_and_gzip_isize(f: IO[bytes], is_gzip: bool) -> tuple[int | None, int | None]:
    """Bytes from the current position of a seekable file to its end, and (gzip) the trailer's ISIZE.

    ISIZE is the uncompressed size modulo 2**32 of the last gzip member; the position is restored.
    """
    try:
        start = f.tell()
        end = f.seek(0, io.SEEK_END)
        isize = None
        if is_gzip and end - start >= 18:  # 10-byte header + 8-byte trailer at least
            f.seek(end - 4)
            isize = int.from_bytes(f.read(4), "little")
        f.seek(start)
    except (OSError, ValueError):
        return None, None
    return end - start, isize


def _read_idx_stream(f: IO[bytes], label: str, limit: int | None) -> tuple[np.ndarray, int]:
    """Parse an IDX stream: ``(array of the first min(limit, N) items, N from the header)``."""
    head = f.read(2)
    is_gzip = head == b"\x1f\x8b"
    if not (hasattr(f, "seek") and f.seekable()):  # pragma: no cover - cladec itself only reads files
        f = io.BytesIO(head + f.read())
    else:
        f.seek(-len(head), io.SEEK_CUR)
    raw_len, isize = _raw_length_and_gzip_isize(f, is_gzip)
    stream: IO[bytes] | gzip.GzipFile = gzip.GzipFile(fileobj=f) if is_gzip else f
    try:
        magic = _read_exact(stream, 4)
        if len(magic) != 4 or magic[0] != 0 or magic[1] != 0 or magic[2] not in _IDX_DTYPES or magic[3] == 0:
            raise DataError(
                f"{label} is not an IDX file (bad magic number {magic.hex() or 'empty'}); expected the MNIST "
                "format, e.g. train-images-idx3-ubyte(.gz)"
            )
        dtype, ndim = _IDX_DTYPES[magic[2]], magic[3]
        dims_raw = _read_exact(stream, 4 * ndim)
        if len(dims_raw) != 4 * ndim:
            raise DataError(f"IDX file {label} is truncated (incomplete header)")
        dims = [int(d) for d in np.frombuffer(dims_raw, dtype=">u4")]
        n = dims[0] if limit is None else min(limit, dims[0])
        item = int(np.prod(dims[1:], dtype=np.int64)) if len(dims) > 1 else 1
        nbytes = n * item * dtype.itemsize
        header_len = 4 + 4 * ndim
        expected = header_len + dims[0] * item * dtype.itemsize  # the whole file, as the header describes it
        body = _read_exact(stream, nbytes)
        if len(body) != nbytes:
            raise DataError(
                f"IDX file {label} is truncated: expected {nbytes} bytes of data for {n} items, got "
                f"{len(body)}; delete it and download it again"
            )
        # The rest of the file must hold exactly the items not read (also with `limit`, so that a truncated
        # file or a wrong header count is noticed). After a full read: nothing may follow. After a partial
        # read: the file size (uncompressed) or the gzip trailer's ISIZE tell, cheaply; only if ISIZE
        # disagrees (a damaged or a multi-member gzip) is the rest decompressed and counted.
        if n == dims[0]:
            actual = expected + len(stream.read(1))  # one byte more: data beyond the header's count
        elif not is_gzip and raw_len is not None:
            actual = raw_len
        elif is_gzip and isize is not None and isize == expected % (1 << 32):
            actual = expected
        else:
            actual = header_len + nbytes + sum(len(b) for b in iter(lambda: stream.read(1 << 20), b""))
    except EOFError as e:
        raise DataError(f"IDX file {label} is truncated ({e}); delete it and download it again") from None
    except (OSError, gzip.BadGzipFile) as e:
        raise DataError(f"cannot read IDX file {label}: {e}") from None
    if actual != expected:
        shape = "x".join(str(d) for d in dims[1:]) or "one value"
        held = "more data than that" if n == dims[0] else f"{actual} bytes"
        problem = "truncated" if actual < expected else "damaged (its header counts fewer items than it holds)"
        raise DataError(
            f"IDX file {label} does not match its header: the header says {dims[0]} items of {shape} "
            f"({expected} bytes in all) but the file holds {held}; it is {problem}: delete it and download it "
            "again"
        )
    arr = np.frombuffer(body, dtype=dtype).reshape([n, *dims[1:]])
    if dtype.byteorder == ">":
        arr = arr.astype(dtype.newbyteorder("="))
    return arr, dims[0]


def _find_idx_pair(spec: _IdxSpec, root: Path, split: str) -> tuple[tuple[Path, Path] | None, list[Path]]:
    (img_name, _), (lab_name, _) = spec.files[split]
    tried: list[Path] = []
    for d in (root / spec.folder / "raw", root / spec.folder, root):
        found = []
        for fname in (img_name, lab_name):
            hit = None
            for cand in (d / fname, d / fname[: -len(".gz")]):
                tried.append(cand)
                if cand.is_file():
                    hit = cand
                    break
            found.append(hit)
        if found[0] is not None and found[1] is not None:
            return (found[0], found[1]), tried
    return None, tried


def _load_idx_dataset(
    spec: _IdxSpec, root: Path, split: str, limit: int | None, download: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    pair, tried = _find_idx_pair(spec, root, split)
    if pair is None and download:
        raw = root / spec.folder / "raw"
        for fname, md5 in spec.files[split]:
            _download_first([m + fname for m in spec.mirrors], raw / fname, md5)
        pair, tried2 = _find_idx_pair(spec, root, split)
        tried += tried2
    if pair is None:
        tried_txt = "\n  ".join(str(p) for p in dict.fromkeys(tried))
        raise MissingDataError(
            f"{spec.title} ({split}) not found. Looked for:\n  {tried_txt}\n{_how_to_get(spec.title)}"
        )
    images, n_images = _read_idx_file(pair[0], limit)
    labels, n_labels = _read_idx_file(pair[1], limit)
    _check_idx_pair(str(pair[0]), images, n_images, str(pair[1]), labels, n_labels)
    return images[:, None, :, :], labels.astype(np.int64), list(spec.classes)


def _check_idx_pair(
    img_name: str, images: np.ndarray, n_images: int, lab_name: str, labels: np.ndarray, n_labels: int
) -> None:
    """Images (N, H, W) and labels (N,) that belong together: the headers' counts agree (even with a limit)."""
    if images.ndim != 3:
        raise DataError(f"{img_name} holds arrays of shape {images.shape[1:]}, expected 2-D images (H, W)")
    if labels.ndim != 1:
        raise DataError(f"{lab_name} holds arrays of shape {labels.shape[1:]}, expected one label per image")
    if n_images != n_labels or len(images) != len(labels):
        raise DataError(
            f"{img_name} holds {n_images} images but {lab_name} holds {n_labels} labels (IDX header counts); "
            "the two files must hold the same number of items: they do not belong together or one is damaged "
            "-- delete them and download them again"
        )


def _load_embedded(split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    base = importlib.resources.files("cladec").joinpath(_EMBEDDED_DIR)
    prefix = "train" if split == "train" else "t10k"
    arrays, names = [], []
    for kind in ("images-idx3", "labels-idx1"):
        res = base.joinpath(f"{prefix}-{kind}-ubyte.gz")
        names.append(f"fashion-mnist-mini/{res.name}")
        try:
            with res.open("rb") as f:
                arrays.append(_read_idx_stream(f, names[-1], limit))
        except FileNotFoundError:
            raise DataError(
                f"the embedded data set is missing from this installation ({res}); reinstall cladec, or use "
                "'fashion-mnist' with download=True"
            ) from None
    (images, n_images), (labels, n_labels) = arrays
    _check_idx_pair(names[0], images, n_images, names[1], labels, n_labels)
    return images[:, None, :, :], labels.astype(np.int64), list(FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------------------------------
# Image folders and zips
# --------------------------------------------------------------------------------------------------


def _interleave(per_class: list[list[Any]]) -> list[tuple[int, Any]]:
    """Round-robin over classes: [(label, item), ...] so that every prefix is class-balanced."""
    out: list[tuple[int, Any]] = []
    longest = max((len(x) for x in per_class), default=0)
    for i in range(longest):
        for label, items in enumerate(per_class):
            if i < len(items):
                out.append((label, items[i]))
    return out


def _is_image_name(name: str) -> bool:
    base = name.rsplit("/", 1)[-1]
    return not base.startswith(".") and base.lower().endswith(IMAGE_EXTENSIONS)


#: Largest uncompressed image file read from a zip (512 MiB; a full-limit RGBA BMP is ~358 MB).
_MAX_ZIP_MEMBER_BYTES = 512 * 1024 * 1024


class _ZipSource:
    """Entries ``[prefix/]split/class/file`` of a zip archive."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.zf = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise DataError(f"{path} is not a readable zip file: {e}") from None
        # (prefix, split, class) -> [member names]
        self.tree: dict[tuple[str, str, str], list[str]] = {}
        for member in self.zf.namelist():
            if member.endswith("/") or "__MACOSX" in member or not _is_image_name(member):
                continue
            parts = [q for q in member.split("/") if q]
            if len(parts) < 3:
                continue
            prefix = "/".join(parts[:-3])
            self.tree.setdefault((prefix, parts[-3], parts[-2]), []).append(member)
        prefixes = sorted({k[0] for k in self.tree if k[1] in _SPLITS}, key=lambda p: (p.count("/"), p))
        self.prefix = prefixes[0] if prefixes else ""

    def splits(self) -> list[str]:
        return sorted({k[1] for k in self.tree if k[0] == self.prefix})

    def classes(self) -> list[str]:
        return sorted({k[2] for k in self.tree if k[0] == self.prefix and k[1] in _SPLITS})

    def files(self, split: str, cls: str) -> list[str]:
        return sorted(self.tree.get((self.prefix, split, cls), []), key=lambda m: m.rsplit("/", 1)[-1])

    def read(self, member: str) -> bytes:
        """The bytes of ``member``, refused (DataError) past :data:`_MAX_ZIP_MEMBER_BYTES` uncompressed, by the
        size the zip declares and by what is actually read (a zip bomb may declare less than it holds)."""
        limit = _MAX_ZIP_MEMBER_BYTES
        declared = self.zf.getinfo(member).file_size
        if declared <= limit:
            with self.zf.open(member) as f:
                data = f.read(limit + 1)
            if len(data) <= limit:
                return data
        raise DataError(
            f"image {member} in {self.path} is too large to load: "
            f"{'over ' if declared <= limit else ''}{max(declared, limit + 1):,} bytes uncompressed, more than "
            f"the limit of {limit:,} bytes per image file in a zip (a guard against zip bombs); remove it from "
            "the zip"
        )

    def close(self) -> None:
        self.zf.close()


class _DirSource:
    """Files ``root/split/class/file`` of a folder (or of its single sub-folder, as from an unzipped archive)."""

    def __init__(self, path: Path) -> None:
        base = path
        if not any((path / s).is_dir() for s in _SPLITS):
            subdirs = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
            if len(subdirs) == 1 and any((subdirs[0] / s).is_dir() for s in _SPLITS):
                base = subdirs[0]
        self.path = base

    def splits(self) -> list[str]:
        return sorted(s for s in _SPLITS if (self.path / s).is_dir())

    def classes(self) -> list[str]:
        names: set[str] = set()
        for s in _SPLITS:
            d = self.path / s
            if d.is_dir():
                names.update(p.name for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))
        return sorted(names)

    def files(self, split: str, cls: str) -> list[Path]:
        d = self.path / split / cls
        if not d.is_dir():
            return []
        return sorted((p for p in d.iterdir() if p.is_file() and _is_image_name(p.name)), key=lambda p: p.name)

    def read(self, member: Path) -> bytes:
        return member.read_bytes()

    def close(self) -> None:
        pass


_GREY_MODES = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"}

# Transparent pixels are composited onto white. White is what image viewers, web browsers and documents show
# behind a transparent PNG (and ImageMagick's `-flatten` default), so the decoded images look like the files as
# people see them; the usual transparent images (logos, sketches, cut-out product photos: dark objects on a
# clear background) keep their objects visible on white, while on black they would vanish. The colour hidden
# under a fully transparent pixel (often black, sometimes garbage) is never used.
_ALPHA_BACKGROUND = 255
_ALPHA_BACKGROUND_NAME = "white"
_ALPHA_MODES = {"RGBA", "RGBa", "LA", "La", "PA"}


def _grey_uint8(im: Any) -> np.ndarray:
    """A grey image as uint8 0..255, scaling deeper images by their bit depth (PIL's convert("L") clips them).

    Any transparency is composited onto the background (:data:`_ALPHA_BACKGROUND`); see :func:`_grey_alpha`.
    """
    if im.mode in ("1", "L", "LA"):
        alpha = _grey_alpha(im)
        return _composite(np.asarray(im.convert("L")), alpha)
    a = np.asarray(im)
    # 16-bit: "I;16*" modes, and "I" for a PNG (older Pillow opens 16-bit grey PNGs so) whatever its values
    sixteen = im.mode.startswith("I;16") or (im.mode == "I" and getattr(im, "format", None) == "PNG")
    if sixteen or (im.mode == "I" and a.size and 255 < int(a.max()) <= 65535):
        out = ((np.clip(a, 0, 65535).astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    elif im.mode == "F" and a.size and float(a.min()) >= -1e-3 and float(a.max()) <= 1 + 1e-3:
        out = np.rint(np.clip(a, 0.0, 1.0) * 255.0).astype(np.uint8)  # float in [0, 1] (rounding overshoot)
    else:
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        if not (lo >= 0 and hi <= 255):
            raise ValueError(
                f"grey image of mode {im.mode} has values {lo:g}..{hi:g}; supported are 8- and "
                "16-bit integers and floats in [0, 1] or [0, 255]"
            )
        out = np.rint(a).astype(np.uint8)
    return _composite(out, _grey_alpha(im))


def _grey_alpha(im: Any) -> np.ndarray | None:
    """The alpha (uint8 H x W) of a grey image with an alpha channel or a transparent grey value, else None."""
    if im.mode == "LA":
        return np.asarray(im.getchannel("A"))
    key = im.info.get("transparency")
    if key is None or isinstance(key, (bytes, tuple)):
        return None
    if im.mode in ("1", "L"):
        return np.asarray(im.convert("LA").getchannel("A"))  # Pillow maps the key to alpha 0
    # deeper grey (16-bit, 32-bit, float): compare with the key at full depth (convert("LA") would clip first)
    return np.where(np.asarray(im) == key, 0, 255).astype(np.uint8)


def _composite(values: np.ndarray, alpha: np.ndarray | None) -> np.ndarray:
    """``values`` (H, W[, C]) uint8 over the :data:`_ALPHA_BACKGROUND` with straight ``alpha`` (H, W), rounded."""
    if alpha is None or bool((alpha == 255).all()):
        return values
    a = alpha.astype(np.uint32)
    if values.ndim == 3:
        a = a[:, :, None]
    out = (values.astype(np.uint32) * a + _ALPHA_BACKGROUND * (255 - a) + 127) // 255
    return out.astype(np.uint8)


def _has_transparency(im: Any) -> bool:
    """Whether some pixel of ``im`` is not fully opaque (an alpha channel below 255, or a transparent colour)."""
    if im.mode in _ALPHA_MODES:
        lo, _ = im.getchannel("A").getextrema()
        return lo < 255
    if "transparency" not in im.info:
        return False
    if im.mode in _GREY_MODES:
        alpha = _grey_alpha(im)
        return alpha is not None and bool((alpha < 255).any())
    lo, _ = im.convert("RGBA").getchannel("A").getextrema()  # palette (P) or colour-key (RGB) transparency
    return lo < 255


def _decode_images(source: Any, members: list[Any], label: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode images to one uint8 array (N, H, W, C); grey if every image is grey, else RGB.

    Transparent pixels are composited onto :data:`_ALPHA_BACKGROUND` (white). Returns the images and a bool
    array (N,) telling which images had transparent pixels (the caller warns).
    """
    from PIL import Image, UnidentifiedImageError

    arrays: list[np.ndarray] = []
    transparent = np.zeros(len(members), dtype=bool)
    any_color = False
    for i, m in enumerate(members):
        try:
            raw = source.read(m)
        except (OSError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError, NotImplementedError) as e:
            # a damaged zip member (bad CRC or deflate data), an encrypted one, an unsupported compression
            raise DataError(f"cannot read image {m} in {label}: {e}") from None
        try:
            with warnings.catch_warnings():  # the pixel limit is enforced below, as an error, not a warning
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(raw))
            with im:
                limit = Image.MAX_IMAGE_PIXELS
                if limit is not None and im.width * im.height > limit:
                    raise _TooManyPixels(im.size)
                transparent[i] = _has_transparency(im)
                if im.mode in _GREY_MODES:
                    a = _grey_uint8(im)[:, :, None]
                elif transparent[i]:
                    rgba = np.asarray(im.convert("RGBA"))  # un-premultiplies RGBa; palette alpha for P
                    a = _composite(rgba[:, :, :3], rgba[:, :, 3])
                    any_color = True
                else:
                    a = np.asarray(im.convert("RGB"))
                    any_color = True
        except Image.DecompressionBombError as e:  # over twice the limit: PIL refuses before decoding
            raise DataError(_too_many_pixels(m, label, None, _pixels_in(str(e)))) from None
        except _TooManyPixels as e:
            raise DataError(_too_many_pixels(m, label, e.size, e.size[0] * e.size[1])) from None
        except (UnidentifiedImageError, OSError, ValueError) as e:
            raise DataError(f"cannot decode image {m} in {label}: {e}") from None
        arrays.append(a)
    if any_color:
        arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise _MixedSizes(arrays, transparent)
    return np.stack(arrays), transparent


class _TooManyPixels(Exception):
    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__(f"{size[0]}x{size[1]} pixels")
        self.size = size


def _pixels_in(message: str) -> int | None:
    """The pixel count in PIL's DecompressionBombError message ("Image size (N pixels) exceeds ..."), if any."""
    m = re.search(r"\((\d+) pixels\)", message)
    return int(m.group(1)) if m else None


def _too_many_pixels(member: Any, label: str, size: tuple[int, int] | None, pixels: int | None) -> str:
    """The message refusing an image over ``PIL.Image.MAX_IMAGE_PIXELS`` (see :func:`_load_image_folder`)."""
    from PIL import Image

    limit = Image.MAX_IMAGE_PIXELS
    side = int(limit**0.5) if limit else 0
    what = (
        f"{size[0]}×{size[1]} = {size[0] * size[1]:,} pixels"
        if size
        else (f"{pixels:,} pixels" if pixels else "more pixels than twice the limit")
    )
    return (
        f"image {member} in {label} is too large to load: {what}, more than the limit of {limit:,} pixels per "
        f"image (about {side:,}×{side:,}; PIL.Image.MAX_IMAGE_PIXELS, a guard against decompression bombs); "
        "downscale that image or remove it from the data set"
    )


class _MixedSizes(Exception):
    def __init__(self, arrays: list[np.ndarray], transparent: np.ndarray) -> None:
        super().__init__("images of different sizes")
        self.arrays = arrays
        self.transparent = transparent


def _warn_transparent(transparent: np.ndarray, where: str) -> None:
    """One UserWarning per load naming the folder/zip, how many images had transparency and the background."""
    k = int(np.count_nonzero(transparent))
    if k:
        warnings.warn(
            f"{k} of {len(transparent)} images in {where} have transparent pixels (alpha channel or transparent "
            f"colour); they were composited onto a {_ALPHA_BACKGROUND_NAME} background ({_ALPHA_BACKGROUND} in "
            f"every channel) before use",
            UserWarning,
            stacklevel=4,  # _warn_transparent < _load_image_folder < load_dataset < the caller
        )


def _load_image_folder(
    path: Path,
    split: str,
    limit: int | None,
    *,
    cache: bool,
    size: tuple[int, int] | None = None,
    mode: str = "bilinear",
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``<split>/<class>/<image>`` from a folder or a zip: images, labels and class names.

    Images are returned as ``(N, C, H, W)`` uint8 -- or float32 already resized to ``size`` if their sizes
    differ. They are grey (C = 1) if every image is grey, else RGB (C = 3).

    Transparency: images with an alpha channel (RGBA, LA, PA), a transparent palette entry (P) or a
    transparent colour key are composited onto a **white** background (255 in every channel), with straight
    (non-premultiplied) alpha: ``value * alpha + 255 * (1 - alpha)``. PIL's ``convert("RGB")`` would instead
    drop the alpha and show whatever colour the file hides under transparent pixels (often black, sometimes
    garbage). White is what viewers and browsers show behind transparent images, so the data looks as the
    files do to people, and dark objects on a clear background (logos, sketches, cut-out photos) stay
    visible. One ``UserWarning`` per load names the folder/zip, the number of images with transparent pixels
    and the background (also when the images come from the decoded-image cache).

    Unreadable and oversized images: every image file of the split (within ``limit``) must decode, else
    the load is refused with a :class:`DataError` naming the file -- nothing is skipped silently, so a data
    set never shrinks unnoticed. That includes images of more than ``PIL.Image.MAX_IMAGE_PIXELS`` pixels
    (89,478,485 by default, about 9,459 × 9,459; ``None`` there lifts the limit): PIL's guard against
    decompression bombs (a 20000 × 20000 PNG of one colour is a few KB on disk but 400 MB decoded). The
    message gives the file, its size and the limit; downscale or remove the file. Such a file is refused
    from its header, before any pixel is decoded. In a zip, an image file of more than 512 MiB uncompressed
    (a zip bomb) is refused the same way, from the size the zip declares or, if that lies, after reading
    512 MiB of it.

    The decoded-image cache (zips, ``limit=None`` decodes) keeps one entry per zip and split: writing a new
    entry removes the older ones of the same zip and split (the zip was replaced since).
    """
    layout = "<split>/<class>/<image>.png|jpg|jpeg|bmp|tif|tiff with <split> 'train' or 'test'"
    if not path.exists():
        raise MissingDataError(f"image folder not found: {path}; expected a folder or .zip laid out as {layout}")
    is_zip = path.is_file()
    if is_zip and not zipfile.is_zipfile(path):
        raise DataError(f"{path} is a file but not a zip archive; expected a folder or .zip laid out as {layout}")
    where = f"{path} ({split})"

    cache_file = _cache_file(path, split) if (is_zip and cache) else None
    if cache_file is not None and cache_file.is_file():
        cached = _read_cache(cache_file, limit)
        if cached is not None:
            images, labels, classes, transparent = cached
            _warn_transparent(transparent, where)
            return images, labels, classes

    source: Any = _ZipSource(path) if is_zip else _DirSource(path)
    try:
        classes = source.classes()
        if split not in source.splits():
            found = source.splits()
            raise DataError(f"{path} has no '{split}' split (found: {found or 'none'}); expected a layout {layout}")
        per_class = [source.files(split, c) for c in classes]
        order = _interleave(per_class)
        if not order:
            raise DataError(f"{path}/{split} holds no images ({', '.join(IMAGE_EXTENSIONS)}); expected {layout}")
        if limit is not None:
            order = order[:limit]
        labels = np.array([lab for lab, _ in order], dtype=np.int64)
        try:
            images, transparent = _decode_images(source, [m for _, m in order], str(path))
        except _MixedSizes as e:
            if size is None:
                sizes = sorted({a.shape[:2] for a in e.arrays})
                raise DataError(
                    f"images in {path}/{split} have different sizes (H, W) {sizes[:4]}; pass size=... (e.g. "
                    "size=32) to resize them all to one size"
                ) from None
            _warn_transparent(e.transparent, where)
            resized = [
                _resize(torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))[None], size, mode)[0]
                for a in e.arrays
            ]
            return torch.stack(resized).numpy(), labels, classes
    finally:
        source.close()
    _warn_transparent(transparent, where)
    images = images.transpose(0, 3, 1, 2)  # NHWC -> NCHW
    if cache_file is not None and limit is None:
        _write_cache(cache_file, images, labels, classes, transparent)
    return images, labels, classes


# <stem>-<12 hex digits of the resolved path>-<split>-<file size>-<mtime in ns>.npz; the key is all but the
# last two numbers, so entries of one source and split differ only in size and mtime
_CACHE_NAME = re.compile(r"(?P<key>[A-Za-z0-9_.-]+-[0-9a-f]{12}-(?:train|test))-\d+-\d+\.npz")


def _cache_file(path: Path, split: str) -> Path | None:
    try:
        st = path.stat()
    except OSError:
        return None
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", path.stem)
    return _decoded_cache_dir() / f"{stem}-{digest}-{split}-{st.st_size}-{st.st_mtime_ns}.npz"


def _read_cache(path: Path, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray] | None:
    """``(images, labels, classes, transparent)`` from a cache entry, or None for a broken or outdated one.

    The entry is read with ``allow_pickle=False``: arrays of Python objects (which only unpickling could
    read, and unpickling can run any code) are never loaded. cladec never writes such an entry, so one that
    holds them was put there by something else: it is ignored with a one-line ``UserWarning`` naming the file
    and why, and rebuilt (replaced) from the zip, like any other unusable entry.
    """
    objects = _npz_object_arrays(path)  # from the .npy headers: also arrays the reading below would not touch
    if objects:
        warnings.warn(
            f"ignored the decoded-image cache entry {path}: it holds arrays of Python objects "
            f"({', '.join(objects)}), which cladec never loads (reading them means unpickling, which can run "
            "any code; its entries hold only numbers and text); it is rebuilt from the zip",
            UserWarning,
            stacklevel=4,  # _read_cache < _load_image_folder < load_dataset < the caller
        )
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels, classes = z["images"], z["labels"], [str(c) for c in z["classes"]]
            transparent = z["transparent"]  # entries written before transparency was handled lack it: rebuilt
    except Exception:  # noqa: BLE001 - a broken cache is ignored and rebuilt
        return None
    if images.ndim != 4 or images.dtype != np.uint8 or not len(images) == len(labels) == len(transparent):
        return None
    if limit is not None:
        images, labels, transparent = images[:limit], labels[:limit], transparent[:limit]
    return images, labels.astype(np.int64), classes, transparent.astype(bool)


def _npz_object_arrays(path: Path) -> list[str]:
    """Names of the arrays in the ``.npz`` at ``path`` whose dtype holds Python objects, read from the ``.npy``
    headers only (nothing is unpickled); ``[]`` if there are none or the file cannot be read as a zip of them."""
    found: list[str] = []
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                if not name.endswith(".npy"):
                    continue
                with zf.open(name) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        _, _, dtype = np.lib.format.read_array_header_1_0(f)
                    else:
                        _, _, dtype = np.lib.format.read_array_header_2_0(f)
                if dtype.hasobject:
                    found.append(name[: -len(".npy")])
    except Exception:  # noqa: BLE001 - not an npz at all: no object arrays to report
        return found
    return found


def _write_cache(
    path: Path, images: np.ndarray, labels: np.ndarray, classes: list[str], transparent: np.ndarray
) -> None:
    """Write a cache entry atomically, then remove the stale entries of the same source and split."""
    try:
        with atomic_path(path) as tmp:
            with tmp.open("wb") as f:
                np.savez(f, images=images, labels=labels, classes=np.array(classes, dtype=str), transparent=transparent)
    except OSError:
        return  # the cache is only an optimisation
    _prune_cache(path)


def _prune_cache(keep: Path) -> None:
    """Remove the cache entries of ``keep``'s source and split other than ``keep`` (older sizes/mtimes).

    Only files whose whole name is a cache-entry name with the same key are touched; files that vanish
    meanwhile (another process pruning) or cannot be removed are ignored.
    """
    m = _CACHE_NAME.fullmatch(keep.name)
    if m is None:
        return
    try:
        names = [e.name for e in os.scandir(keep.parent)]
    except OSError:
        return
    for name in names:
        other = _CACHE_NAME.fullmatch(name)
        if other is None or other["key"] != m["key"] or name == keep.name:
            continue
        with contextlib.suppress(OSError):  # FileNotFoundError (vanished), IsADirectoryError, permissions
            (keep.parent / name).unlink()


# --------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------

_CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
_CIFAR_MD5 = "c58f30108f718f92721af3b95e74349a"
_CIFAR_BATCH_DIR = "cifar-10-batches-py"


def _load_cifar10(
    root: Path, split: str, limit: int | None, download: bool, *, cache: bool
) -> tuple[np.ndarray, np.ndarray, list[str]]:
    zip_path, dir_path, batch_dir = root / "cifar10-jpeg.zip", root / "cifar10-jpeg", root / _CIFAR_BATCH_DIR
    tried = [zip_path, dir_path, batch_dir]

    def _have_batches() -> bool:
        return (batch_dir / "test_batch").is_file() and (batch_dir / "data_batch_1").is_file()

    if zip_path.is_file():
        return _load_image_folder(zip_path, split, limit, cache=cache)
    if dir_path.is_dir():
        return _load_image_folder(dir_path, split, limit, cache=cache)
    if not _have_batches() and download:
        tar_path = root / "cifar-10-python.tar.gz"
        _download_first([_CIFAR_URL], tar_path, _CIFAR_MD5)
        _safe_extract_tar(tar_path, root, member_prefix=_CIFAR_BATCH_DIR + "/")
    if _have_batches():
        return _read_cifar_batches(batch_dir, split, limit)
    tried_txt = "\n  ".join(str(p) for p in tried)
    raise MissingDataError(f"CIFAR-10 ({split}) not found. Looked for:\n  {tried_txt}\n{_how_to_get('CIFAR-10')}")


def _read_cifar_batches(folder: Path, split: str, limit: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    files = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    images, labels, have = [], [], 0
    for fname in files:
        if limit is not None and have >= limit:
            break
        path = folder / fname
        if not path.is_file():
            raise DataError(f"CIFAR-10 batch file missing: {path}; download the data set again (download=True)")
        batch = _safe_unpickle_file(path)
        data = _get_key(batch, "data", path)
        labs = _get_key(batch, "labels", path)
        data = np.asarray(data)
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' must be a uint8 array (N, 3072), got {data.dtype} {data.shape}")
        labs = np.asarray(labs, dtype=np.int64)
        if len(labs) != len(data):
            raise DataError(f"{path}: {len(data)} images but {len(labs)} labels")
        images.append(data.reshape(-1, 3, 32, 32))
        labels.append(labs)
        have += len(data)
    img = np.concatenate(images)
    lab = np.concatenate(labels)
    if limit is not None:
        img, lab = img[:limit], lab[:limit]
    classes = list(CIFAR10_CLASSES)
    meta = folder / "batches.meta"
    if meta.is_file():
        try:
            names = _get_key(_safe_unpickle_file(meta), "label_names", meta)
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
            if len(names) == 10:
                classes = names
        except DataError:
            pass
    return img, lab, classes


def _get_key(d: Any, key: str, path: Path) -> Any:
    if not isinstance(d, dict):
        raise DataError(f"{path} is not a CIFAR-10 batch: expected a dict, got {type(d).__name__}")
    for k in (key, key.encode()):
        if k in d:
            return d[k]
    raise DataError(f"{path} is not a CIFAR-10 batch: key {key!r} missing")


# -- pickle without code execution ------------------------------------------------------------------


class _NDArrayType:
    """Stands in for ``numpy.ndarray`` inside a CIFAR pickle."""


class _DType:
    """Stands in for ``numpy.dtype``: records the type code and byte order only."""

    _ALLOWED = re.compile(r"^[uifb][1248]$")

    def __init__(self, spec: Any, align: Any = False, copy: Any = True) -> None:
        spec = spec.decode("ascii") if isinstance(spec, bytes) else spec
        if not isinstance(spec, str) or not self._ALLOWED.match(spec):
            raise pickle.UnpicklingError(f"refusing numpy dtype {spec!r}: only plain numeric dtypes are allowed")
        self.spec = spec
        self.byteorder = "|"

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) >= 2:
            bo = state[1].decode() if isinstance(state[1], bytes) else state[1]
            if bo in ("<", ">", "|", "="):
                self.byteorder = bo

    def to_numpy(self) -> np.dtype:
        dt = np.dtype(self.spec)
        return dt.newbyteorder(self.byteorder) if self.byteorder in "<>" else dt  # type: ignore[arg-type]  # "<" or ">"


class _ArrayStub:
    """Receives the state of a pickled ndarray and turns it into a real one with ``np.frombuffer``."""

    def __init__(self) -> None:
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("unexpected ndarray state in pickle")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, _DType):
            raise pickle.UnpicklingError("unexpected ndarray dtype in pickle")
        if isinstance(raw, str):
            raw = raw.encode("latin1")
        if not isinstance(raw, (bytes, bytearray)):
            raise pickle.UnpicklingError("ndarray data in pickle is not raw bytes (object arrays are refused)")
        self.array = np.frombuffer(raw, dtype=dtype.to_numpy()).reshape(
            tuple(int(s) for s in shape), order="F" if fortran else "C"
        )


def _np_reconstruct(cls: Any, shape: Any, typecode: Any) -> _ArrayStub:
    if cls is not _NDArrayType:
        raise pickle.UnpicklingError("refusing to reconstruct anything but a plain numpy array")
    return _ArrayStub()


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, _DType):
        raise pickle.UnpicklingError("unexpected dtype in pickle")
    arr = np.frombuffer(bytes(buf), dtype=dtype.to_numpy())
    return arr.reshape(tuple(int(s) for s in shape), order="F" if order == "F" else "C")


def _codecs_encode(obj: Any, encoding: Any = "utf-8") -> bytes:
    if isinstance(obj, str) and encoding in ("latin1", "latin-1"):
        return obj.encode("latin1")
    raise pickle.UnpicklingError("refusing _codecs.encode with unexpected arguments")


_SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "ndarray"): _NDArrayType,
    ("numpy", "dtype"): _DType,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    ("_codecs", "encode"): _codecs_encode,
}


class _SafeUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: the few numpy names a CIFAR batch needs map to local stand-ins."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to load '{module}.{name}': only plain dicts, lists and numeric numpy arrays are "
                "accepted from CIFAR-10 batch files"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not allowed")


def _resolve_stubs(obj: Any) -> Any:
    if isinstance(obj, _ArrayStub):
        if obj.array is None:
            raise pickle.UnpicklingError("incomplete ndarray in pickle")
        return obj.array
    if isinstance(obj, dict):
        return {k: _resolve_stubs(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_resolve_stubs(v) for v in obj]
    return obj


def _safe_unpickle_file(path: Path) -> Any:
    """Read a CIFAR-style pickle without importing or calling anything outside a fixed safe list."""
    try:
        with path.open("rb") as f:
            obj = _SafeUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{path} is not a CIFAR-10 python batch file that can be read safely: {e}") from None
    except OSError as e:
        raise DataError(f"cannot read {path}: {e}") from None
    return _resolve_stubs(obj)


# --------------------------------------------------------------------------------------------------
# Downloading
# --------------------------------------------------------------------------------------------------


def _md5_of(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path: str | os.PathLike, md5: str) -> bool:
    """Whether a file exists and has the given MD5 checksum (as torchvision checks its downloads).

    Args:
        path: file to check.
        md5: expected hex digest (case-insensitive).

    Returns:
        ``True`` if the file exists and matches, else ``False``.

    Examples:
        >>> _ = Path("hello.txt").write_bytes(b"hello")
        >>> check_md5("hello.txt", "5D41402ABC4B2A76B9719D911017C592"), check_md5("missing.txt", "5d41402a")
        (True, False)
    """
    path = Path(path)
    if not path.is_file():
        return False
    return _md5_of(path) == md5.lower()


def _download(url: str, dest: Path, md5: str, timeout: float = 60.0) -> None:
    """Download ``url`` to ``dest`` atomically, verifying the MD5 on the fly."""
    if check_md5(dest, md5):
        return
    req = urllib.request.Request(url, headers={"User-Agent": "cladec"})
    h = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp, atomic_path(dest) as tmp:
            with tmp.open("wb") as out:
                for block in iter(lambda: resp.read(1 << 20), b""):
                    h.update(block)
                    out.write(block)
            if h.hexdigest() != md5:
                raise DataError(
                    f"download of {url} is corrupt: MD5 {h.hexdigest()} but expected {md5}; try again later"
                )
    except (urllib.error.URLError, OSError, TimeoutError) as e:
        raise DataError(
            f"could not download {url}: {e}. Check the internet connection, or download the file by hand "
            f"to {dest} (or set CLADEC_DATA to a folder holding the data)"
        ) from None


def _download_first(urls: Iterable[str], dest: Path, md5: str) -> None:
    errors = []
    for url in urls:
        try:
            _download(url, dest, md5)
            return
        except DataError as e:
            errors.append(str(e))
    raise DataError("all mirrors failed:\n" + "\n".join(errors))


def _safe_extract_tar(tar_path: Path, dest: Path, member_prefix: str) -> None:
    """Extract regular files under ``member_prefix`` only; refuses absolute paths, '..' and links."""
    try:
        with tarfile.open(tar_path, "r:*") as tf:
            for m in tf.getmembers():
                name = m.name
                parts = PurePosixPath(name).parts
                if not name.startswith(member_prefix) or name.startswith("/") or ".." in parts:
                    continue
                if not m.isfile():
                    continue
                src = tf.extractfile(m)
                if src is None:
                    continue
                with src, atomic_path(dest.joinpath(*parts)) as tmp:
                    tmp.write_bytes(src.read())
    except (tarfile.TarError, OSError) as e:
        raise DataError(f"cannot extract {tar_path}: {e}; delete it and download it again") from None
