"""The decoder builder reaches any image size exactly, with outputs in [0, 1]."""

import pytest
import torch

from cladec import ConfigError, build_decoder


@pytest.mark.parametrize(
    "in_shape,out_shape",
    [
        ((512,), (1, 28, 28)),
        ((512, 1, 1), (1, 32, 32)),
        ((128, 8, 8), (1, 32, 32)),
        ((128, 7, 7), (1, 28, 28)),
        ((256, 7, 7), (1, 32, 32)),
        ((64, 4, 4), (3, 64, 64)),
        ((10,), (3, 48, 80)),
        ((32, 28, 28), (1, 28, 28)),
        ((96, 14, 14), (3, 224, 224)),
    ],
)
def test_exact_output_size_and_range(in_shape, out_shape):
    d = build_decoder(in_shape, out_shape, base_width=16)
    y = d(torch.randn(3, *in_shape) * 5)
    assert y.shape == (3, *out_shape)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


def test_authors_architecture_for_a_512_vector():
    d = build_decoder((512,), (1, 32, 32))
    ups = [m for m in d.up if isinstance(m, torch.nn.ConvTranspose2d)]
    assert [m.out_channels for m in ups] == [512, 256, 128, 64, 1]
    assert all(m.kernel_size == (4, 4) and m.stride == (2, 2) for m in ups)
    assert isinstance(d.head[1], torch.nn.Linear) and d.head[1].out_features == 512


def test_spatial_head_is_a_3x3_conv_and_base_width_is_configurable():
    d = build_decoder((128, 8, 8), (1, 32, 32), base_width=32)
    assert isinstance(d.head[0], torch.nn.Conv2d) and d.head[0].kernel_size == (3, 3)
    assert [m.out_channels for m in d.up if isinstance(m, torch.nn.ConvTranspose2d)] == [32, 1]


def test_output_bias_starts_at_data_mean():
    d = build_decoder((16,), (1, 28, 28))
    for p in d.parameters():
        torch.nn.init.zeros_(p)
    d.init_output_bias(0.286)
    assert torch.allclose(d(torch.zeros(2, 16)), torch.full((2, 1, 28, 28), 0.286), atol=1e-4)


def test_bad_shapes():
    with pytest.raises(ConfigError, match="C in 1 or 3"):
        build_decoder((16,), (2, 28, 28))
    with pytest.raises(ConfigError, match=r"\(D,\) or \(C, H, W\)"):
        build_decoder((4, 4), (1, 28, 28))


def test_dense_head_is_capped_at_max_width():
    d = build_decoder((4096,), (1, 28, 28), max_width=256)
    assert d.head[1].out_features == 256
    assert build_decoder((512,), (1, 32, 32)).head[1].out_features == 512  # the authors' 512-d case


@pytest.mark.parametrize("out_shape", [(1, 32, 32), (3, 28, 28), (1, 28, 1), (1, 2, 2)])
def test_first_stage_on_a_point_equals_the_transposed_convolution(out_shape):
    # the dense head's first up-stage is computed as a matrix product; it must equal the module's own call
    torch.manual_seed(0)
    dec = build_decoder((64,), out_shape)
    a = torch.randn(5, 64)
    h = dec.head(a)
    conv = dec.up[0]
    want = conv(h.view(5, -1, 1, 1))
    for m in list(dec.up)[1:]:
        want = m(want)
    got = dec(a)
    torch.testing.assert_close(got, dec.out(want), rtol=1e-5, atol=1e-6)
    assert got.shape[1:] == out_shape


def test_hooks_on_the_first_stage_still_fire():
    # with a hook on the first transposed convolution the module is called as usual (and gives the same result)
    torch.manual_seed(0)
    dec = build_decoder((64,), (1, 28, 28))
    a = torch.randn(3, 64)
    plain = dec(a)
    seen = []
    h = dec.up[0].register_forward_hook(lambda m, i, o: seen.append(tuple(o.shape)))
    hooked = dec(a)
    h.remove()
    assert seen == [(3, dec.up[0].out_channels, 2, 2)]
    torch.testing.assert_close(hooked, plain, rtol=1e-5, atol=1e-6)
    # global module hooks (profilers, tracing tools) see every stage too
    calls = []
    h = torch.nn.modules.module.register_module_forward_hook(lambda m, i, o: calls.append(type(m).__name__))
    try:
        dec(a)
    finally:
        h.remove()
    n_up = sum(isinstance(m, torch.nn.ConvTranspose2d) for m in dec.up)
    assert calls.count("ConvTranspose2d") == n_up
