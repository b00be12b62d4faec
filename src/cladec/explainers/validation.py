"""A held-out validation split for a fit, its MSE after every epoch, and the rules that stop a fit early.

``fit(..., validation=0.1)`` holds out a seeded tenth of the training images (or ``validation=`` held-out data of
its own); every epoch's record then has ``val_mse`` (the mean squared pixel error of the reconstructions of the
held-out images, as the test MSE of ``run.json``), shown in the progress bar. ``until_mse=`` stops after the first
epoch whose ``val_mse`` is at most that figure; ``patience=`` stops once ``val_mse`` has not improved for that many
epochs. ``epochs`` is then the most a fit may take. Explainers fitted together stop together, when the rule holds
for every one of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .._errors import ConfigError
from ..data.adapt import Prepared, iterate_batches, prepare
from ..training import distributed

if TYPE_CHECKING:
    from .base import DecoderExplainer

__all__ = ["check_stopping", "epoch_hook", "n_images", "prepare_validation", "split_validation", "stop_rule", "val_mse"]


def check_stopping(validation: Any, until_mse: float | None, patience: int | None) -> None:
    """Refuse a stopping rule without validation data, and bad figures.

    Examples:
        >>> check_stopping(0.1, until_mse=0.03, patience=None)
        >>> check_stopping(None, until_mse=0.03, patience=None)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        cladec._errors.ConfigError: until_mse stops on the MSE of held-out images: also give validation= ...
    """
    for name, v in (("until_mse", until_mse), ("patience", patience)):
        if v is not None and validation is None:
            raise ConfigError(
                f"{name} stops on the MSE of held-out images: also give validation= (a fraction of the training "
                "images such as 0.1, or held-out data)"
            )
    if until_mse is not None and (isinstance(until_mse, bool) or not (0 < float(until_mse) < math.inf)):
        raise ConfigError(f"until_mse must be a positive MSE such as 0.03, got {until_mse!r}")
    if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int) or patience < 1):
        raise ConfigError(f"patience must be a whole number of epochs ≥ 1, got {patience!r}")


def split_validation(data: Any, validation: Any, seed: int | None) -> tuple[Any, Any]:
    """``(training data, validation data)``: ``validation`` as given, or a fraction of ``data`` held out.

    A fraction (``0 < f < 1``) holds out ``round(f · N)`` images (at least one) drawn by ``seed`` (0 when None) from
    a pair of tensors ``(images, labels)``, an image tensor, or a Dataset with a length (a cladec data set keeps its
    kind: ``subset``); a DataLoader cannot be split (give held-out data instead).

    Examples:
        >>> x, y = torch.rand(10, 1, 4, 4), torch.arange(10)
        >>> (xt, yt), (xv, yv) = split_validation((x, y), 0.2, seed=0)
        >>> len(xt), len(xv), sorted(torch.cat([yt, yv]).tolist()) == list(range(10))
        (8, 2, True)
    """
    if validation is None:
        return data, None
    if isinstance(validation, bool) or not isinstance(validation, (int, float)):
        return data, validation  # held-out data of its own (checked by prepare)
    if not 0 < validation < 1:
        raise ConfigError(
            f"validation must be a fraction of the training images between 0 and 1 (e.g. 0.1) or held-out data, "
            f"got {validation!r}"
        )
    if isinstance(data, DataLoader) or not hasattr(data, "__len__"):
        raise ConfigError(
            f"a fraction of a {type(data).__name__} cannot be held out (it has no length to split); give held-out "
            "data as validation= instead"
        )
    n = len(data[0]) if isinstance(data, (tuple, list)) else len(data)
    k = max(1, round(validation * n))
    if k >= n:
        raise ConfigError(f"validation={validation:g} of {n} training images leaves none to train on")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(0 if seed is None else seed))
    train, val = order[k:].sort().values, order[:k].sort().values
    if isinstance(data, (tuple, list)):
        return tuple(t[train] for t in data), tuple(t[val] for t in data)
    if isinstance(data, torch.Tensor):
        return data[train], data[val]
    if callable(getattr(data, "subset", None)):
        return data.subset(train), data.subset(val)
    if isinstance(data, Dataset):
        return Subset(data, train.tolist()), Subset(data, val.tolist())
    raise ConfigError(f"a fraction of {type(data).__name__} cannot be held out; give held-out data as validation=")


def val_mse(e: DecoderExplainer, prepared: Prepared, batch_size: int) -> float:
    """The mean squared error of ``e``'s reconstructions of the held-out images (the trained modules in eval mode).

    Data-parallel, every rank reconstructs all of them and the ranks' figures are averaged (RefAE's BatchNorm
    statistics differ between ranks until the fit ends), so every rank takes the same decision to stop.
    """
    total, count = 0.0, 0
    if prepared.x is not None:
        chunks: Any = [prepared.x]
    else:
        chunks = (xb for xb, _ in iterate_batches(prepared.loader, False))  # type: ignore[arg-type]  # streamed
    for xb in chunks:
        rec = e._decode_images(xb, batch_size)  # not reconstruct(): no "not fitted" warning while fitting
        total += float((rec.float() - xb.to(rec.device).float()).pow(2).sum())
        count += xb.numel()
    size = distributed.world()[1]
    mse = total / max(count, 1)
    if size > 1:
        mse = float(distributed.all_reduce_sum(torch.tensor([mse], dtype=torch.float64))[0]) / size
    return mse


def prepare_validation(val: Any, *, batch_size: int, max_bytes: int, workers: int, device: Any) -> Prepared:
    """Held-out data, in memory when it fits ``max_bytes`` (else streamed in its own order, on every rank)."""
    return prepare(
        val,
        need_labels=False,
        max_bytes=max_bytes,
        batch_size=batch_size,
        what="the validation data",
        workers=workers,
        device=device,
        shuffle=False,
    )


def n_images(prepared: Prepared) -> int | None:
    """How many images a prepared data set holds (None for a stream of unknown length)."""
    if prepared.x is not None:
        return int(prepared.x.shape[0])
    loader = getattr(prepared.loader, "loader", prepared.loader)  # a lazy data set's StreamedBatches: its DataLoader
    ds = getattr(loader, "dataset", None)
    return len(ds) if ds is not None and hasattr(ds, "__len__") else None


def epoch_hook(e: DecoderExplainer, prepared: Prepared, batch_size: int) -> Callable[[dict], dict]:
    """An engine ``on_epoch_end`` that adds ``val_mse`` to the epoch's record."""

    def hook(rec: dict) -> dict:
        return dict(rec, val_mse=val_mse(e, prepared, batch_size))

    return hook


