"""The in-memory image data set every reader returns."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset

from .._errors import DataError
from .._tensors import image_tensor, label_tensor

__all__ = ["ImageDataset"]


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
            >>> from cladec.data import load_dataset
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
            >>> from cladec.data import load_dataset
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
            >>> from cladec.data import load_dataset
            >>> load_dataset("fashion-mnist-mini", split="test").class_counts()
            [100, 100, 100, 100, 100, 100, 100, 100, 100, 100]
        """
        return torch.bincount(self.labels, minlength=self.num_classes).tolist()

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly summary.

        Returns:
            ``dict(name, split, size, image_shape, num_classes, classes)``; ``size`` is the number of images.

        Examples:
            >>> from cladec.data import load_dataset
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
