"""`cladec demo`."""

from __future__ import annotations

import argparse

from ._args import parse_device


def cmd_demo(args: argparse.Namespace) -> int:
    """Handler of ``cladec demo`` (see :func:`cladec.demo.run_demo`).

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
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
