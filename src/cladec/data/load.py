"""Loading a data set by name: :func:`load_dataset` (see :mod:`cladec.data` for the sources, the storage, the
order of the images and where they are looked for), and :func:`check_trainable`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._errors import ConfigError, DataError
from ._common import check_size, default_cache_dir, resize_images
from .cifar import load_cifar10
from .dataset import ImageDataset
from .folder import list_image_folder, load_image_folder
from .idx import IDX_SPECS, load_embedded, load_idx_dataset
from .lazy import LazyImageDataset
from .names import ALIASES, SPLITS, valid_names_text

__all__ = ["load_dataset", "check_trainable", "default_data_root"]


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
    return default_cache_dir()


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
    lazy: bool = False,
    channels: int | None = None,
) -> ImageDataset | LazyImageDataset:
    """Load a data set split into memory, or read it lazily (``lazy=True``).

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
        lazy: keep only the file list (an image folder or zip) or the native ``uint8`` arrays (the built-in
            sets) and decode and resize one image per item (:class:`~cladec.data.LazyImageDataset`), for data
            that does not fit in memory; training streams it (``workers=`` processes decode the images).
        channels: with ``lazy``: 1 (grey) or 3 (RGB); default: from the first images' headers
            (:mod:`cladec.data.lazy`).

    Returns:
        An :class:`ImageDataset`, or with ``lazy`` a :class:`~cladec.data.LazyImageDataset`.

    Raises:
        ConfigError: unknown name, bad split, size or limit.
        DataError: files missing (the message lists every path tried) or unreadable, or no images.

    Examples:
        >>> ds = load_dataset("fashion-mnist-mini", split="test", size=32, limit=20)
        >>> ds.image_shape, len(ds)
        ((1, 32, 32), 20)
        >>> lazy = load_dataset("fashion-mnist-mini", split="test", size=32, limit=20, lazy=True)
        >>> lazy.image_shape, len(lazy), lazy[0][0].dtype
        ((1, 32, 32), 20, torch.uint8)
    """
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"data set name must be a non-empty string; valid names: {valid_names_text()}")
    if not isinstance(split, str) or split.lower() not in SPLITS:
        raise ConfigError(f"split must be one of {list(SPLITS)}, got {split!r}")
    split = split.lower()
    out_size = check_size(size)
    if limit is not None:
        if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
            raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
        if limit <= 0:
            raise ConfigError(f"limit must be a positive integer or None, got {limit}")
        limit = int(limit)
    if resize_mode not in ("bilinear", "nearest"):
        raise ConfigError(f"resize_mode must be 'bilinear' or 'nearest', got {resize_mode!r}")
    if channels is not None and not lazy:
        raise ConfigError("channels= applies to lazily read data sets (lazy=True); drop it or pass lazy=True")

    raw = name.strip()
    if raw.lower().startswith("imagefolder:"):
        path = raw[len("imagefolder:") :]
        if not path:
            raise ConfigError("imagefolder needs a path: use 'imagefolder:PATH' with PATH a folder or .zip")
        ds_name = f"imagefolder:{path}"
        if lazy:  # only the file list: nothing is decoded
            members, labels, classes, is_zip = list_image_folder(Path(path).expanduser(), split, limit)
            source: Any = (Path(path).expanduser(), members, is_zip)
            return _lazy(source, labels, classes, ds_name, split, out_size, resize_mode, channels, limit)
        images, labels, classes = load_image_folder(
            Path(path).expanduser(), split, limit, cache=cache, size=out_size, mode=resize_mode
        )
    else:
        key = ALIASES.get(raw.lower())
        if key is None:
            raise ConfigError(f"unknown data set {name!r}; valid names: {valid_names_text()}")
        ds_name = key
        if key == "fashion-mnist-mini":
            images, labels, classes = load_embedded(split, limit)
        else:
            data_root = Path(root).expanduser() if root is not None else default_data_root()
            if key in ("mnist", "fashion-mnist"):
                images, labels, classes = load_idx_dataset(IDX_SPECS[key], data_root, split, limit, download)
            else:
                images, labels, classes = load_cifar10(data_root, split, limit, download, cache=cache)

    if images.shape[0] == 0:
        raise DataError(f"data set {ds_name!r} ({split}) has no images")
    if lazy:  # the native uint8 arrays: resized per item
        return _lazy(images, labels, classes, ds_name, split, out_size, resize_mode, channels, limit)
    img_t = torch.from_numpy(np.ascontiguousarray(images))
    if out_size is not None and tuple(img_t.shape[-2:]) != out_size:
        img_t = resize_images(img_t, out_size, resize_mode)
    lab_t = torch.from_numpy(np.ascontiguousarray(labels).astype(np.int64))
    ds = ImageDataset(img_t, lab_t, classes, name=ds_name, split=split)
    ds.resized_to = out_size  # recorded in classifier checkpoints, so that `fit` loads the same size
    ds.limit = limit if limit is not None and len(ds) == limit else None
    return ds


def _lazy(source, labels, classes, name, split, size, mode, channels, limit) -> LazyImageDataset:
    ds = LazyImageDataset(
        source, labels, classes, name=name, split=split, size=size, resize_mode=mode, channels=channels
    )
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
    named = (ImageDataset, LazyImageDataset)
    if isinstance(train, named) and isinstance(test, named) and list(te_classes) != list(tr_classes):
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
    if isinstance(data, (ImageDataset, LazyImageDataset)):
        where = f"{data.name} ({data.split})"
        return list(data.classes), data.class_counts(), where, f"the {role} data {where}", data.limit
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[1], torch.Tensor):
        labels = data[1].reshape(-1)
        if labels.numel() == 0 or labels.is_floating_point() or labels.is_complex() or int(labels.min()) < 0:
            return None  # the training code refuses such labels with its own message
        counts = torch.bincount(labels.to(torch.int64)).tolist()
        return [str(k) for k in range(len(counts))], counts, f"the {role} data", f"the {role} data", None
    return None
