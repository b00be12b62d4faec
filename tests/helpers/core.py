"""Shared, cached real-data fixtures for the core tests (trained once per test session)."""

from __future__ import annotations

import functools
import os
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn


def _find_data_root() -> Path:
    """The real data sets: ``$CLADEC_TEST_DATA`` if set, else ``../shared/data`` beside the repository, else
    (for a clone of a local checkout, e.g. in a temporary folder) ``../shared/data`` beside that checkout."""
    env = os.environ.get("CLADEC_TEST_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    candidates = [repo.parent / "shared" / "data"]
    try:
        url = subprocess.run(
            ["git", "-C", str(repo), "config", "--get", "remote.origin.url"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        url = ""
    url = url.removeprefix("file://")
    if url.startswith("/"):
        candidates.append(Path(url).resolve().parent / "shared" / "data")
    for c in candidates:
        if (c / "FashionMNIST" / "raw").is_dir():
            return c
    return candidates[0]


DATA_ROOT = _find_data_root()


@functools.cache
def fmnist(split: str = "train", limit: int = 3000, size: int | None = None):
    """Real Fashion-MNIST images (N, 1, H, W) in [0, 1] and labels, through cladec's loader."""
    from cladec.data.load import load_dataset

    ds = load_dataset("fashion-mnist", root=DATA_ROOT, split=split, limit=limit, size=size)
    return ds.tensors()


def _train(model: nn.Module, x, y, epochs: int = 1, lr: float = 0.05, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 128):
            b = perm[i : i + 128]
            loss = nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


#: Fit settings under which one epoch on a few hundred images trains a decoder that does not collapse to a
#: constant image (ClaDec at tiny_vgg's conv2/conv4, RefAE at conv2 and residual_net's block.conv2, 256-512
#: images: 0 collapses in 8 fits each, seeds 0-3 at lr 1e-3 and 3e-3; the paper's lr 3e-4 at batch 128 takes
#: 2-4 steps there and collapses every time, tests/STABILITY.md). RefAE at a 1x1 layer (conv4) needs more.
QUICK = dict(lr=3e-3, batch_size=32)

#: For a test of mechanics (bookkeeping, refusals, bit-equality of two paths, deliberately untrained fits) on so
#: few images that its decoder may collapse: the suite otherwise turns CollapseWarning into an error
#: (pyproject.toml). Each use says why a collapsed decoder is fine there.
COLLAPSE_OK = pytest.mark.filterwarnings("ignore::cladec.CollapseWarning")


@functools.cache
def tiny_vgg() -> nn.Module:
    """The paper's VGG-style classifier at quarter width, trained 2 epochs on 3,000 Fashion-MNIST images."""
    from cladec.models import create_model

    from .stability import seed

    torch.manual_seed(seed(0))
    x, y = fmnist("train", 3000)
    return _train(create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25), x, y, epochs=2, seed=seed(0))


class Block(nn.Module):
    """A residual block: the layer of interest (``conv2``) sits inside it."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x):
        h = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(x + self.bn2(self.conv2(h)))


class ResidualNet(nn.Module):
    """Not an nn.Sequential: a stem, a residual block, a side branch merged in forward, a head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.block = Block(16)
        self.branch = nn.Conv2d(16, 16, 1)
        self.down = nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(32, 10)
        self.after_calls = 0

    def forward(self, x):
        h = self.stem(x)
        h = self.block(h) + self.branch(h)
        h = torch.relu(self.down(h))
        self.after_calls += 1  # counts forward passes that got past the block
        return self.fc(self.pool(h).flatten(1))


@functools.cache
def residual_net() -> ResidualNet:
    from .stability import seed

    torch.manual_seed(seed(0))
    x, y = fmnist("train", 3000)
    return _train(ResidualNet(), x, y, epochs=1, seed=seed(0))


def png_size(path: Path) -> tuple[int, int]:
    """Width and height of a PNG file, after checking that it is a complete, valid PNG."""
    from PIL import Image

    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


def assert_bad_devices_refused(argv: list[str], capsys) -> None:
    """``cladec ARGV --device X`` with a device that is no device (and ``cuda`` on a machine without CUDA) is one
    usage error (exit 2) naming the value."""
    from cladec.cli.main import main

    assert main(argv + ["--device", "nope"]) == 2
    assert "--device 'nope' is not a device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(argv + ["--device", "cuda"]) == 2
        assert "CUDA is not available" in capsys.readouterr().err


def claims_setup(base: Path, data_root: Path, *, seed: int, layer: str = "conv4", epochs: int = 2, lr: float = 3e-4):
    """The configuration the paper's claims are tested in (``conftest.eval_setup``) and measured in
    (``tests/stability/claims.py``): vgg-paper trained 2 epochs on 5,000 Fashion-MNIST images and saved under
    ``base/clf``, and a run directory ``base/run`` for ``layer`` (ClaDec with alpha 0.001 and the RefAE,
    ``epochs`` each on the same images; 1,000 test images).

    Returns:
        ``(clf_dir, run, train, test)``.
    """
    from cladec.data.load import load_dataset
    from cladec.models import create_model
    from cladec.models.checkpoint import save_classifier
    from cladec.models.predict import accuracy
    from cladec.models.training import train_classifier
    from cladec.runs import fit_run

    train = load_dataset("fashion-mnist", root=data_root, split="train", limit=5000)
    test = load_dataset("fashion-mnist", root=data_root, split="test", limit=1000)
    torch.manual_seed(seed)
    net = create_model("vgg-paper", in_channels=1, num_classes=10)
    train_classifier(net, train, 2, seed=seed, verbose=False)
    clf_dir = save_classifier(base / "clf", net, dataset=train, metrics={"test_acc": accuracy(net, test)})
    run = fit_run(
        base / "run",
        classifier_dir=clf_dir,
        dataset="fashion-mnist",
        layer=layer,
        alpha=0.001,
        epochs=epochs,
        seed=seed,
        size=28,
        limit=5000,
        test_limit=1000,
        data_root=str(data_root),
        verbose=False,
        lr=lr,
    )
    return clf_dir, run, train, test
