"""The model registry: names, errors, custom registration, rebuild information."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cladec import ConfigError
from cladec.models import _registry, create_model, list_models, model_kwargs, register_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_builtin_models_are_listed():
    assert list_models() == sorted(list_models())
    assert {"vgg-paper", "resnet10", "resnet18"} <= set(list_models())


def test_unknown_name_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="unknown model 'vgg16'.*resnet10.*resnet18.*vgg-paper"):
        create_model("vgg16")


def test_names_are_case_insensitive_and_rebuild_info_is_attached():
    net = create_model("VGG-Paper", in_channels=3, num_classes=4, width=0.25)
    assert net.arch == "vgg-paper"
    assert net.arch_kwargs == {"in_channels": 3, "num_classes": 4, "width": 0.25}
    again = create_model(net.arch, **net.arch_kwargs)
    again.load_state_dict(net.state_dict())  # same architecture


def test_bad_arguments_are_config_errors():
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(ConfigError, match="in_channels must be a positive integer"):
            create_model("resnet10", in_channels=bad)
        with pytest.raises(ConfigError, match="num_classes must be a positive integer"):
            create_model("resnet10", num_classes=bad)
    with pytest.raises(ConfigError, match="does not take depth; its options are: width"):
        create_model("resnet18", depth=3)
    assert model_kwargs("vgg-paper")["width"] == 1.0


def test_register_a_custom_model(monkeypatch):
    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))  # keep the global registry clean

    @register_model
    def tiny_linear(in_channels: int = 1, num_classes: int = 10, image_size: int = 28) -> nn.Module:
        net = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * image_size**2, num_classes))
        net.default_layers = {"last": "1", "middle": "0"}
        return net

    @register_model("my-cnn")
    def _anything(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
        conv = nn.Conv2d(in_channels, 4, 3)
        return nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))

    assert "tiny-linear" in list_models() and "my-cnn" in list_models()
    assert create_model("tiny-linear", image_size=8)(torch.rand(2, 1, 8, 8)).shape == (2, 10)
    assert create_model("my-cnn", in_channels=3, num_classes=2)(torch.rand(2, 3, 8, 8)).shape == (2, 2)
    with pytest.raises(ConfigError, match="already registered"):
        register_model("my-cnn")(tiny_linear)

    # the same module-level function registered again (its module reloaded, e.g. by a notebook's autoreload)
    # replaces itself; two different closures or lambdas under one name do not
    def make(tag):
        def factory(in_channels: int = 1, num_classes: int = 10) -> nn.Module:
            return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 16, num_classes))

        factory.__qualname__ = "reloaded_factory"  # as a module-level function's
        factory.tag = tag
        return factory

    first, second = make(1), make(2)
    register_model("reloaded")(first)
    register_model("reloaded")(second)
    assert _registry._MODELS["reloaded"] is second
    register_model("lam")(lambda in_channels=1, num_classes=10: nn.Linear(in_channels, num_classes))
    with pytest.raises(ConfigError, match="already registered"):
        register_model("lam")(lambda in_channels=1, num_classes=10: nn.Linear(in_channels, num_classes))

    @register_model("open-cnn")
    def _open(in_channels: int = 1, num_classes: int = 10, **options) -> nn.Module:  # any options are passed on
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * options.get("side", 4) ** 2, num_classes))

    assert create_model("open-cnn", side=6)(torch.rand(2, 1, 6, 6)).shape == (2, 10)
    with pytest.raises(ConfigError, match="must accept in_channels and num_classes"):
        register_model("no-channels")(lambda num_classes=10: nn.Linear(4, num_classes))
