"""Epoch checkpoints in one process (cladec.training.resume): a fit interrupted after an epoch and resumed equals
the uninterrupted fit, the recipe's learning-rate schedule included; a checkpoint of other settings is refused.
(Resuming a fit of two ranks: tests/training/test_distributed.py.)"""

from __future__ import annotations

import pytest
import torch

import cladec
from cladec import ConfigError
from cladec.data.load import load_dataset
from cladec.training import resume
from cladec.training.schedule import Recipe
from helpers.core import DATA_ROOT, QUICK, fmnist, tiny_vgg


class Interrupted(Exception):
    """Stands for the signal that stops a fit after an epoch's checkpoint was written."""


@pytest.fixture(scope="module")
def setting():
    return tiny_vgg(), fmnist("train", 512)


def _fit(setting, recipe, checkpoint=None, epochs=3, **kw):
    """ClaDec + RefAE at conv2 of a small trained classifier, 512 images (helpers.core.QUICK: the paper's rate,
    3e-4, collapses on so few; the fast recipe's own peak is 3e-3)."""
    clf, data = setting
    kw.setdefault("lr", QUICK["lr"] if recipe == "paper" else None)
    kw.setdefault("batch_size", QUICK["batch_size"])
    e = cladec.ClaDec(clf, "conv2", alpha=0.001)
    r = cladec.RefAE.like(e, init_seed=0)
    cladec.fit_together(
        [e, r],
        data,
        epochs=epochs,
        seed=0,
        verbose=False,
        recipe=recipe,
        checkpoint=checkpoint,
        **kw,
    )
    return e, r


def _interrupt_after(monkeypatch, epoch: int) -> None:
    save = resume.save_checkpoint

    def save_then_stop(path, key, done, *args, **kw):
        save(path, key, done, *args, **kw)
        if done == epoch:
            raise Interrupted

    monkeypatch.setattr(resume, "save_checkpoint", save_then_stop)


#: a schedule whose rate changes in every epoch: a resumed fit that restarted its step count (or lost track of
#: the optimiser's param groups, which loading a state replaces) would train epochs 2 and 3 at other rates
COSINE = Recipe("cosine", lr=3e-3, warmup=0.05, decay="cosine")


@pytest.mark.parametrize("recipe", ["paper", "fast", COSINE], ids=["paper", "fast", "cosine"])
def test_an_interrupted_fit_resumes_to_the_uninterrupted_result(
    setting, recipe, tmp_path, monkeypatch, one_torch_thread
):
    e1, r1 = _fit(setting, recipe)
    ckpt = tmp_path / "fit.pt"
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(Interrupted):
            _fit(setting, recipe, ckpt)
    assert ckpt.is_file()
    e2, r2 = _fit(setting, recipe, ckpt)
    assert e2.fit_config["resumed_from_epoch"] == 1 and [h["epoch"] for h in e2.history] == [1, 2, 3]
    assert not e2.collapsed and not r2.collapsed
    for a, b in ((e1, e2), (r1, r2)):
        # the learning rate of every epoch's last step
        assert [h["lr"] for h in a.history] == pytest.approx([h["lr"] for h in b.history], rel=1e-6)
        assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], rel=1e-6)
        for (k, va), vb in zip(a.decoder.state_dict().items(), b.decoder.state_dict().values(), strict=True):
            assert torch.allclose(va.float(), vb.float(), rtol=1e-5, atol=1e-6), k
    if recipe is COSINE:  # decaying: each epoch ended at a lower rate
        assert e2.history[0]["lr"] > e2.history[1]["lr"] > e2.history[2]["lr"]


def test_an_interrupted_fit_on_lazily_read_data_resumes_in_the_same_batch_order(
    tmp_path, monkeypatch, one_torch_thread
):
    """Streamed data: each epoch's order comes from the seed and the epoch's number, so epoch 2 of a resumed fit
    sees the batches epoch 2 of the uninterrupted fit saw (ClaDec and RefAE are fitted one after the other)."""
    lazy = load_dataset("fashion-mnist", root=DATA_ROOT, split="train", limit=512, lazy=True)
    setting = (tiny_vgg(), lazy)
    e1, r1 = _fit(setting, "fast", epochs=2)
    ckpt = tmp_path / "fit.pt"
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(Interrupted):
            _fit(setting, "fast", ckpt, epochs=2)  # stopped in ClaDec's fit, after its first epoch
    e2, r2 = _fit(setting, "fast", ckpt, epochs=2)
    assert e2.fit_config["resumed_from_epoch"] == 1 and "resumed_from_epoch" not in r2.fit_config
    assert not e2.collapsed and not r2.collapsed
    for a, b in ((e1, e2), (r1, r2)):
        assert [h["loss"] for h in a.history] == pytest.approx([h["loss"] for h in b.history], rel=1e-6)
        for (k, va), vb in zip(a.decoder.state_dict().items(), b.decoder.state_dict().values(), strict=True):
            assert torch.allclose(va.float(), vb.float(), rtol=1e-5, atol=1e-6), k


def test_a_checkpoint_of_another_recipe_or_batch_size_is_refused(setting, tmp_path, monkeypatch, one_torch_thread):
    ckpt = tmp_path / "fit.pt"
    with monkeypatch.context() as m:
        _interrupt_after(m, 1)
        with pytest.raises(Interrupted):
            _fit(setting, "fast", ckpt, epochs=2)
    with pytest.raises(ConfigError, match="recipe 'fast' there, 'paper' now"):
        _fit(setting, "paper", ckpt, epochs=2)
    with pytest.raises(ConfigError, match="batch_size 32 there, 16 now"):
        _fit(setting, "fast", ckpt, epochs=2, batch_size=16)
