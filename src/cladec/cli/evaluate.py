"""``cladec evaluate``."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import importable_cwd, parse_device, pos_int, refuse_ignored, seed_int

__all__ = ["register", "cmd_evaluate"]


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` subcommand to an argparse ``subparsers`` object (its ``func`` is :func:`cmd_evaluate`).

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None.

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> p.parse_args(["evaluate", "--run", "run", "--out", "eval"]).command
        'evaluate'
    """
    p = subparsers.add_parser(
        "evaluate",
        help="evaluate a run: MSE/PSNR/SSIM, classifier accuracy on reconstructions, evaluation classifier",
        description="Evaluate a run directory's ClaDec and RefAE on the test split and write metrics.json, "
        "metrics.csv, per_class.csv and plots to --out.",
    )
    p.add_argument("--run", required=True, help="run directory (made by `cladec fit`)")
    p.add_argument(
        "--dataset", default=None, help="data set to evaluate on (default: the run's; must have the same image shape)"
    )
    p.add_argument("--out", default=None, help="output directory (default: RUN/eval)")
    p.add_argument("--split", default="test", choices=["train", "test"], help="split to evaluate on (test)")
    p.add_argument("--limit", type=pos_int, default=None, help="use the first N images of the split")
    p.add_argument(
        "--train-limit",
        type=pos_int,
        default=None,
        help="training images for the evaluation classifiers (default: the run's limit)",
    )
    p.add_argument(
        "--no-eval-classifier", action="store_true", help="skip training the evaluation classifiers (the slow part)"
    )
    p.add_argument(
        "--eval-epochs",
        type=pos_int,
        default=None,
        help="epochs of each evaluation classifier (default: the run's epochs)",
    )
    p.add_argument(
        "--eval-arch",
        default=None,
        help="architecture of the evaluation classifier (default: that of the run's classifier)",
    )
    p.add_argument("--data-root", default=None, help="data root (default: the run's, else $CLADEC_DATA)")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the evaluation classifiers")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``cladec evaluate``.

    Args:
        args: The parsed arguments (see :func:`register`).

    Returns:
        0 on success (errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> from cladec.cli import build_parser
        >>> args = build_parser().parse_args(
        ...     ["evaluate", "--run", str(run_dir), "--limit", "100", "--no-eval-classifier", "--out", "eval", "-q"]
        ... )
        >>> cmd_evaluate(args)
        layer conv2, α = 0.001, 100 test images
        image set  mse     psnr  ssim    accuracy  agreement  eval_accuracy
        original   0.0000  -     1.0000  ...
        cladec     ...
        refae      ...
        wrote eval
        0
    """
    from ..evaluation.evaluate import evaluate_run
    from ..evaluation.outputs import format_eval_table

    dev = parse_device(args.device)  # before any work: a bad --device is a usage error, not a traceback
    if args.no_eval_classifier:
        refuse_ignored(args, ("train_limit", "eval_epochs", "eval_arch"))
    importable_cwd()  # a run fitted with --factory PKG.MOD:FN imports its model from here, as explain does
    res = evaluate_run(
        args.run,
        split=args.split,
        limit=args.limit,
        data_root=args.data_root,
        dataset=args.dataset,
        eval_classifier=not args.no_eval_classifier,
        eval_epochs=args.eval_epochs,
        eval_arch=args.eval_arch,
        train_limit=args.train_limit,
        out=args.out,
        seed=args.seed,
        device=dev,
        verbose=not args.quiet,
    )
    print(format_eval_table(res))
    print(f"wrote {res['out']}")
    return 0
