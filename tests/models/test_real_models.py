"""Real torchvision and timm classifiers end to end (issue 17's "Done when"): a torchvision ResNet, a timm ConvNeXt,
a timm ViT and a timm Swin, random init (never a download), on real CIFAR-10 images at 64 px from ``../shared/data``.

For each model, ClaDec and its RefAE are fitted twice:

* through the command line: the random weights saved with safetensors, ``cladec fit --model SOURCE --weights W``
  (with ``--factory-kwargs`` for the small ViT/Swin/ConvNeXt configurations), ``cladec explain --run`` drawing the
  triplet grid, the run reloaded in Python;
* through the API: ``ClaDec(model, layer).fit``, ``RefAE.like(...).fit``, ``save``, :func:`cladec.load`,
  :func:`cladec.explain`.

Each fit must converge: its test MSE clearly below that of the mean training image (the margins, measured over
seed offsets 0-4 with ``tests/stability/measure.py``, are next to the thresholds). That RefAE reconstructs
better than ClaDec (the paper's claim) is not asserted: these classifiers are untrained.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch

from cladec import ClaDec, RefAE, explain, load
from cladec.cli.main import main
from cladec.data.load import load_dataset
from cladec.models import load_model
from helpers.core import DATA_ROOT, png_size
from helpers.stability import margin, seed

pytest.importorskip("torchvision")
pytest.importorskip("timm")

SIZE, N_TRAIN, N_TEST = 64, 192, 48


@dataclass(frozen=True)
class Case:
    """One real model: its source, the factory arguments of its small configuration, and the layers fitted."""

    source: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    cli_layer: str = "middle"  # a role, resolved by the model's family rule
    cli_alpha: float = 0.001
    api_layer: str = "last"
    api_alpha: float = 0.001
    epochs: int = 3


CASES = {
    # ResNet-18 as torchvision builds it, with α = 0: ClaDec's classification loss would backpropagate through the
    # whole network (27 images/s here); the three small models below train with the paper's α = 0.001
    "resnet": Case("torchvision:resnet18", cli_layer="middle", cli_alpha=0.0, api_layer="layer1", api_alpha=0.0),
    "convnext": Case("timm:convnext_atto", {"depths": [1, 1, 1, 1]}, cli_layer="middle", api_layer="stages.0"),
    "vit": Case("timm:vit_tiny_patch16_224", {"img_size": SIZE, "depth": 2}, cli_layer="last", api_layer="middle"),
    "swin": Case(
        "timm:swin_tiny_patch4_window7_224",
        {"img_size": SIZE, "window_size": 4, "embed_dim": 32, "depths": [2, 2], "num_heads": [2, 4]},
        cli_layer="middle",
        api_layer="last",
    ),
}


def cifar(split: str, limit: int):
    return load_dataset("cifar10", root=DATA_ROOT, split=split, size=SIZE, limit=limit)


def baseline_mse(train, test) -> float:
    """The MSE of the mean training image on the test images: what a decoder that learned nothing achieves."""
    (x, _), (xt, _) = train.tensors(), test.tensors()
    return float(((xt - x.mean(0, keepdim=True)) ** 2).mean())


def fit_cli(name: str, out: Path, seed: int = 0) -> Path:
    """``cladec fit`` of ClaDec and RefAE on the saved random weights of ``CASES[name]``; returns the run folder."""
    from safetensors.torch import save_file

    case = CASES[name]
    weights = out.parent / f"{name}.safetensors"
    torch.manual_seed(seed)  # the random weights too: the same run whatever ran before in this process
    save_file(load_model(case.source, num_classes=10, **case.kwargs).state_dict(), str(weights))
    argv = ["fit", "--model", case.source, "--weights", str(weights), "--num-classes", "10"]
    argv += ["--factory-kwargs", json.dumps(case.kwargs)] if case.kwargs else []
    argv += ["--dataset", "cifar10", "--data-root", str(DATA_ROOT), "--size", str(SIZE), "--layer", case.cli_layer]
    argv += ["--alpha", str(case.cli_alpha), "--limit", str(N_TRAIN), "--test-limit", str(N_TEST)]
    argv += ["--epochs", str(case.epochs), "--batch-size", "32", "--lr", "3e-3", "--seed", str(seed)]
    assert main([*argv, "--out", str(out), "-q"]) == 0
    return out


def fit_api(name: str, train, seed: int = 0) -> tuple[torch.nn.Module, ClaDec, RefAE]:
    """ClaDec(model, layer).fit and RefAE.like(...).fit of ``CASES[name]`` (decoders of base width 16)."""
    case = CASES[name]
    torch.manual_seed(seed)
    model = load_model(case.source, num_classes=10, **case.kwargs)
    kw = dict(epochs=case.epochs, batch_size=32, lr=3e-3, seed=seed, verbose=False)
    e = ClaDec(model, case.api_layer, alpha=case.api_alpha, base_width=16).fit(train, **kw)
    r = RefAE.like(e, init_seed=seed).fit(train, **kw)
    return model, e, r


@pytest.fixture(scope="module")
def data():
    return cifar("train", N_TRAIN), cifar("test", N_TEST)


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory, one_torch_thread):
    """Runs fitted through the command line, one per model, made when first asked for."""
    base, made = tmp_path_factory.mktemp("real_cli"), {}

    def get(name: str) -> Path:
        if name not in made:
            made[name] = fit_cli(name, base / name, seed=seed(0))
        return made[name]

    return get


@pytest.fixture(scope="module")
def api_fits(data, one_torch_thread):
    made: dict[str, tuple] = {}

    def get(name: str):
        if name not in made:
            made[name] = fit_api(name, data[0], seed=seed(0))
        return made[name]

    return get


def expected_grid(n: int, columns: int, dpi: int = 110) -> tuple[int, int]:
    """The pixel size of ``Explanation.save_grid``'s figure: 1.25 × 1.55 inches per panel, three panels a triplet."""
    rows = (n + columns - 1) // columns
    return int(columns * 3 * 1.25 * dpi), int(rows * 1.55 * dpi)


