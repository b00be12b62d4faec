"""Layer capture: names and modules, any nn.Module, early stop, token grids, neuron subsets, errors."""

import pytest
import torch
from torch import nn

import cladec
from cladec import ConfigError, DataError, LayerCapture, list_layers, resolve_layer
from helpers.core import QUICK, ResidualNet, fmnist, residual_net, tiny_vgg


def test_layer_given_as_module_is_stored_as_name():
    m = tiny_vgg()
    assert resolve_layer(m, m.conv2) == "conv2"
    cap = LayerCapture(m, m.conv4)
    assert cap.layer == "conv4"


def test_layer_inside_residual_block_and_forward_stops_there():
    m = residual_net()
    x, _ = fmnist("test", 64)
    before = m.after_calls
    with LayerCapture(m, "block.conv2") as cap:
        a = cap(x)
    assert a.shape == (64, 16, 14, 14)
    assert m.after_calls == before, "the forward pass went on past the captured layer"
    # the captured value is the real output of block.conv2 (compare with a plain hook)
    seen = {}
    h = m.block.conv2.register_forward_hook(lambda mod, i, o: seen.setdefault("o", o))
    with torch.no_grad():
        m(x)
    h.remove()
    assert torch.allclose(a, seen["o"])


def test_branch_module_called_inside_forward():
    m = residual_net()
    x, _ = fmnist("test", 8)
    with LayerCapture(m, "branch") as cap:
        assert cap(x).shape == (8, 16, 14, 14)


def test_list_layers_names_and_shapes():
    infos = {i.name: i for i in list_layers(tiny_vgg(), torch.zeros(1, 1, 28, 28))}
    assert infos["conv4"].shape == (128, 1, 1)
    assert infos["conv2"].shape == (32, 4, 4)
    assert infos["conv2.conv"].type == "Conv2d"
    assert infos["fc"].shape == (10,)
    names = [i.name for i in list_layers(residual_net(), torch.zeros(1, 1, 28, 28))]
    assert names.index("block") < names.index("block.conv1") < names.index("block.conv2")


def test_vector_layer_and_neuron_subset():
    m = tiny_vgg()
    x, _ = fmnist("test", 16)
    with LayerCapture(m, "flatten") as full:
        a = full(x)
    with LayerCapture(m, "flatten", neurons=[3, 0, 7]) as sub:
        b = sub(x)
    assert a.shape == (16, 128) and b.shape == (16, 3)
    assert torch.equal(b, a[:, [3, 0, 7]])
    mask = torch.zeros(32, dtype=torch.bool)
    mask[[1, 5]] = True
    with LayerCapture(m, "conv2", neurons=mask) as cap:
        c = cap(x)
    assert c.shape == (16, 2, 4, 4) and cap.neurons == [1, 5]


class TinyViT(nn.Module):
    def __init__(self, cls_token: bool = True):
        super().__init__()
        self.patch = nn.Conv2d(1, 24, 7, stride=7)  # 28/7 = 4x4 patches
        self.cls = nn.Parameter(torch.randn(1, 1, 24)) if cls_token else None
        self.block = nn.TransformerEncoderLayer(24, 4, 48, batch_first=True)
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        if self.cls is not None:
            t = torch.cat([self.cls.expand(len(t), -1, -1), t], 1)
        t = self.block(t)
        return self.head(t[:, 0])


def test_token_sequences_laid_on_grid_class_token_dropped_or_kept():
    m = TinyViT().eval()
    x, _ = fmnist("test", 4)
    with LayerCapture(m, "block") as cap:
        a = cap(x)
    assert a.shape == (4, 24, 4, 4) and cap.num_prefix_tokens == 1
    with torch.no_grad():
        tokens = m.block(torch.cat([m.cls.expand(4, -1, -1), m.patch(x).flatten(2).transpose(1, 2)], 1))
    # patch token (row 1, col 2) = token 1 + 1*4 + 2
    assert torch.allclose(a[:, :, 1, 2], tokens[:, 1 + 4 + 2], atol=1e-5)
    with LayerCapture(m, "block", prefix_tokens="channels") as cap2:
        b = cap2(x)
    assert b.shape == (4, 48, 4, 4)
    assert torch.allclose(b[:, 24:, 3, 3], tokens[:, 0], atol=1e-5)
    no_cls = TinyViT(cls_token=False).eval()
    with LayerCapture(no_cls, "block") as cap3:
        assert cap3(x).shape == (4, 24, 4, 4) and cap3.num_prefix_tokens == 0


def test_cladec_explains_a_token_layer():
    m = TinyViT().eval()
    x, y = fmnist("train", 256)
    e = cladec.ClaDec(m, "block", alpha=0.0).fit((x, y), epochs=1, verbose=False, **QUICK)
    assert not e.collapsed
    assert e.reconstruct(x[:5]).shape == (5, 1, 28, 28)


def test_unknown_layer_lists_closest_names():
    with pytest.raises(ConfigError) as err:
        resolve_layer(tiny_vgg(), "conv22")
    msg = str(err.value)
    assert "conv22" in msg and "conv2" in msg and "list_layers" in msg


