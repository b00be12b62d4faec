"""ROAR (Hooker et al. 2019): retrain a classifier on images with the most relevant pixels removed."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError
from .._tensors import device as checked_device
from ..models.predict import accuracy
from ..models.training import train_classifier
from .scores import check_maps, pixel_ranks, top_mask

__all__ = ["DEFAULT_ROAR_K", "roar_images", "roar_accuracy", "check_roar_k"]

DEFAULT_ROAR_K = (10, 30, 50, 70, 90)


def check_roar_k(ks: Sequence[float] | str) -> list[float]:
    """Validate ROAR percentages: numbers in [0, 100).

    Args:
        ks: Percentages of pixels to remove, as a list or comma-separated string.

    Returns:
        The sorted, de-duplicated values as ints where integral (``[10, 30, 50]``).

    Raises:
        ConfigError: For a non-number or a value outside [0, 100).

    Examples:
        >>> check_roar_k("50,10,30")
        [10, 30, 50]
    """
    items: Sequence[float | str] = ks
    if isinstance(ks, str):
        items = [k for k in ks.split(",") if k.strip()]
    out = []
    for k in items:
        try:
            v = float(k)
        except (TypeError, ValueError):
            raise ConfigError(f"ROAR k must be a percentage in [0, 100), got {k!r}") from None
        if not (0 <= v < 100) or math.isnan(v):
            raise ConfigError(f"ROAR k must be a percentage in [0, 100) (k=100 would remove every pixel), got {k!r}")
        out.append(int(v) if v == int(v) else v)
    if not out:
        raise ConfigError("give at least one ROAR k (percentages in [0, 100), e.g. 10,30,50,70,90)")
    return sorted(set(out))


def roar_images(
    x: torch.Tensor, maps: torch.Tensor, k: float, fill: torch.Tensor | Sequence[float], seed: int = 0
) -> torch.Tensor:
    """Replace the top-``k`` % pixels of each image (by its map) with a per-channel fill value.

    Args:
        x: Images ``(N, C, H, W)``.
        maps: ``(N, H, W)`` relevance maps.
        k: Percentage in [0, 100).
        fill: Per-channel values ``(C,)`` (ROAR: the training set's per-channel mean).
        seed: Tie-breaking seed.

    Returns:
        A new tensor like ``x``; ``k = 0`` returns an unchanged copy.

    Examples:
        >>> x = torch.ones(1, 1, 2, 2); m = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
        >>> roar_images(x, m, 50, [0.0]).tolist()
        [[[[0.0, 0.0], [1.0, 1.0]]]]
    """
    (k,) = check_roar_k([k])
    maps = check_maps(x, maps)
    if k == 0:
        return x.clone()
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if f.shape[1] not in (1, x.shape[1]):
        raise ConfigError(f"fill needs one value per channel ({x.shape[1]}), got {f.shape[1]}")
    out = []
    for i in range(0, x.shape[0], 4096):
        xb = x[i : i + 4096]
        m = top_mask(pixel_ranks(maps[i : i + 4096], seed + i).to(x.device), k / 100.0).unsqueeze(1)
        out.append(torch.where(m, f.expand_as(xb), xb))
    return torch.cat(out)


def roar_accuracy(
    build_model: Callable[[], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    k: float,
    train_maps: torch.Tensor | None = None,
    test_maps: torch.Tensor | None = None,
    epochs: int = 2,
    seed: int = 0,
    input_norm: Any = None,
    fill: torch.Tensor | Sequence[float] | None = None,
    device: str | torch.device | None = None,
    train_kwargs: dict[str, Any] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """ROAR for one (method, k, seed): degrade train and test images, retrain from scratch, test.

    Args:
        build_model: Returns a freshly initialised classifier (e.g.
            ``lambda: create_model("vgg-paper", 1, 10, width=0.25)``); it is called after seeding, so
            the initialisation is reproducible.
        train: ``(images, labels)`` for retraining.
        test: ``(images, labels)`` for the accuracy.
        k: Percentage of pixels removed per image, in [0, 100); with 0 the maps are not needed.
        train_maps: ``(N, H, W)`` maps for the train images.
        test_maps: ``(N, H, W)`` maps for the test images.
        epochs: Training epochs.
        seed: Seed for initialisation, shuffling and tie-breaking.
        input_norm: The classifier's ``(mean, std)``.
        fill: Per-channel fill value (default: the training images' per-channel mean).
        device: Training device (default CUDA if available).
        train_kwargs: Extra arguments for :func:`cladec.models.train_classifier` (``lr``, ``batch_size``...).
        verbose: Show the training progress bar.

    Returns:
        ``{"k": k, "seed": seed, "accuracy": test accuracy, "train_acc": last-epoch training accuracy}``.

    Examples:
        >>> from cladec.models import create_model
        >>> new_model = lambda: create_model("vgg-paper", 1, 10, width=0.25)
        >>> r = roar_accuracy(new_model, train.subset(range(500)).tensors(), test.tensors(), k=0, epochs=1)
        >>> sorted(r), r["k"], 0 <= r["accuracy"] <= 1
        (['accuracy', 'k', 'seed', 'train_acc'], 0, True)
    """

    (k,) = check_roar_k([k])
    xtr, ytr = train
    xte, yte = test
    if fill is None:
        fill = xtr.float().mean((0, 2, 3))
    if k > 0:
        if train_maps is None or test_maps is None:
            raise ConfigError("ROAR with k > 0 needs train_maps and test_maps")
        xtr = roar_images(xtr, train_maps, k, fill, seed)
        xte = roar_images(xte, test_maps, k, fill, seed + 1)
    dev = checked_device(device, "device")
    torch.manual_seed(seed)
    model = build_model().to(dev)
    hist = train_classifier(
        model, (xtr, ytr), epochs, input_norm=input_norm, seed=seed, device=dev, verbose=verbose, **(train_kwargs or {})
    )
    acc = accuracy(model, (xte, yte), input_norm=input_norm)
    return {"k": k, "seed": seed, "accuracy": float(acc), "train_acc": float(hist["train_acc"][-1])}
