"""The options of a model source (``--model torchvision:NAME`` / ``timm:NAME``) for commands that take only
``--model``, not ``--factory`` (``cladec sweep``), and ``--layout`` (torch-free)."""

from __future__ import annotations

import argparse

from ._args import json_kwargs, pos_int

__all__ = ["add_source_options", "add_layout"]


def add_layout(p: argparse.ArgumentParser) -> None:
    """Add ``--layout nchw|nhwc|tokens|flat`` (the layer output's layout; default: detected)."""
    text = "the layer output's layout: (N,C,H,W), channels-last (N,H,W,C), (N,T,D), (N,D) (default: detected)"
    p.add_argument("--layout", choices=["nchw", "nhwc", "tokens", "flat"], help=text)


def add_source_options(p: argparse.ArgumentParser) -> None:
    """Add ``--weights``, ``--num-classes``, ``--pretrained``, ``--factory-kwargs`` (a ``--model`` source's) and
    ``--layout``.

    Examples:
        >>> p = argparse.ArgumentParser(); add_source_options(p)
        >>> p.parse_args(["--num-classes", "10", "--layout", "nhwc"]).num_classes
        10
    """
    g = p.add_argument_group("a --model source (torchvision:NAME, timm:NAME)")
    g.add_argument("--weights", metavar="FILE", help="weights (.safetensors or a state dict, read weights_only)")
    g.add_argument("--num-classes", type=pos_int, metavar="N", help="its number of classes (default: the library's)")
    g.add_argument("--pretrained", action="store_true", help="with its library's pretrained weights (downloaded)")
    kw = "arguments for its library, e.g. '{\"img_size\": 64}'"
    g.add_argument("--factory-kwargs", type=json_kwargs, metavar="JSON", help=kw)
    add_layout(p)
