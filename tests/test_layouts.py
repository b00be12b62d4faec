"""Layer outputs of every common shape (cladec.layouts, through LayerCapture and the explainers) on real torchvision
and timm models with random weights: the detected layout, what the decoder sees, a short fit on real CIFAR-10
images, the save/load round trip, and the errors for a wrong layout, a shape that cannot be told apart and an
output that is none of the layouts."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from cladec import ClaDec, ConfigError, LayerCapture, RefAE, load
from cladec.layouts import check_layout, measured_layout
from helpers.core import COLLAPSE_OK

SIZE = 32  # CIFAR-10's own size: small models, quick forward passes

torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")


def _resnet():
    return torchvision.models.resnet18(num_classes=10)


def _convnext(**kw):
    return timm.create_model("convnext_atto", num_classes=10, **kw)


def _vit(**kw):
    return timm.create_model("vit_tiny_patch16_224", img_size=SIZE, patch_size=8, depth=2, num_classes=10, **kw)


def _swin():
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        img_size=SIZE,
        patch_size=2,
        window_size=4,
        embed_dim=24,
        depths=(2, 2),
        num_heads=(2, 4),
        num_classes=10,
    )


def _tv_swin():
    from torchvision.models.swin_transformer import SwinTransformer

    return SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[4, 4], num_classes=10
    )


MODELS = {
    "resnet": _resnet,
    "convnext": _convnext,
    "convnext-nhwc-norm": lambda: _convnext(conv_mlp=False),
    "vit": _vit,
    "vit-registers": lambda: _vit(reg_tokens=8),
    "swin": _swin,
    "tv-swin": _tv_swin,
}
_built: dict[str, nn.Module] = {}


def model(name: str) -> nn.Module:
    if name not in _built:
        torch.manual_seed(0)
        _built[name] = MODELS[name]().eval()
    return _built[name]


# model, layer, detected layout, raw shape per image, what the decoder sees, prefix tokens
CASES = [
    ("resnet", "layer2", "nchw", (128, 4, 4), (128, 4, 4), None),  # a block: measured at 64 px
    ("resnet", "layer2.0.conv1", "nchw", (128, 4, 4), (128, 4, 4), None),  # declared: torch's Conv2d
    ("convnext", "stages.1", "nchw", (80, 4, 4), (80, 4, 4), None),
    ("convnext-nhwc-norm", "stages.1.blocks.0.norm", "nhwc", (4, 4, 80), (80, 4, 4), None),  # measured
    ("vit", "blocks.1", "tokens", (17, 192), (192, 4, 4), 1),  # 1 class token + 4×4 patches
    ("vit-registers", "blocks.1", "tokens", (25, 192), (192, 4, 4), 9),  # timm's num_prefix_tokens, not 5×5
    ("swin", "layers.1", "nhwc", (8, 8, 48), (48, 8, 8), None),  # timm: output_fmt NHWC
    ("swin", "patch_embed.proj", "nchw", (24, 16, 16), (24, 16, 16), None),  # the Conv2d inside it
    ("tv-swin", "features.3", "nhwc", (4, 4, 48), (48, 4, 4), None),  # torchvision's channels-last stages
]


@pytest.mark.parametrize("name, layer, layout, raw, seen, prefix", CASES, ids=[f"{c[0]}:{c[1]}" for c in CASES])
def test_detected_layout_and_what_the_decoder_sees(name, layer, layout, raw, seen, prefix):
    m = model(name)
    x = torch.rand(2, 3, SIZE, SIZE)
    cap = LayerCapture(m, layer)
    with torch.no_grad():
        a = cap(x)
        out = cap.raw(x)
    assert (cap.layout, cap.raw_shape, tuple(a.shape[1:]), cap.num_prefix_tokens) == (layout, raw, seen, prefix)
    if layout == "nhwc":  # permuted once, nothing else
        assert torch.equal(a, out.permute(0, 3, 1, 2))
    # the layout detected is accepted when given, and gives the same activations
    with torch.no_grad():
        assert torch.equal(LayerCapture(m, layer, layout=layout)(x), a)


def test_neurons_select_channels_in_every_layout():
    x = torch.rand(2, 3, SIZE, SIZE)
    for name, layer in (("swin", "layers.1"), ("vit", "blocks.1"), ("resnet", "layer2")):
        full = LayerCapture(model(name), layer)
        some = LayerCapture(model(name), layer, neurons=[0, 5, 7])
        with torch.no_grad():
            assert torch.equal(some(x), full(x)[:, [0, 5, 7]])
        assert some.output_shape == (3, *full.output_shape[1:])  # type: ignore[index]


@pytest.fixture(scope="module")
def cifar(data_root):
    from cladec.data.load import load_dataset

    return load_dataset("cifar10", root=data_root, split="train", size=SIZE, limit=192)


@COLLAPSE_OK  # one epoch on 192 images with a random classifier: checks the shapes, not the decoder's quality
@pytest.mark.parametrize(
    "name, layer, layout",
    [
        ("resnet", "layer2", "nchw"),
        ("convnext", "stages.1", "nchw"),
        ("vit", "blocks.1", "tokens"),
        ("swin", "layers.1", "nhwc"),
    ],
)
def test_short_fit_on_cifar10_reconstructs_images(cifar, tmp_path, name, layer, layout):
    m = model(name)
    exp = ClaDec(m, layer, alpha=0.001).fit(cifar, epochs=1, batch_size=64, lr=3e-3, seed=0, verbose=False)
    x = cifar.images[:4]
    x = x.float() / 255 if x.dtype == torch.uint8 else x
    assert exp.capture.layout == layout and exp.reconstruct(x).shape == (4, 3, SIZE, SIZE)
    ref = RefAE.like(exp)
    assert ref.capture.given_layout == layout
    if name == "swin":  # the save records the layout and load restores it (no detection needed)
        exp.save(tmp_path / "exp")
        assert json.loads((tmp_path / "exp" / "cladec.json").read_text())["layout"] == "nhwc"
        back = load(tmp_path / "exp", m)
        assert back.capture.given_layout == back.capture.layout == "nhwc"
        assert torch.allclose(back.reconstruct(x), exp.reconstruct(x))


def test_a_wrong_layout_is_refused():
    x = torch.rand(2, 3, SIZE, SIZE)
    wrong = [
        ("swin", "layers.1", "nchw", r"layout='nchw' contradicts .*nhwc \(N, H, W, C\), as timm's SwinTransformer"),
        ("resnet", "layer2", "nhwc", r"contradicts .*nchw .*shape \(128, 8, 8\) at twice the image size"),
        ("tv-swin", "features.3", "nchw", r"contradicts .*torchvision's SwinTransformer"),
        (
            "vit",
            "blocks.1",
            "nchw",
            r"layout='nchw' reads \(N, C, H, W\), but layer 'blocks.1' outputs shape \(17, 192\).*tokens",
        ),
        ("resnet", "layer2", "flat", r"reads \(N, D\).*outputs shape \(128, 4, 4\).*one of nchw, nhwc"),
    ]
    for name, layer, layout, pattern in wrong:
        with pytest.raises(ConfigError, match=pattern):
            LayerCapture(model(name), layer, layout=layout)(x)
    with pytest.raises(ConfigError, match="layout must be one of nchw, nhwc, tokens, flat"):
        check_layout("chw")


class _FixedSize(nn.Module):
    """A map made by a linear layer: it runs only at its own image size, so its layout cannot be measured."""

    def __init__(self, shape=(6, 6, 4)) -> None:
        super().__init__()
        self.fc = nn.Linear(3 * 8 * 8, 6 * 6 * 4)
        self.map = nn.Unflatten(1, shape)

    def forward(self, x):
        return self.map(self.fc(x.flatten(1)))


def test_a_shape_that_cannot_be_told_apart_is_refused_until_the_layout_is_given():
    m, x = _FixedSize(), torch.rand(2, 3, 8, 8)
    with pytest.raises(ConfigError, match=r"cannot tell .*'map'.*\(6, 6, 4\).*layout='nchw' or 'nhwc' \(--layout"):
        LayerCapture(m, "map")(x)
    cap = LayerCapture(m, "map", layout="nhwc")
    assert cap(x).shape == (2, 4, 6, 6)
    assert measured_layout((6, 6, 4), (6, 6, 4)) is None  # nothing grows (a pooled map): not told either


class _Odd(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.odd = nn.Identity()

    def forward(self, x):
        h = self.conv(x)
        h = self.odd({"map": h} if self.kind == "dict" else h.unsqueeze(2))
        return h


@pytest.mark.parametrize(
    "kind, pattern",
    [("dict", r"outputs a dict \(Identity\), not a tensor"), ("5d", r"outputs shape \(4, 1, 8, 8\) per image \(5-D")],
)
def test_an_output_of_no_layout_names_it_and_what_is_supported(kind, pattern):
    with pytest.raises(
        ConfigError, match=pattern + r".*supported layouts: nchw \(N, C, H, W\), nhwc \(N, H, W, C\), tokens"
    ):
        LayerCapture(_Odd(kind), "odd")(torch.rand(2, 3, 8, 8))


def test_the_projects_own_models_need_no_probe(fmnist_small):
    # cladec's own architectures are declared NCHW: one forward pass, as before layouts were detected
    from cladec.models import create_model

    m = create_model("vgg-paper", in_channels=1, num_classes=10, width=0.25).eval()
    calls = []
    m.register_forward_pre_hook(lambda mod, inp: calls.append(tuple(inp[0].shape)))
    cap = LayerCapture(m, "conv2")
    cap(torch.rand(2, 1, 28, 28))
    assert calls == [(2, 1, 28, 28)] and cap.layout == "nchw"
