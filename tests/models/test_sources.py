"""Classifiers by name (``torchvision:NAME``, ``timm:NAME``): building, default layers, weights, the CLI round trip.

Real torchvision and timm models with random initialisation (never a download), at small sizes, on real CIFAR-10
images from ``../shared/data``.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from cladec import ConfigError, SaveFormatError, list_layers
from cladec.cli.main import main
from cladec.models import default_layers, load_model
from cladec.models.sources import is_model_source
from helpers.core import DATA_ROOT, png_size

pytest.importorskip("torchvision")
pytest.importorskip("timm")


@pytest.fixture(scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize(
    ("source", "kwargs", "roles", "shape"),
    [
        ("torchvision:resnet18", {}, {"last": "layer4", "middle": "layer2"}, (512, 2, 2)),
        ("timm:convnext_atto", {}, {"last": "stages.3", "middle": "stages.1"}, (320, 2, 2)),
        ("timm:efficientnet_b0", {}, {"last": "blocks.6", "middle": "blocks.3"}, (320, 2, 2)),
        ("timm:vit_tiny_patch16_224", {"img_size": 64}, {"last": "blocks.11", "middle": "blocks.5"}, (17, 192)),
    ],
)
def test_default_layers_of_real_models(source, kwargs, roles, shape, one_thread):
    """The roles come from each family's structure, and name layers with a spatial map or a token grid."""
    model = load_model(source, num_classes=10, **kwargs)
    assert model.default_layers == roles and not model.training
    info, meta_size = model.source_info, kwargs.get("img_size", 224)  # the metadata's size, or the one built for
    assert info["source"] == source and info["image_shape"] == [3, meta_size, meta_size]
    size = kwargs.get("img_size", 64)  # listed at 64 px
    mean, std = info["input_norm"]  # from the model's metadata (ImageNet's, or timm's ViT 0.5s)
    assert len(mean) == len(std) == 3 and all(s > 0 for s in std)
    layers = {L.name: L.shape for L in list_layers(model, torch.zeros(1, 3, size, size))}
    assert layers[roles["last"]] == shape
    assert len(layers[roles["middle"]]) in (2, 3)


def test_metadata_normalisation_and_an_explicit_one():
    model = load_model("torchvision:resnet18", num_classes=3)
    assert model.source_info["input_norm"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]
    given = load_model("torchvision:resnet18", num_classes=3, input_norm=([0.5] * 3, [0.25] * 3))
    assert given.source_info["input_norm"] == [[0.5] * 3, [0.25] * 3]
    assert load_model("vgg-paper", num_classes=10).source_info["input_norm"] is None


def test_generic_fallback_probes_one_forward():
    """No family rule fits: the outermost modules with a spatial output, found by one forward pass."""

    class Odd(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 4, 3, padding=1)
            self.body = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2), nn.ReLU())
            self.tail = nn.Conv2d(8, 8, 3, stride=2)
            self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 2))

        def forward(self, x):
            return self.head(self.tail(self.body(self.stem(x))))

    net = Odd()
    assert default_layers(net) == {}  # nothing names them, and no input to probe with
    assert default_layers(net, torch.zeros(1, 3, 16, 16)) == {"last": "tail", "middle": "body"}


def test_sources_and_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert is_model_source("timm:resnet18") and is_model_source("resnet10")
    (tmp_path / "resnet10").mkdir()
    assert not is_model_source("resnet10")  # an existing folder is a checkpoint
    assert not is_model_source("other")


