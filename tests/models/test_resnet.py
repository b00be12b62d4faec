"""CIFAR-style ResNet-10/18: names, shapes, residual connections, stem pooling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from cladec.models import create_model
from cladec.models.resnet import BasicBlock

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize("arch", ["resnet10", "resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [28, 32, 64])
def test_output_shape_for_sizes_and_channels(arch, size, channels):
    net = create_model(arch, in_channels=channels, num_classes=5, width=0.125).eval()
    with torch.no_grad():
        out = net(torch.rand(2, channels, size, size))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_readable_names_and_block_counts():
    r10, r18 = create_model("resnet10"), create_model("resnet18", in_channels=3)
    for net, n in ((r10, 1), (r18, 2)):
        mods = dict(net.named_modules())
        for name in ("stem.conv", "stem.bn", "stem.relu", "pool", "flatten", "fc"):
            assert name in mods
        for i, width in enumerate((64, 128, 256, 512), start=1):
            layer = mods[f"layer{i}"]
            assert isinstance(layer, nn.Sequential) and len(layer) == n
            assert all(isinstance(b, BasicBlock) for b in layer)
            for part in ("conv1", "bn1", "conv2", "bn2", "shortcut"):
                assert f"layer{i}.0.{part}" in mods
            assert mods[f"layer{i}.0.conv2"].out_channels == width
        assert net.default_layers == {"last": "layer4", "middle": "layer2"}
        assert mods["stem.conv"].kernel_size == (3, 3) and mods["stem.conv"].stride == (1, 1)
    assert isinstance(dict(r18.named_modules())["layer1.0.shortcut"], nn.Identity)
    assert isinstance(dict(r18.named_modules())["layer2.0.shortcut"], nn.Sequential)
    assert 4_800_000 < sum(p.numel() for p in r10.parameters()) < 5_000_000
    assert 11_100_000 < sum(p.numel() for p in r18.parameters()) < 11_250_000


def test_stage_resolutions_and_stem_pool_only_above_64_pixels():
    net = create_model("resnet10", in_channels=3, width=0.25).eval()
    shapes = {}
    for name in ("stem", "layer1", "layer2", "layer3", "layer4"):
        getattr(net, name).register_forward_hook(lambda m, i, o, n=name: shapes.__setitem__(n, tuple(o.shape[1:])))
    with torch.no_grad():
        net(torch.rand(1, 3, 32, 32))
        assert [shapes[n][1] for n in ("stem", "layer1", "layer2", "layer3", "layer4")] == [32, 32, 16, 8, 4]
        net(torch.rand(1, 3, 64, 64))
        assert shapes["stem"][1] == 64  # no max-pool up to 64 px
        net(torch.rand(1, 3, 96, 96))
        assert shapes["stem"][1] == 48 and shapes["layer4"][1] == 6


def test_basic_block_is_really_residual():
    torch.manual_seed(0)
    same = BasicBlock(8, 8).eval()
    down = BasicBlock(8, 16, stride=2).eval()
    x = torch.randn(2, 8, 10, 10)
    with torch.no_grad():
        # with the residual branch silenced (bn2 scale and shift 0) a block passes relu(shortcut(x)) through
        for blk in (same, down):
            blk.bn2.weight.zero_()
            blk.bn2.bias.zero_()
        assert torch.equal(same(x), torch.relu(x))
        assert torch.allclose(down(x), torch.relu(down.shortcut(x)))
        assert down(x).shape == (2, 16, 5, 5)
        # and with the branch active the output is relu(branch + x)
        same.bn2.weight.fill_(1.0)
        branch = same.bn2(same.conv2(same.relu1(same.bn1(same.conv1(x)))))
        assert torch.allclose(same(x), torch.relu(branch + x), atol=1e-6)
        assert not torch.allclose(same(x), torch.relu(branch), atol=1e-3)


def test_layer_inside_a_block_can_be_hooked():
    net = create_model("resnet18", width=0.25).eval()
    seen = {}
    mod = dict(net.named_modules())["layer3.0.conv2"]

    def hook(module, inputs, output):
        seen["a"] = output.shape

    mod.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.rand(1, 1, 32, 32))
    assert seen["a"] == (1, 64, 8, 8)
