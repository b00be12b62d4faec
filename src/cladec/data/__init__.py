"""Image-classification data sets as in-memory tensors, or read lazily.

:func:`load_dataset` reads MNIST, Fashion-MNIST, CIFAR-10, any image folder (or zip of one) and the small
Fashion-MNIST subset embedded in the package, and returns an :class:`ImageDataset`; with ``lazy=True`` a
:class:`LazyImageDataset` that decodes and resizes one image per item (data that does not fit in memory; see
:mod:`cladec.data.lazy`).

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

from .dataset import ImageDataset
from .download import check_md5
from .folder import IMAGE_EXTENSIONS
from .idx import read_idx
from .lazy import LazyImageDataset
from .load import check_trainable, default_data_root, load_dataset
from .names import CIFAR10_CLASSES, FASHION_MNIST_CLASSES, MNIST_CLASSES, available_datasets
from .recorded import data_root_for, load_recorded_dataset, recorded_dataset_name

__all__ = [
    "ImageDataset",
    "LazyImageDataset",
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
    "recorded_dataset_name",
    "data_root_for",
    "load_recorded_dataset",
]
