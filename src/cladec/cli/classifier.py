"""``cladec train-classifier``."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import OPTION_NAMES, add_common, json_kwargs, learning_rate, parse_input_norm, pos_float, pos_int
from ._data_args import add_lazy_options

__all__ = ["register", "cmd_train_classifier"]


def register(subparsers: Any) -> None:
    """Add ``train-classifier`` to ``ArgumentParser.add_subparsers()`` (``func``: :func:`cmd_train_classifier`).

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); register(p.add_subparsers(dest="command"))
        >>> p.parse_args(["train-classifier", "--dataset", "mnist", "--out", "clf"]).func.__name__
        'cmd_train_classifier'
    """
    t = subparsers.add_parser(
        "train-classifier",
        help="train a classifier (vgg-paper, resnet10, resnet18, torchvision:NAME, timm:NAME) and save a checkpoint",
        description="Train a registered architecture or a torchvision/timm model (random init, or --pretrained to "
        "fine-tune) with SGD + momentum and step decay (the ClaDec authors' recipe) and save it as a checkpoint "
        "directory (model.safetensors + classifier.json) that records the model, the data set, its image size "
        "and classes, and the test accuracy.",
    )
    t.add_argument(
        "--dataset", required=True, help="fashion-mnist, mnist, cifar10, fashion-mnist-mini, imagefolder:PATH"
    )
    arch = (
        "architecture: vgg-paper (default), resnet10, resnet18, or torchvision:NAME / timm:NAME for the data's classes"
    )
    t.add_argument("--arch", default="vgg-paper", help=arch)
    kw_help = "arguments for a torchvision:/timm: --arch, e.g. '{\"img_size\": 64}' for a timm ViT"
    t.add_argument("--arch-kwargs", type=json_kwargs, metavar="JSON", help=kw_help)
    pre = "fine-tune a torchvision:/timm: --arch from its library's pretrained weights (downloaded; new head)"
    t.add_argument("--pretrained", action="store_true", help=pre)
    t.add_argument("--epochs", type=pos_int, default=5, help="epochs (default: 5)")
    t.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    t.add_argument("--size", type=pos_int, default=None, help="resize images to SIZE×SIZE (the paper uses 32)")
    t.add_argument("--limit", type=pos_int, default=None, help="use the first N training images")
    t.add_argument("--test-limit", type=pos_int, default=None, help="use the first N test images")
    t.add_argument(
        "--batch-size",
        type=pos_int,
        default=128,
        help="batch size (default: 128); under torchrun the global batch, split over the ranks "
        "(a multiple of their number)",
    )
    t.add_argument("--lr", type=learning_rate, default=0.1, help="initial SGD learning rate (default: 0.1)")
    t.add_argument("--width", type=pos_float, default=None, help="channel width multiplier (default: 1.0)")
    t.add_argument(
        "--input-norm",
        metavar="MEAN,STD",
        help="normalise images before the model, e.g. '0.286,0.353' (default: none; a library model's metadata's)",
    )
    t.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    add_lazy_options(t)
    add_common(t)
    t.set_defaults(func=cmd_train_classifier)


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Handler of ``cladec train-classifier`` (:func:`cladec.models.training.train_checkpoint`).

    Examples:
        >>> from cladec.cli import main
        >>> main(["train-classifier", "--dataset", "fashion-mnist-mini", "--width", "0.25", "--epochs", "1",
        ...       "--limit", "1000", "--test-limit", "200", "--out", "clf", "-q"])
        test accuracy ... on 200 fashion-mnist-mini test images (chance 0.10); trained in ... s
        wrote classifier checkpoint clf
        0
    """
    from ..models.training import train_checkpoint

    settings = "dataset arch epochs size limit test_limit batch_size lr width data_root download seed device".split()
    settings += ["arch_kwargs", "pretrained"]
    res = train_checkpoint(
        args.out,
        **{k: getattr(args, k) for k in [*settings, "lazy", "workers"]},
        input_norm=parse_input_norm(args.input_norm),
        verbose=not args.quiet,
        names=OPTION_NAMES,
    )
    print(f"{res['summary']}\nwrote classifier checkpoint {args.out}")
    return 0
