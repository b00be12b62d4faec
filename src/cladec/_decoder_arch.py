"""Decoder building blocks: the size chain, the stride-2 up-stage and the scaled decoder's layers.

Held here (a private module) so that :mod:`cladec.decoder` stays small; the public names are re-exported
there (:func:`cladec.decoder.choose_arch`).
"""

from __future__ import annotations

import math
from typing import Any

from torch import nn

__all__ = [
    "ARCHS",
    "AUTO_MAX_CHANNELS",
    "AUTO_MAX_SIDE",
    "choose_arch",
    "scaled_layers",
    "size_chain",
    "up_conv",
    "up_stages",
]

#: The built decoders' architectures (``"auto"`` picks one of them per layer and image shape).
ARCHS = ("paper", "scaled")
#: ``"auto"`` keeps the paper decoder up to this image side (px) ...
AUTO_MAX_SIDE = 32
#: ... for vectors, 1×1 maps and maps of up to this many channels; anything larger gets the scaled decoder.
AUTO_MAX_CHANNELS = 512


def choose_arch(in_shape: tuple[int, ...], out_shape: tuple[int, ...]) -> str:
    """The architecture ``arch="auto"`` builds for these shapes (the rule is in :mod:`cladec.decoder`'s docs).

    Args:
        in_shape: Activation shape without batch, ``(D,)`` or ``(C, H, W)``.
        out_shape: Image shape ``(C, H, W)``.

    Returns:
        ``"paper"`` for images of at most :data:`AUTO_MAX_SIDE` px a side from vectors, 1×1 maps or maps of at
        most :data:`AUTO_MAX_CHANNELS` channels (the paper's settings), else ``"scaled"``.

    Examples:
        >>> choose_arch((128, 1, 1), (1, 28, 28)), choose_arch((2048, 7, 7), (3, 224, 224))
        ('paper', 'scaled')
    """
    side = max(int(s) for s in tuple(out_shape)[1:])
    point = len(in_shape) == 1 or tuple(in_shape[1:]) == (1, 1)  # the paper's dense head: capped at max_width
    return "paper" if side <= AUTO_MAX_SIDE and (point or int(in_shape[0]) <= AUTO_MAX_CHANNELS) else "scaled"


def size_chain(target: int, n: int) -> list[int]:
    """Sizes from the seed to ``target`` over ``n`` halvings (ceil), seed first."""
    sizes = [target]
    for _ in range(n):
        sizes.append(math.ceil(sizes[-1] / 2))
    return sizes[::-1]


def up_conv(
    cin: int, cout: int, h_in: tuple[int, int], h_out: tuple[int, int], bias: bool = True
) -> nn.ConvTranspose2d:
    """A kernel-4, stride-2 transposed convolution from ``h_in`` to ``h_out`` (each side ``2h`` or ``2h − 1``)."""
    # out = 2h + 2 - 2p + op. p=1, op=0 -> 2h; p=2, op=1 -> 2h - 1.
    pads, ops = [], []
    for a, b in zip(h_in, h_out, strict=True):
        if b == 2 * a:
            pads.append(1)
            ops.append(0)
        elif b == 2 * a - 1:
            pads.append(2)
            ops.append(1)
        else:  # pragma: no cover - the chain construction never asks for this
            raise AssertionError((a, b))
    padding, output_padding = (pads[0], pads[1]), (ops[0], ops[1])  # one per spatial dimension
    return nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=padding, output_padding=output_padding, bias=bias)


def scaled_layers(spec: Any) -> tuple[nn.Sequential, tuple[int, int] | None, nn.Sequential]:
    """The scaled decoder's ``(head, resize, up)`` for a :class:`~cladec.decoder.DecoderSpec` (checked already).

    Head: a 1×1 convolution from the layer's ``C`` channels to the start width ``min(C, max_width,
    base_width·2^max(n−1, 1))`` (``n`` stages), or for vectors and 1×1 maps a ``Linear`` to a seed grid of about
    4×4 with ``min(that width, 2·base_width)`` channels. Then ``n`` kernel-4 stride-2 transposed convolutions
    that double the size while the width halves down to ``base_width`` (hidden widths ``max(base_width,
    start/2^(i+1))``, ReLU, BatchNorm with ``norm="batch"``), the last one to the image channels (``n = 0``: a 3×3
    convolution). ``resize``: the size the head's output is resized to (bilinear) when it is off the chain.
    """
    in_shape, (C, H, W) = tuple(spec.in_shape), spec.out_shape
    base, cap = spec.base_width, max(spec.max_width, spec.base_width)
    dense = len(in_shape) == 1 or (in_shape[1] == 1 and in_shape[2] == 1)
    if dense:
        n = max(math.ceil(math.log2(max(H, W) / 4)), 0) if max(H, W) > 4 else 0
    else:
        ratio = max(H / in_shape[1], W / in_shape[2])
        n = max(round(math.log2(ratio)), 0) if ratio > 1 else 0
    hs, ws = size_chain(H, n), size_chain(W, n)
    width = min(cap, base * 2 ** max(n - 1, 1))
    resize: tuple[int, int] | None = None
    if dense:
        flat = int(math.prod(in_shape))
        start = min(width, 2 * base)
        seed = (hs[0], ws[0])
        head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(flat, start * seed[0] * seed[1]),
            nn.ReLU(inplace=True),
            nn.Unflatten(1, (start, *seed)),
        )
    else:
        start = min(in_shape[0], width)
        head = nn.Sequential(nn.Conv2d(in_shape[0], start, 1), nn.ReLU(inplace=True))
        if (hs[0], ws[0]) != (in_shape[1], in_shape[2]):  # a seed off the size chain is resized once after the head
            resize = (hs[0], ws[0])
    widths = [max(min(base, start), start // 2 ** (i + 1)) for i in range(n - 1)]
    return head, resize, up_stages(start, widths, C, hs, ws, spec.norm)


def up_stages(
    cin: int, widths: list[int], out_channels: int, hs: list[int], ws: list[int], norm: str | None
) -> nn.Sequential:
    """The upsampling stages of both decoders: ``len(hs) - 1`` :func:`up_conv` stages along the size chain
    ``hs``/``ws``, with the output widths ``widths`` and then ``out_channels``, each but the last followed by
    BatchNorm (``norm == "batch"``) and ReLU; with no stage, one 3×3 convolution to ``out_channels``."""
    n = len(hs) - 1
    layers: list[nn.Module] = []
    for i in range(n):
        last = i == n - 1
        cout = out_channels if last else widths[i]
        layers.append(up_conv(cin, cout, (hs[i], ws[i]), (hs[i + 1], ws[i + 1])))
        if not last:
            if norm == "batch":
                layers.append(nn.BatchNorm2d(cout))
            layers.append(nn.ReLU(inplace=True))
        cin = cout
    if n == 0:
        layers.append(nn.Conv2d(cin, out_channels, 3, padding=1))
    return nn.Sequential(*layers)
