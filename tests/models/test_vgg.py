"""The paper's VGG-style classifier: layer names, strides, shapes, width multiplier."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cladec import ConfigError
from cladec.models import create_model
from cladec.models.vgg import ConvBlock, VGGPaper

pytestmark = pytest.mark.usefixtures("one_torch_thread")

BLOCKS = ["conv0", "conv1", "conv2a", "conv2", "conv3a", "conv3", "conv4a", "conv4"]


def _block_outputs(model: nn.Module, x: torch.Tensor) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [
        getattr(model, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape[1:])))
        for n in BLOCKS
    ]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_output_shape_for_sizes_and_channels(size, channels):
    net = create_model("vgg-paper", in_channels=channels, num_classes=7, width=0.25).eval()
    with torch.no_grad():
        out = net(torch.rand(3, channels, size, size))
    assert out.shape == (3, 7) and torch.isfinite(out).all()


def test_readable_layer_names_and_block_structure():
    net = create_model("vgg-paper")
    mods = dict(net.named_modules())
    for n in BLOCKS:
        block = mods[n]
        assert isinstance(block, ConvBlock)
        assert isinstance(mods[f"{n}.conv"], nn.Conv2d) and mods[f"{n}.conv"].bias is None
        assert mods[f"{n}.conv"].kernel_size == (3, 3) and mods[f"{n}.conv"].padding == (1, 1)
        assert isinstance(mods[f"{n}.bn"], nn.BatchNorm2d) and isinstance(mods[f"{n}.relu"], nn.ReLU)
        assert mods[f"{n}.conv"].stride == ((1, 1) if n.endswith("a") else (2, 2))
    heads = (("pool", nn.AdaptiveAvgPool2d), ("flatten", nn.Flatten), ("dropout", nn.Dropout), ("fc", nn.Linear))
    for n, cls in heads:
        assert isinstance(mods[n], cls)
    assert mods["dropout"].p == 0.5 and mods["fc"].in_features == 512 and mods["fc"].out_features == 10
    assert net.default_layers == {"last": "conv4", "middle": "conv2"}
    # the paper's net has 4.67M parameters (FINDINGS: ~4.7M)
    assert 4_600_000 < sum(p.numel() for p in net.parameters()) < 4_750_000


def test_block_output_sizes_match_the_paper_for_32_and_28_pixels():
    net = create_model("vgg-paper", in_channels=1)
    s32 = _block_outputs(net, torch.rand(2, 1, 32, 32))
    assert [s[1] for s in s32.values()] == [16, 8, 8, 4, 4, 2, 2, 1]
    assert [s[0] for s in s32.values()] == [32, 64, 128, 128, 256, 256, 512, 512]
    s28 = _block_outputs(net, torch.rand(2, 1, 28, 28))
    assert [s[1] for s in s28.values()] == [14, 7, 7, 4, 4, 2, 2, 1]
    assert s32["conv2"] == (128, 4, 4) and s32["conv4"] == (512, 1, 1)


def test_width_multiplier_scales_channels_with_a_minimum_of_four():
    quarter = create_model("vgg-paper", width=0.25)
    assert [getattr(quarter, n).conv.out_channels for n in BLOCKS] == [8, 16, 32, 32, 64, 64, 128, 128]
    assert quarter.fc.in_features == 128
    tiny = create_model("vgg-paper", width=0.01)
    assert [getattr(tiny, n).conv.out_channels for n in BLOCKS] == [4, 4, 4, 4, 4, 4, 5, 5]
    for bad in (0, -1, "wide", True, float("nan")):
        with pytest.raises(ConfigError, match="width must be a positive finite number"):
            create_model("vgg-paper", width=bad)


@pytest.mark.parametrize("arch", ["vgg-paper", "resnet10", "resnet18"])
def test_infinite_width_is_a_config_error(arch):
    # inf once passed the check and failed building the layers with an OverflowError
    with pytest.raises(ConfigError, match=r"width must be a positive finite number.*got inf"):
        create_model(arch, width=float("inf"))


def test_forward_is_the_explicit_block_sequence():
    net = VGGPaper(in_channels=1, num_classes=10, width=0.25).eval()
    x = torch.rand(4, 1, 32, 32)
    with torch.no_grad():
        h = x
        for n in BLOCKS:
            h = getattr(net, n)(h)
        manual = net.fc(h.flatten(1))
        assert torch.allclose(net(x), manual, atol=1e-6)
        assert torch.equal(net(x), net(x))  # eval mode: dropout is off
