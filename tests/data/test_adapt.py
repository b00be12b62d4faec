"""One data adapter (issue 16): cladec.data.adapt.prepare reads the classifier's data (images="raw") and the
explainers' (images="unit"). Before, the classifier had its own copy (data/batches.py) that accepted other kinds
of data; now both accept the union, each with its own image semantics."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

from cladec import ConfigError, DataError
from cladec.data import adapt
from cladec.data.adapt import iter_device_batches, prepare
from cladec.data.load import load_dataset
from cladec.explainers.cladec import ClaDec
from cladec.explainers.refae import RefAE
from cladec.models.predict import accuracy
from cladec.models.training import train_classifier
from helpers.core import COLLAPSE_OK, QUICK, fmnist, tiny_vgg


class _Dicts(Dataset):
    """A Dataset of ``{"image", "label"}`` dicts (as Hugging Face data sets yield)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"image": self.x[i], "label": int(self.y[i])}


class _Stream(IterableDataset):
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return zip(self.x, self.y, strict=True)


def _net(channels: int = 1) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(channels, 4, 3, stride=2), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 13 * 13, 10))


def test_raw_keeps_uint8_and_any_channel_count_unit_gives_float32_in_unit_range():
    ds = load_dataset("fashion-mnist-mini", limit=64)
    raw = prepare(ds, need_labels=True, images="raw")
    assert raw.x.dtype == torch.uint8 and raw.x is ds.images and raw.image_shape == (1, 28, 28)  # no copy
    unit = prepare(ds, need_labels=True, max_bytes=10**9)
    assert unit.x.dtype == torch.float32 and float(unit.x.max()) <= 1.0
    two = torch.rand(4, 2, 8, 8)
    assert prepare((two, torch.arange(4)), need_labels=True, images="raw").image_shape == (2, 8, 8)
    with pytest.raises(DataError, match="must have 1 or 3 channels"):
        prepare((two, torch.arange(4)), need_labels=True, max_bytes=10**9)
    with pytest.raises(ValueError, match="images must be 'unit' or 'raw'"):
        prepare((two, torch.arange(4)), need_labels=True, images="float")  # type: ignore[arg-type]  # on purpose


def test_raw_warns_at_the_callers_line_for_images_outside_unit_range_unit_refuses_them():
    x, y = fmnist("train", 64)
    with pytest.warns(UserWarning, match=r"the images of the training data lie in \[-2, 2\]") as rec:
        train_classifier(_net(), (x * 4 - 2, y), epochs=1, verbose=False)
    assert len(rec) == 1 and rec[0].filename == __file__
    with pytest.warns(UserWarning, match=r"the images of the training data lie in") as rec:
        train_classifier(_net(), DataLoader(TensorDataset(x * 4 - 2, y), batch_size=32), epochs=1, verbose=False)
    assert rec[0].filename == __file__  # a loader's first batch: the same line
    with pytest.raises(DataError, match=r"must lie in \[0, 1\]"):
        prepare((x * 4 - 2, y), need_labels=False, max_bytes=10**9)


def test_the_classifier_takes_the_explainers_kinds_of_data_too():
    """A list of batches and an IterableDataset were refused by train_classifier and accuracy ("must be an
    ImageDataset, ..."); they are streamed now, and give what the same batches from a DataLoader give."""
    x, y = fmnist("train", 96)
    loader = DataLoader(TensorDataset(x, y), batch_size=32)
    states = []
    for data in (loader, list(loader), _Stream(x, y)):
        net = _net()
        train_classifier(net, data, epochs=1, batch_size=32, seed=0, verbose=False)
        states.append(net.state_dict())
        assert accuracy(net, data) == accuracy(net, (x, y))
    for s in states[1:]:
        assert all(torch.equal(s[k], states[0][k]) for k in s)
    with pytest.raises(DataError, match="one-shot iterator"):
        train_classifier(_net(), ((x[i : i + 32], y[i : i + 32]) for i in range(0, 96, 32)), epochs=1)
    with pytest.raises(DataError, match="must be an ImageDataset, a pair of tensors"):
        train_classifier(_net(), [1, 2, 3], epochs=1, verbose=False)
    with pytest.raises(DataError, match="the training data must have class labels"):
        train_classifier(_net(), x, epochs=1, verbose=False)


@COLLAPSE_OK  # one short fit per kind: checks which data is accepted
def test_the_explainers_take_the_classifiers_kinds_of_data_too():
    """A Dataset of {"image", "label"} dicts (and a loader of dict batches) was a DataError for ClaDec and RefAE
    while train_classifier took it."""
    x, y = fmnist("train", 64)
    dicts = _Dicts(x, y)
    p = prepare(dicts, need_labels=True, max_bytes=10**9)
    assert torch.equal(p.x, x) and torch.equal(p.y, y)
    streamed = prepare(dicts, need_labels=True, max_bytes=0, batch_size=16)
    assert not streamed.in_memory and streamed.image_shape == (1, 28, 28)
    xb, yb = next(adapt.iterate_batches(streamed.loader, True))
    assert xb.shape == (16, 1, 28, 28) and yb.dtype == torch.int64
    m = tiny_vgg()
    assert ClaDec(m, "conv2", alpha=0.1).fit(dicts, epochs=1, verbose=False, **QUICK).fitted
    assert RefAE(m, "conv2").fit(DataLoader(dicts, batch_size=32), epochs=1, verbose=False, **QUICK).fitted
    with pytest.raises(ConfigError, match="alpha > 0 needs class labels"):
        ClaDec(m, "conv2", alpha=0.1).fit(x, epochs=1, verbose=False)


def test_a_raw_loader_is_not_read_ahead():
    """The classifier's DataLoader is not iterated by prepare: that would draw from its sampler's generator and
    change the order of the first epoch."""
    x, y = fmnist("train", 32)
    gen = torch.Generator().manual_seed(3)
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True, generator=gen)
    state = gen.get_state()
    p = prepare(loader, need_labels=True, images="raw")
    assert p.loader is loader and p.image_shape is None and torch.equal(gen.get_state(), state)


def test_the_materialise_limit_is_read_at_each_call(monkeypatch):
    x, y = fmnist("train", 32)
    ds = TensorDataset(x, y)
    assert prepare(ds, need_labels=True, images="raw").in_memory
    monkeypatch.setattr(adapt, "MAX_MATERIALISE_BYTES", 1000)
    p = prepare(ds, need_labels=True, batch_size=8, images="raw")
    assert not p.in_memory and p.loader.batch_size == 8
    assert prepare(ds, need_labels=True, max_bytes=10**9, images="raw").in_memory  # the caller's own limit


def test_device_batches_skip_a_training_batch_of_one_and_keep_the_dtype():
    ds = load_dataset("fashion-mnist-mini", limit=33)
    d = prepare(ds, need_labels=True, images="raw")
    kw = dict(gen=torch.Generator().manual_seed(0), device=torch.device("cpu"), what="the data")
    train = list(iter_device_batches(d, 16, shuffle=True, **kw))
    assert [len(b[0]) for b in train] == [16, 16] and train[0][0].dtype == torch.uint8
    assert [len(b[0]) for b in iter_device_batches(d, 16, shuffle=False, **kw)] == [16, 16, 1]
    loader = prepare(DataLoader(copy.copy(ds), batch_size=16), need_labels=True, images="raw")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # [0, 1] floats: no range warning
        assert [len(b[0]) for b in iter_device_batches(loader, 16, shuffle=True, **kw)] == [16, 16]