def test_module_not_in_model():
    with pytest.raises(ConfigError, match="not a submodule"):
        resolve_layer(tiny_vgg(), nn.ReLU())


def test_layer_never_reached():
    m = ResidualNet().eval()
    m.unused = nn.Conv2d(16, 16, 1)
    with pytest.raises(ConfigError, match="never reached"):
        with LayerCapture(m, "unused") as cap:
            cap(torch.zeros(2, 1, 28, 28))


def test_neuron_indices_out_of_range():
    x, _ = fmnist("test", 4)
    cap = LayerCapture(tiny_vgg(), "conv2", neurons=[0, 40])
    for _ in range(2):  # a second call raises too (it once returned all 32 units, the setup half-done)
        with pytest.raises(ConfigError, match=r"out of range.*32 units.*0\.\.31"):
            cap(x)
    assert cap.raw_shape is None and cap.output_shape is None
    with pytest.raises(ConfigError, match="boolean neuron mask"):
        with LayerCapture(tiny_vgg(), "conv2", neurons=torch.ones(5, dtype=torch.bool)) as cap:
            cap(x)
    for bad, pat in (([], "is empty"), ({1, 2}, "got a set"), ("0,1", "got a str"), ([True, 2], "mixes booleans")):
        with pytest.raises(ConfigError, match=pat):
            LayerCapture(tiny_vgg(), "conv2", neurons=bad)(x)


def test_images_the_model_rejects():
    with pytest.raises(DataError, match="rejected input of shape"):
        with LayerCapture(tiny_vgg(), "conv2") as cap:
            cap(torch.zeros(2, 3, 28, 28))


def test_images_the_model_rejects_on_a_torch_without_OutOfMemoryError(monkeypatch):
    # torch < 2.5 has no torch.OutOfMemoryError: the shape error must still be the readable DataError
    monkeypatch.delattr(torch, "OutOfMemoryError", raising=False)
    with pytest.raises(DataError, match="rejected input of shape"):
        with LayerCapture(tiny_vgg(), "conv2") as cap:
            cap(torch.zeros(2, 3, 28, 28))


def test_run_attached_needs_the_hook():
    x, _ = fmnist("train", 4)
    cap = LayerCapture(tiny_vgg(), "conv2")
    with pytest.raises(ConfigError, match="run_attached needs the hook attached"):
        cap.run_attached(x)
    with cap.attached():
        assert cap._handle is not None
        torch.testing.assert_close(cap.run_attached(x), cap(x))
    assert cap._handle is None  # detached again: it was not attached before


def test_input_norm_must_match_the_image_channels():
    x, _ = fmnist("test", 2)
    cap = LayerCapture(tiny_vgg(), "conv2", input_norm=([0.5, 0.5, 0.5], [0.2, 0.2, 0.2]))
    with pytest.raises(DataError, match="input_norm has 3 values per statistic but the images have 1 channels"):
        cap(x)
    assert LayerCapture(tiny_vgg(), "conv2", input_norm=([0.5], [0.2]))(x).shape[1] == 32


def test_an_attached_capture_leaves_other_forward_passes_alone():
    x, _ = fmnist("test", 2)
    m = tiny_vgg().eval()
    full = m(x)
    with LayerCapture(m, "conv2") as cap, LayerCapture(m, "conv4") as deep:
        assert torch.equal(m(x), full)  # the user's own forward pass runs to the end
        assert cap(x).shape[1] == 32 and deep(x).shape[1] == 128  # each capture stops at its own layer
        assert len(list_layers(m, x)) > 0


def test_token_options_are_refused_for_other_outputs():
    # prefix_tokens / num_prefix_tokens only apply to (N, T, D) outputs; for maps and vectors they were ignored
    x, _ = fmnist("test", 4)
    with pytest.raises(
        ConfigError,
        match=r"prefix_tokens='channels' sets how extra tokens of a token output \(N, T, D\) "
        r"are handled, but layer 'conv2' outputs shape \(32, 4, 4\) per image",
    ):
        LayerCapture(tiny_vgg(), "conv2", prefix_tokens="channels")(x)
    with pytest.raises(
        ConfigError,
        match=r"prefix_tokens='channels' and num_prefix_tokens=1 set .*'flatten' outputs "
        r"shape \(128,\)",
    ):
        LayerCapture(tiny_vgg(), "flatten", prefix_tokens="channels", num_prefix_tokens=1)(x)
    assert LayerCapture(TinyViT().eval(), "block", prefix_tokens="channels", num_prefix_tokens=1)(x).shape == (
        4,
        48,
        4,
        4,
    )


def test_default_layer_roles_by_layer():
    from cladec.capture import default_layer_roles
    from cladec.models import create_model

    assert default_layer_roles(create_model("vgg-paper", width=0.25)) == {"conv4": ["last"], "conv2": ["middle"]}
    assert default_layer_roles(nn.Linear(2, 2)) == {}
    shared = nn.Sequential(nn.Linear(2, 2))
    shared.default_layers = {"last": "0", "middle": "0"}  # type: ignore[assignment]  # a tiny model: one layer, both roles
    assert default_layer_roles(shared) == {"0": ["last", "middle"]}