@pytest.mark.parametrize(
    ("source", "expected"),
    [("torchvision:resnet181", "torchvision:resnet18"), ("timm:convnext_atoo", "timm:convnext_atto")],
)
def test_unknown_names_list_close_matches(source, expected, capsys):
    with pytest.raises(ConfigError, match=f"close matches: .*{expected}"):
        load_model(source)
    assert main(["layers", "--model", source]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("cladec: error: unknown ") and expected in err[0]


def test_mismatched_weights_one_line(tmp_path, capsys):
    from safetensors.torch import save_file

    save_file(load_model("torchvision:resnet18", num_classes=10).state_dict(), str(tmp_path / "w.safetensors"))
    with pytest.raises(SaveFormatError, match=r"shape mismatch.*fc\.weight"):
        load_model("torchvision:resnet18", num_classes=5, weights=tmp_path / "w.safetensors")
    argv = ["layers", "--model", "timm:convnext_atto", "--weights", str(tmp_path / "w.safetensors")]
    assert main([*argv, "--num-classes", "10"]) == 2  # a ResNet's weights in a ConvNeXt: the keys do not match
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "do not fit the model" in err[0] and "key(s)" in err[0]
    with pytest.raises(ConfigError, match="not both"):
        load_model("torchvision:resnet18", weights=tmp_path / "w.safetensors", pretrained=True)


def test_layers_command_marks_the_roles(capsys):
    assert main(["layers", "--model", "timm:convnext_atto", "--num-classes", "10", "--image-shape", "3,64,64"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("timm:convnext_atto: input 3×64×64")
    assert "default layers: last = stages.3, middle = stages.1" in out


@pytest.mark.filterwarnings("ignore::cladec.CollapseWarning")  # one epoch; the run's reload is what is tested
def test_cli_fit_explain_round_trip_of_a_torchvision_model(tmp_path, capsys, one_thread, monkeypatch):
    """`cladec fit --model torchvision:resnet18 --weights W`, then `cladec explain` rebuilds it from run.json."""
    from safetensors.torch import save_file

    from cladec.runs import load_run

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    net = load_model("torchvision:resnet18", num_classes=10)
    save_file(net.state_dict(), "w.safetensors")
    argv = ["fit", "--model", "torchvision:resnet18", "--weights", "w.safetensors", "--num-classes", "10"]
    argv += ["--dataset", "cifar10", "--data-root", str(DATA_ROOT), "--size", "32", "--layer", "middle"]
    argv += ["--limit", "256", "--test-limit", "64", "--epochs", "1", "--batch-size", "32", "--lr", "3e-3"]
    assert main([*argv, "--out", "run", "-q"]) == 0
    config = json.loads(Path("run/run.json").read_text())
    entry = config["classifier"]
    assert entry["type"] == "source" and entry["source"] == "torchvision:resnet18" and entry["num_classes"] == 10
    assert entry["weights"] == str((tmp_path / "w.safetensors").resolve()) and len(entry["weights_sha256"]) == 64
    assert config["layer"] == "layer2" and config["image_shape"] == [3, 32, 32]
    assert config["input_norm"] == [[0.485, 0.456, 0.406], [0.229, 0.224, 0.225]]  # the weights' transforms
    run = load_run("run")
    assert run.layer == "layer2" and all(
        torch.equal(a, b) for a, b in zip(run.classifier.state_dict().values(), net.state_dict().values(), strict=True)
    )
    capsys.readouterr()
    assert main(["explain", "--run", "run", "--n", "8", "--out", "t.png"]) == 0
    assert "layer layer2" in capsys.readouterr().out and png_size(Path("t.png"))[0] > 32


def test_a_source_without_weights_warns_that_it_is_untrained(tmp_path):
    """A run of a source model with neither weights nor pretrained=True explains an untrained network: said."""
    from cladec.models.spec import classifier_entry

    with pytest.warns(UserWarning, match="gets random weights .*untrained network"):
        entry = classifier_entry("torchvision:resnet18", num_classes=10)
    assert entry["type"] == "source" and entry["weights"] is None and not entry["pretrained"]
    weights = tmp_path / "w.safetensors"
    weights.write_bytes(b"")  # only its existence is checked here
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # with weights: no warning
        assert classifier_entry("torchvision:resnet18", weights=weights, num_classes=10)["weights"] == str(weights)
