"""Training a classifier with cladec's training engine (the fast path of :func:`cladec.models.train_classifier`)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..data.adapt import Prepared, iter_device_batches
from ..normalize import InputNorm
from ..training.engine import Engine, EngineConfig
from ..training.options import make_optimizer
from .predict import accuracy_on, check_labels_fit, forward_checked

__all__ = ["train_fast"]


def train_fast(
    model,
    train,
    test,
    epochs,
    *,
    batch_size,
    lr,
    momentum,
    weight_decay,
    lr_decay,
    norm,
    seed,
    dev,
    verbose,
    channels_last=None,
    compile=False,
    amp=None,
) -> dict[str, list]:
    """Train with :class:`cladec.training.Engine` (the fast path) on in-memory tensors or, data-parallel, on each
    rank's stream of batches; returns :func:`cladec.models.train_classifier`'s history."""
    classes: list[int] = []  # the model's outputs, from a first checked forward (readable shape errors)
    if train.x is not None:  # before anything is trained; all labels are known: all are checked against it
        first = slice(0, min(batch_size, len(train.x)))
        classes.append(_checked_forward(model, norm(train.x[first].to(dev)), train.y))

    def loss_fn(batch):
        out = model(norm(batch["x"]))
        loss = F.cross_entropy(out.float(), batch["y"])
        return loss, {"acc": (out.detach().argmax(1) == batch["y"]).float().mean()}

    history: dict[str, list] = {"epoch": [], "lr": [], "train_loss": [], "train_acc": [], "seconds": []}
    if test is not None:
        history["test_acc"] = []

    def on_epoch_end(rec: dict) -> dict:
        if test is not None:
            rec["test_acc"] = accuracy_on(model, test, 512, norm, dev)
            model.train()
        return rec

    opt = make_optimizer(
        "sgd", list(model.parameters()), lr=lr, weight_decay=weight_decay, momentum=momentum, device=dev, fast=True
    )
    cfg = EngineConfig(
        epochs=epochs,
        batch_size=batch_size,
        fast=True,
        verbose=verbose,
        desc="classifier",
        seed=seed,
        lr_decay=lr_decay,
        channels_last=channels_last,
        compile=compile,
        amp=amp,
    )
    engine = Engine(loss_fn, opt, [model], dev, cfg, ["acc"], on_epoch_end=on_epoch_end)
    try:
        if train.x is not None:
            tensors = {"x": train.x, "y": train.y}
            if dev.type == "cuda" and train.x.device.type == "cpu":
                tensors = {k: v.pin_memory() for k, v in tensors.items()}  # streamed from pinned host memory
            res = engine.run(tensors=tensors)
        else:
            res = engine.run(batches=lambda: _checked_batches(model, train, batch_size, norm, dev, classes))
    finally:
        model.eval()
    for rec in res.history:
        history["epoch"].append(rec["epoch"])
        history["lr"].append(rec["lr"])
        history["train_loss"].append(rec["loss"])
        history["train_acc"].append(rec["acc"])
        history["seconds"].append(rec["seconds"])
        if test is not None:
            history["test_acc"].append(rec["test_acc"])
    return history


def _checked_forward(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> int:
    """Forward ``x`` once in eval mode without gradients, checking shapes and labels (:func:`forward_checked`);
    returns the number of the model's outputs. The model's mode is left as it was."""
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            return int(forward_checked(model, x, y, "the training data").shape[1])
    finally:
        model.train(was)


def _checked_batches(
    model: nn.Module, train: Prepared, batch_size: int, norm: InputNorm, dev: torch.device, classes: list[int]
) -> Iterator[dict[str, torch.Tensor]]:
    """A streamed epoch's batches, every batch's labels checked against the model's outputs (streamed labels are
    known only as they come); the first batch of the fit is forwarded once to learn them (``classes``)."""
    for xb, yb in iter_device_batches(train, batch_size, shuffle=True, gen=None, device=dev, what="the training data"):
        if not classes:
            classes.append(_checked_forward(model, norm(xb), yb))
        check_labels_fit(yb, classes[0], "the training data")
        yield {"x": xb, "y": yb}
