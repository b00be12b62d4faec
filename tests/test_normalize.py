"""One input normalisation (issue 16): cladec.normalize.InputNorm is what the classifier's trainer and predict,
the layer capture (and so the explainers), the explanation and the saliency wrapper apply. Before, three copies
differed: in what they accepted, in the error a channel mismatch gave, in how uint8 images were scaled and in
the dtype they returned. Each test below is one of those differences, now the same everywhere."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cladec import ConfigError, DataError, LayerCapture
from cladec.explainers.cladec import ClaDec
from cladec.explainers.refae import RefAE
from cladec.models.predict import accuracy, predict
from cladec.models.training import train_classifier
from cladec.normalize import InputNorm, Normalized, check_input_norm, norm_tensors
from cladec.saliency import Normalized as SaliencyNormalized
from helpers.core import tiny_vgg

U8 = torch.tensor([[[[0, 51, 255]]]], dtype=torch.uint8)  # (1, 1, 1, 3)

BAD_NORMS = [
    pytest.param(([0.5], [float("nan")]), id="nan-std"),
    pytest.param(([float("inf")], [0.5]), id="inf-mean"),
    pytest.param((True, 1.0), id="bool"),
    pytest.param(([[0.5]], [[0.5]]), id="nested"),
    pytest.param(([0.5, 0.5], [0.5]), id="unequal-lengths"),
    pytest.param(("0.5", "0.5"), id="strings"),
    pytest.param(([0.5], [0.0]), id="zero-std"),
    pytest.param(([0.5], [-1.0]), id="negative-std"),
    pytest.param((0.5,), id="one-value"),
]


class _Identity(nn.Module):
    """A "classifier" that returns its input: what reaches the model is what the test sees."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(x)


def test_uint8_images_are_scaled_to_unit_range_first_everywhere():
    """255 with mean 0 / std 1 is 1.0: before, Normalized gave 255 - 0 (no /255) and LayerCapture.normalize inf
    (the statistics cast to uint8: std 0)."""
    want = torch.tensor([[[[0.0, 0.2, 1.0]]]])
    for norm in (([0.0], [1.0]), None):
        torch.testing.assert_close(InputNorm(norm)(U8), want)
        torch.testing.assert_close(Normalized(_Identity(), norm)(U8), want)
        m = _Identity()
        torch.testing.assert_close(LayerCapture(m, "out", input_norm=norm).normalize(U8), want)
    torch.testing.assert_close(InputNorm(([0.5], [0.5]))(U8), want * 2 - 1)
    assert InputNorm(([0.5], [0.5]), dtype=torch.float32)(U8).dtype == torch.float32


def test_uint8_and_float_images_give_the_classifier_the_same_predictions():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Flatten(), nn.Linear(4 * 26 * 26, 10)).eval()
    u8 = torch.randint(0, 256, (8, 1, 28, 28), dtype=torch.uint8)
    f = u8.float() / 255
    norm = ([0.3], [0.4])
    assert torch.equal(predict(net, u8, input_norm=norm), predict(net, f, input_norm=norm))
    y = predict(net, f, input_norm=norm)
    assert accuracy(net, (u8, y), input_norm=norm) == accuracy(net, (f, y), input_norm=norm) == 1.0


def test_channel_mismatch_is_a_config_error_when_known_and_a_data_error_at_the_call():
    """Before: ConfigError (classifier), DataError (capture), a bare torch RuntimeError (Normalized)."""
    three = ([0.5, 0.5, 0.5], [0.2, 0.2, 0.2])
    grey = torch.rand(2, 1, 4, 4)
    with pytest.raises(ConfigError, match="input_norm has 3 values per statistic but the images have 1 channels"):
        InputNorm(three, channels=1)
    norm = InputNorm(three)
    with pytest.raises(DataError, match="input_norm has 3 values per statistic but the images have 1 channels"):
        norm(grey)
    assert norm(torch.rand(2, 3, 4, 4)).shape == (2, 3, 4, 4)
    with pytest.raises(DataError, match="3 values per statistic"):
        norm(grey)  # also once statistics for this device and dtype exist: no grey image broadcast to 3 channels
    with pytest.raises(DataError, match="3 values per statistic"):
        Normalized(_Identity(), three)(grey)
    with pytest.raises(DataError, match="3 values per statistic"):
        LayerCapture(_Identity(), "out", input_norm=three).normalize(grey)
    one = InputNorm(([0.5], [0.5]), channels=3)  # one value for every channel
    assert one(torch.rand(2, 3, 4, 4)).shape == (2, 3, 4, 4)
    net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 26 * 26, 3))
    x, y = torch.rand(8, 1, 28, 28), torch.arange(8) % 3
    with pytest.raises(ConfigError, match="3 values per statistic.*1 channels"):
        predict(net, x, input_norm=three)
    with pytest.raises(ConfigError, match="3 values per statistic.*1 channels"):
        accuracy(net, (x, y), input_norm=three)


