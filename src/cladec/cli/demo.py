"""``cladec demo``."""

from __future__ import annotations

import argparse
from typing import Any

from ..defaults import DEMO_SETTINGS
from ._args import add_common, parse_device, pos_float, pos_int

__all__ = ["register", "cmd_demo"]


def register(subparsers: Any) -> None:
    """Add the ``demo`` subcommand to an argparse ``subparsers`` object (its ``func`` is :func:`cmd_demo`).

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None.

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> p.parse_args(["demo", "--quick"]).out
        'cladec-demo'
    """
    d = subparsers.add_parser(
        "demo",
        help="train a classifier on embedded data, fit ClaDec + RefAE on two layers, write triplets and a summary",
        description="The end-to-end demo. With no arguments (and no network) it trains the paper's VGG-style "
        "classifier on the embedded Fashion-MNIST subset 'fashion-mnist-mini' (6,000 training / 1,000 test "
        "images), fits ClaDec (α = 0.001) and the reference auto-encoder (RefAE) on the classifier's last "
        "and middle layers, and writes triplet grids (original | RefAE | ClaDec), summary.json and "
        "summary.txt (and an HTML report when available) to --out. A few minutes on a laptop CPU; --quick "
        "runs a smaller version in about a minute.",
    )
    d.add_argument("--out", default="cladec-demo", metavar="DIR", help="output folder (default: cladec-demo)")
    d.add_argument(
        "--quick", action="store_true", help="smaller and faster (quarter-width classifier, fewer images and epochs)"
    )
    d.add_argument(
        "--dataset",
        default="fashion-mnist-mini",
        help="data set: fashion-mnist-mini (embedded, default), fashion-mnist, mnist, cifar10, imagefolder:PATH",
    )
    d.add_argument("--arch", default="vgg-paper", help="classifier architecture (default: vgg-paper)")
    full, quick = DEMO_SETTINGS["full"], DEMO_SETTINGS["quick"]
    for option, key, kind, what in (
        ("--limit", "limit", pos_int, "training images"),
        ("--test-limit", "test_limit", pos_int, "test images for the metrics"),
        ("--epochs", "epochs", pos_int, "classifier epochs"),
        ("--decoder-epochs", "decoder_epochs", pos_int, "ClaDec and RefAE epochs"),
        ("--width", "width", pos_float, "classifier width multiplier"),
    ):
        d.add_argument(
            option, type=kind, default=None, help=f"{what} (default: {full[key]:g}; {quick[key]:g} with --quick)"
        )
    d.add_argument("--n-images", type=pos_int, default=24, help="test images per triplet grid (default: 24)")
    d.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    d.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    add_common(d)
    d.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """Handler of ``cladec demo`` (see :func:`cladec.demo.run_demo`).

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> from cladec.cli import main
        >>> main(["demo", "--quick"])  # takes about a minute  # doctest: +SKIP
        0
    """
    from ..demo import run_demo

    dev = parse_device(args.device)  # before any work: a bad --device is a usage error
    run_demo(
        args.out,
        quick=args.quick,
        dataset=args.dataset,
        data_root=args.data_root,
        device=str(dev),
        arch=args.arch,
        limit=args.limit,
        test_limit=args.test_limit,
        epochs=args.epochs,
        decoder_epochs=args.decoder_epochs,
        width=args.width,
        n_images=args.n_images,
        seed=args.seed,
        download=args.download,
        report=not args.no_report,
        verbose=not args.quiet,
    )
    return 0