def stop_rule(until_mse: float | None, patience: int | None) -> Callable[[Sequence[list[dict]]], str | None] | None:
    """The engine's ``stop``: given every task's history so far, why to stop now (or None to go on).

    Examples:
        >>> rule = stop_rule(until_mse=0.03, patience=2)
        >>> rule([[{"epoch": 1, "val_mse": 0.05}, {"epoch": 2, "val_mse": 0.029}]])
        'val_mse 0.029 ≤ until_mse 0.03 at epoch 2'
        >>> rule([[{"epoch": e, "val_mse": v} for e, v in enumerate([0.05, 0.04, 0.041, 0.042], 1)]])
        'val_mse not better than 0.04 (epoch 2) for 2 epochs'
    """
    if until_mse is None and patience is None:
        return None

    def why(history: list[dict]) -> str | None:
        vals = [h["val_mse"] for h in history]
        if until_mse is not None and vals and vals[-1] <= until_mse:
            return f"val_mse {vals[-1]:.4g} ≤ until_mse {until_mse:g} at epoch {history[-1]['epoch']}"
        if patience is not None and vals:
            best = min(range(len(vals)), key=vals.__getitem__)
            if len(vals) - 1 - best >= patience:
                return (
                    f"val_mse not better than {vals[best]:.4g} (epoch {history[best]['epoch']}) for {patience} epochs"
                )
        return None

    def rule(histories: Sequence[list[dict]]) -> str | None:
        reasons = [why(h) for h in histories]
        return "; ".join(r for r in reasons if r) if all(reasons) else None

    return rule
