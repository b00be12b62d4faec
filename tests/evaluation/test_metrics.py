"""cladec.evaluation.metrics: per-image reconstruction errors, accuracy, agreement, per-class breakdown."""

import math

import pytest
import torch

from cladec import DataError
from cladec.evaluation import metrics as M


def test_mse_psnr_known_values():
    x = torch.zeros(3, 1, 8, 8)
    x_hat = torch.full_like(x, 0.1)
    assert torch.allclose(M.mse(x, x_hat), torch.full((3,), 0.01))
    assert torch.allclose(M.psnr(x, x_hat), torch.full((3,), 20.0), atol=1e-4)
    # perfect reconstruction: capped, finite PSNR
    assert float(M.psnr(x, x)[0]) == M.PSNR_CAP


def test_uint8_is_scaled():
    x = torch.full((1, 1, 4, 4), 255, dtype=torch.uint8)
    assert float(M.mse(x, torch.ones(1, 1, 4, 4))[0]) == 0.0
    # PSNR/SSIM of uint8 images: data_range 255 is their range after scaling to [0, 1] (it once gave +48 dB)
    a = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    b = (a.float() * 0.9).to(torch.uint8)
    assert torch.equal(M.psnr(a, b, data_range=255), M.psnr(a, b)) and float(M.psnr(a, b)[0]) < 30
    assert torch.equal(M.ssim(a, b, data_range=255, win_size=7), M.ssim(a, b, win_size=7))
    with pytest.raises(DataError, match="data_range must be 1 \\(or 255"):
        M.psnr(a, b, data_range=2)


def test_ssim_matches_pytorch_msssim_and_orders_noise():
    from pytorch_msssim import ssim as ref

    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g)
    small = (x + 0.05 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    big = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    s_small, s_big = M.ssim(x, small), M.ssim(x, big)
    assert s_small.shape == (4,)
    assert torch.allclose(M.ssim(x, x), torch.ones(4), atol=1e-5)
    assert bool((s_small > s_big).all())
    assert torch.allclose(s_small, ref(x, small, data_range=1.0, size_average=False), atol=1e-6)
    # colour images and images smaller than the 11-px window work too
    assert M.ssim(torch.rand(2, 3, 7, 7), torch.rand(2, 3, 7, 7)).shape == (2,)


def test_reconstruction_metrics_means_and_per_image():
    x = torch.rand(5, 1, 16, 16)
    x_hat = (x * 0.9).clamp(0, 1)
    m = M.reconstruction_metrics(x, x_hat)
    assert m["n"] == 5
    assert math.isclose(m["mse"], float(M.mse(x, x_hat).mean()), rel_tol=1e-5)
    per = M.reconstruction_metrics(x, x_hat, per_image=True)
    assert set(per) == {"mse", "psnr", "ssim"} and per["ssim"].shape == (5,)


def test_shape_errors():
    with pytest.raises(DataError, match="same shape"):
        M.mse(torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 9))
    with pytest.raises(DataError, match=r"\(N, C, H, W\)"):
        M.ssim(torch.rand(1, 8, 8), torch.rand(1, 8, 8))
    with pytest.raises(DataError, match="labels"):
        M.accuracy(torch.tensor([1, 2]), torch.tensor([1]))


def test_accuracy_agreement_logits():
    y = torch.tensor([0, 1, 2, 2])
    assert M.accuracy(torch.tensor([0, 1, 1, 2]), y) == 0.75
    logits = torch.nn.functional.one_hot(torch.tensor([0, 1, 2, 0]), 3).float()
    assert M.accuracy(logits, y) == 0.75
    assert M.agreement(torch.tensor([1, 1, 0]), torch.tensor([1, 0, 0])) == pytest.approx(2 / 3)


def test_per_class():
    vals = torch.tensor([1.0, 0.0, 0.5, 0.25])
    labels = torch.tensor([0, 0, 1, 1])
    pc = M.per_class(vals, labels, ["a", "b", "c"])
    assert list(pc) == ["a", "b", "c"]
    assert pc["a"]["mean"] == 0.5 and pc["a"]["n"] == 2
    assert pc["b"]["mean"] == 0.375
    assert pc["c"] == {"n": 0, "mean": None, "std": None}
    assert M.per_class(torch.tensor([float("nan"), 1.0]), torch.tensor([0, 0]), 1)["0"] == {
        "n": 2,
        "mean": None,
        "std": None,
    }
    # booleans give per-class accuracy; an int gives numbered classes
    assert M.per_class(torch.tensor([True, False]), torch.tensor([1, 1]), 2)["1"]["mean"] == 0.5
    with pytest.raises(DataError):
        M.per_class(vals, torch.tensor([0, 0, 1, 5]), 3)


def test_a_column_of_labels_is_read_as_labels_not_as_logits(data_root):
    """(N, 1) labels (e.g. a column read from a table) were arg-maxed like logits: every label became 0."""
    from cladec.data.load import load_dataset

    test = load_dataset("fashion-mnist", root=data_root, split="test", limit=300)
    _, y = test.tensors()
    col = y[:, None]
    pred = y.clone()
    pred[:30] = (pred[:30] + 1) % 10  # 10 % wrong
    assert M.accuracy(pred, col) == pytest.approx(0.9)
    assert M.accuracy(pred[:, None], y) == pytest.approx(0.9)
    assert M.agreement(pred[:, None], col.float()) == pytest.approx(0.9)
    correct = pred == y
    assert M.per_class(correct, col, test.classes) == M.per_class(correct, y, test.classes)
    logits = torch.nn.functional.one_hot(pred, 10).float()  # logits (N, K) are still arg-maxed
    assert M.accuracy(logits, col) == pytest.approx(0.9)
    with pytest.raises(DataError, match=r"\(N,\) or \(N, 1\)"):
        M.accuracy(pred, y[:, None, None])