def test_bf16_stays_bf16_and_the_statistics_are_cast_once():
    """The capture's behaviour, now everyone's: under autocast a decoder's bf16 output is normalised in bf16, and
    the statistics are copied once per (device, dtype, ndim) (no copy inside a CUDA graph capture)."""
    norm = InputNorm(([0.25], [0.5]))
    x = torch.full((2, 1, 3, 3), 0.75, dtype=torch.bfloat16)
    out = norm(x)
    assert out.dtype == torch.bfloat16 and torch.all(out == 1.0)
    stats = norm._stats(x.device, torch.bfloat16, 4)
    norm(x)
    assert norm._stats(x.device, torch.bfloat16, 4)[0] is stats[0]  # cached, not cast again
    assert norm(x.float()).dtype == torch.float32 and norm(x.double()).dtype == torch.float64
    assert set(norm._cache) == {(x.device, dt, 4) for dt in (torch.bfloat16, torch.float32, torch.float64)}
    assert norm(torch.full((2, 1), 0.75)).tolist() == [[1.0], [1.0]]  # (N, C) inputs too
    cap = LayerCapture(_Identity(), "out", input_norm=([0.25], [0.5]))
    assert cap.normalize(x).dtype == torch.bfloat16
    assert Normalized(_Identity(), ([0.25], [0.5]))(x).dtype == torch.bfloat16
    # the classifier's trainer and predict convert every batch to float32 first (its weights are float32)
    assert InputNorm(([0.25], [0.5]), dtype=torch.float32)(x).dtype == torch.float32


def test_device_given_at_construction_makes_the_float32_copies_then():
    norm = InputNorm(([0.25], [0.5]), channels=1, device="cpu", dtype=torch.float32)
    assert set(norm._cache) == {(torch.device("cpu"), torch.float32, 4)}
    assert InputNorm(None, device="cpu")._cache == {}


@pytest.mark.parametrize("bad", BAD_NORMS)
def test_a_bad_input_norm_is_refused_everywhere(bad):
    """ClaDec, RefAE and LayerCapture accepted NaN, booleans and nested lists (NaN images, silently; True as 1.0;
    [[0.5]] flattened) while train_classifier and run.json's schema refused them."""
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        check_input_norm(bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        norm_tensors(bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        InputNorm(bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        Normalized(_Identity(), bad)
    m = tiny_vgg()
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        LayerCapture(m, "conv2", input_norm=bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        ClaDec(m, "conv2", input_norm=bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        RefAE(m, "conv2", input_norm=bad)
    x, y = torch.rand(4, 1, 28, 28), torch.arange(4)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        predict(m, x, input_norm=bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        accuracy(m, (x, y), input_norm=bad)
    with pytest.raises(ConfigError, match="input_norm must be None or"):
        train_classifier(m, (x, y), epochs=1, input_norm=bad, verbose=False)


def test_accepted_forms_of_input_norm():
    want = ([0.5], [0.25])
    for v in ((0.5, 0.25), ([0.5], [0.25]), (np.float32(0.5), 0.25), (torch.tensor([0.5]), np.array([0.25]))):
        assert check_input_norm(v) == want
        mean, std = norm_tensors(v)
        assert mean.dtype == std.dtype == torch.float32 and (mean.tolist(), std.tolist()) == want
    assert check_input_norm(torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)) == check_input_norm(
        ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    )
    assert norm_tensors(None) is None and InputNorm(None).pair is None
    e = ClaDec(tiny_vgg(), "conv2", input_norm=(np.float64(0.5), 0.25))
    assert e.input_norm == want
    assert all(math.isfinite(v) for v in (*e.input_norm[0], *e.input_norm[1]))


def test_normalized_is_the_saliency_wrapper_and_follows_the_input():
    assert SaliencyNormalized is Normalized
    m = Normalized(nn.Flatten(), ([0.5], [0.5]))
    assert m(torch.ones(1, 1, 2, 2)).tolist() == [[1.0, 1.0, 1.0, 1.0]]
    assert m.double()(torch.ones(1, 1, 1, 1, dtype=torch.float64)).dtype == torch.float64
    shared = InputNorm(([0.5], [0.5]))
    assert Normalized(nn.Flatten(), shared).norm is shared  # an InputNorm is used as it is