def assert_triplet_grid(path: Path, n: int, columns: int) -> None:
    """A valid PNG of the grid's size, with an image in every panel column (not blank) and colour in the
    originals' columns (CIFAR-10; the reconstructions may be paler)."""
    from PIL import Image

    width, height = png_size(path)
    assert abs(width - expected_grid(n, columns)[0]) <= 1 and abs(height - expected_grid(n, columns)[1]) <= 1
    with Image.open(path) as im:
        rgb = torch.frombuffer(bytearray(im.convert("RGB").tobytes()), dtype=torch.uint8).view(height, width, 3).short()
    drawn = rgb.sum(-1) < 3 * 245  # the background is white; titles and labels are a few thin lines of text
    coloured = (rgb.max(-1).values - rgb.min(-1).values) > 24  # text is black or red
    panels = columns * 3
    for j in range(panels):
        cut = slice(j * width // panels, (j + 1) * width // panels)
        assert drawn[:, cut].float().mean() > 0.25, f"panel column {j} of {path.name} holds no image"
        if j % 3 == 0:
            assert coloured[:, cut].float().mean() > 0.1, f"the originals in {path.name} are not in colour"


NAMES = list(CASES)


@pytest.mark.parametrize("name", NAMES)
def test_cli_fit_converges_explain_draws_triplets_and_the_run_reloads(name, cli_runs, data, tmp_path, capsys):
    from cladec.runs import load_run

    run_dir = cli_runs(name)
    cfg = json.loads((run_dir / "run.json").read_text())
    case = CASES[name]
    assert cfg["classifier"]["source"] == case.source and cfg["classifier"]["kwargs"] == case.kwargs
    assert cfg["layer"] == load_model(case.source, num_classes=10, **case.kwargs).default_layers[case.cli_layer]
    assert cfg["collapsed"] == {"cladec": False, "refae": False}
    base = baseline_mse(*data)
    ratios = cfg["metrics"]["mse_cladec"] / base, cfg["metrics"]["mse_refae"] / base
    margin(f"real model {name}, cli: test MSE / mean image's, worse of ClaDec/RefAE", max(ratios), "<", CLI_BOUND[name])
    # reloaded in Python: the same classifier and decoders give the reconstructions (and errors) recorded at fit time
    run = load_run(run_dir, device="cpu")
    xt, yt = data[1].tensors()
    got = explain(xt, cladec=run.cladec, refae=run.refae, labels=yt).summary()
    for key in ("mse_cladec", "mse_refae", "accuracy_original", "accuracy_cladec", "accuracy_refae"):
        assert got[key] == pytest.approx(cfg["metrics"][key], rel=1e-5, abs=1e-7), key
    capsys.readouterr()
    png = tmp_path / "triplets.png"
    assert main(["explain", "--run", str(run_dir), "--n", "6", "--columns", "3", "--out", str(png), "-q"]) == 0
    assert f"layer {cfg['layer']}" in capsys.readouterr().out
    assert_triplet_grid(png, n=6, columns=3)


@pytest.mark.parametrize("name", NAMES)
def test_api_fit_converges_saves_reloads_and_explains(name, api_fits, data, tmp_path):
    model, e, r = api_fits(name)
    train, test = data
    xt, yt = test.tensors()
    base = baseline_mse(train, test)
    rec_e, rec_r = e.reconstruct(xt), r.reconstruct(xt)
    ratios = float(((rec_e - xt) ** 2).mean()) / base, float(((rec_r - xt) ** 2).mean()) / base
    assert not e.collapsed and not r.collapsed
    margin(f"real model {name}, api: test MSE / mean image's, worse of ClaDec/RefAE", max(ratios), "<", API_BOUND[name])
    e.save(tmp_path / "cladec")
    r.save(tmp_path / "refae")
    e2, r2 = load(tmp_path / "cladec", model), load(tmp_path / "refae", model)
    assert (type(e2), type(r2), e2.layer, r2.layer) == (ClaDec, RefAE, e.layer, e.layer)
    assert torch.equal(e2.reconstruct(xt), rec_e) and torch.equal(r2.reconstruct(xt), rec_r)
    ex = explain(xt[:4], cladec=e2, refae=r2, labels=yt[:4], classes=test.classes)
    # the same up to float rounding: a batch of 4 may take other convolution kernels than one of 48
    torch.testing.assert_close(ex.x_cladec, rec_e[:4], atol=1e-5, rtol=0)
    torch.testing.assert_close(ex.x_refae, rec_r[:4], atol=1e-5, rtol=0)
    assert_triplet_grid(ex.save_grid(tmp_path / "t.png", columns=2), n=4, columns=2)


# --- bad input through `cladec fit`: one line naming what was wrong and what is valid ---------------------------

ODD_MODELS = """
import torch
from torch import nn


class Pair(nn.Module):
    def forward(self, x):
        return x, x.mean(1)


class Odd(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pair = Pair()
        self.volume = nn.Identity()
        self.head = nn.Linear(4 * 28 * 28, 10)

    def forward(self, x):
        h, _ = self.pair(self.conv(x))
        h = self.volume(h.unsqueeze(2)).squeeze(2)
        return self.head(h.flatten(1))


def build():
    return Odd()
"""


def fit_error(argv: list[str], capsys) -> str:
    capsys.readouterr()
    assert main(["fit", *argv, "--epochs", "1", "--limit", "32", "--test-limit", "16", "--out", "run", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cladec: error: "), err
    return err[0]


@pytest.mark.filterwarnings("error::UserWarning")  # an unknown name is an error, not first a warning
def test_bad_input_to_fit_is_one_line(tmp_path, monkeypatch, capsys):
    from safetensors.torch import save_file

    monkeypatch.chdir(tmp_path)
    err = fit_error(["--model", "timm:convnext_atoo", "--layer", "last", "--dataset", "cifar10"], capsys)
    assert "unknown timm model 'convnext_atoo'" in err and "close matches: timm:convnext_atto" in err
    atto = ["--model", "timm:convnext_atto", "--factory-kwargs", '{"depths": [1, 1, 1, 1]}', "--layer", "last"]
    save_file(load_model("timm:convnext_atto", num_classes=10, depths=[1, 1, 1, 1]).state_dict(), "w.safetensors")
    err = fit_error([*atto, "--weights", "w.safetensors", "--num-classes", "5", "--dataset", "cifar10"], capsys)
    assert "do not fit the model" in err and "head.fc.weight" in err and "(10, 320)" in err.replace("[", "(")
    (tmp_path / "odd_models.py").write_text(ODD_MODELS)
    odd = ["--factory", "odd_models:build", "--dataset", "fashion-mnist-mini", "--layer"]
    supported = "none of the supported layouts: nchw (N, C, H, W), nhwc (N, H, W, C), tokens (N, T, D), flat (N, D)"
    err = fit_error([*odd, "volume"], capsys)
    assert "layer 'volume' outputs shape (4, 1, 28, 28) per image (5-D with the batch)" in err and supported in err
    err = fit_error([*odd, "pair"], capsys)
    assert "layer 'pair' outputs a tuple (Pair) of 2 values, per image (4, 28, 28), (28, 28)" in err
    assert "pick a submodule that outputs one tensor" in err and supported in err


# test MSE / mean-image MSE, the larger of ClaDec's and RefAE's, min-max over seed offsets 0-4 (weights seeded too),
# python tests/stability/measure.py --seeds 0-4 --threads 1 (2026-12-07, busy 2-core CPU; the module runs at one
# thread, one_torch_thread, whatever the session's count), tests/STABILITY.md:
#   CLI: resnet 0.551-0.622, convnext 0.323-0.392, vit 0.384-0.475, swin 0.251-0.273
#   API: resnet 0.345-0.426, convnext 0.313-0.339, vit 0.394-0.534, swin 0.404-0.461
# the bounds leave each about 1.3× its worst seed, and all are well below 1 (the mean image)
CLI_BOUND = {"resnet": 0.8, "convnext": 0.55, "vit": 0.65, "swin": 0.4}
API_BOUND = {"resnet": 0.6, "convnext": 0.5, "vit": 0.7, "swin": 0.6}
