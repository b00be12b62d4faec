"""``cladec evaluate`` and ``cladec sweep`` subcommands (registered by :mod:`cladec.cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from .._errors import ConfigError
from ..evaluation.outputs import format_eval_table
from ..evaluation.sweep_summary import format_summary_table
from ._args import csv_list as _csv_list
from ._args import importable_cwd, parse_device, refuse_ignored
from ._args import learning_rate as _learning_rate
from ._args import pos_int as _pos_int
from ._args import seed_int as _seed_int

__all__ = ["register", "cmd_evaluate", "cmd_sweep"]


def register(subparsers: Any) -> None:
    """Add the ``evaluate`` and ``sweep`` subcommands to an argparse ``subparsers`` object.

    Each parser gets ``func`` (the handler, called with the parsed namespace, returning an exit code).

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None.

    Examples:
        >>> import argparse
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
    p.add_argument("--limit", type=_pos_int, default=None, help="use the first N images of the split")
    p.add_argument(
        "--train-limit",
        type=_pos_int,
        default=None,
        help="training images for the evaluation classifiers (default: the run's limit)",
    )
    p.add_argument(
        "--no-eval-classifier", action="store_true", help="skip training the evaluation classifiers (the slow part)"
    )
    p.add_argument(
        "--eval-epochs",
        type=_pos_int,
        default=None,
        help="epochs of each evaluation classifier (default: the run's epochs)",
    )
    p.add_argument(
        "--eval-arch",
        default=None,
        help="architecture of the evaluation classifier (default: that of the run's classifier)",
    )
    p.add_argument("--data-root", default=None, help="data root (default: the run's, else $CLADEC_DATA)")
    p.add_argument("--seed", type=_seed_int, default=0, help="seed of the evaluation classifiers")
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_evaluate)

    s = subparsers.add_parser(
        "sweep",
        help="fit and evaluate ClaDec over layers × α values × seeds (resumable)",
        description="Fit ClaDec for every (layer, α, seed) and one RefAE per (layer, seed), evaluate each, and "
        "write summary.csv, summary.json and tradeoff.png. Re-running resumes; new α values / seeds / layers "
        "may be added.",
    )
    s.add_argument("--model", required=True, help="classifier checkpoint directory (`cladec train-classifier`)")
    s.add_argument("--dataset", required=True, help="data set name, e.g. fashion-mnist, mnist, cifar10")
    s.add_argument("--layers", required=True, type=_csv_list(str, "--layers"), help="comma-separated layer names")
    s.add_argument(
        "--alphas",
        type=_csv_list(float, "--alphas"),
        default=None,
        help="comma-separated α values (default: 0,0.001,0.01,0.1,0.5,0.9,0.99,0.999,1)",
    )
    s.add_argument("--seeds", type=_csv_list(_seed_int, "--seeds"), default=[0], help="comma-separated seeds (0)")
    s.add_argument("--epochs", type=_pos_int, default=5, help="decoder epochs per cell (5)")
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--limit", type=_pos_int, default=None, help="training images per cell (default: all)")
    s.add_argument("--test-limit", type=_pos_int, default=2000, help="test images for the evaluation (2000)")
    s.add_argument("--size", type=_pos_int, default=None, help="resize images (default: the classifier's size)")
    s.add_argument("--no-eval-classifier", action="store_true", help="skip the evaluation classifiers")
    s.add_argument("--eval-epochs", type=_pos_int, default=None, help="epochs of the evaluation classifiers")
    s.add_argument("--batch-size", type=_pos_int, default=128, help="decoder batch size (128)")
    s.add_argument("--lr", type=_learning_rate, default=3e-4, help="decoder learning rate (3e-4)")
    s.add_argument("--decoder-norm", default=None, choices=["batch"], help="normalisation in the decoder")
    s.add_argument("--data-root", default=None, help="data root (default: $CLADEC_DATA / user cache)")
    s.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_sweep)


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


def cmd_sweep(args: argparse.Namespace) -> int:
    """Handler of ``cladec sweep``.

    Args:
        args: The parsed arguments (see :func:`register`).

    Returns:
        0 on success (errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> import shutil
        >>> from cladec.cli import build_parser
        >>> _ = shutil.copytree(sweep_dir, "sweep")  # a finished sweep: the same command resumes it, fitting nothing
        >>> cmd_sweep(build_parser().parse_args([
        ...     "sweep", "--model", str(clf_dir), "--dataset", "fashion-mnist-mini", "--layers", "conv2",
        ...     "--alphas", "0,0.001", "--epochs", "1", "--limit", "500", "--test-limit", "100",
        ...     "--no-eval-classifier", "--lr", "3e-3", "--batch-size", "32", "--out", "sweep", "-q",
        ... ]))
        layer   method    alpha  seeds  mse     ssim    accuracy  eval_accuracy
        conv2   original         1      0.0000  1.0000  ...
        conv2   refae            1      ...
        conv2   cladec    0      1      ...
        conv2   cladec    0.001  1      ...
        wrote sweep/summary.csv, summary.json, tradeoff.png
        0
    """
    import math

    from ..defaults import DEFAULT_ALPHAS
    from ..evaluation.sweep import run_sweep

    dev = parse_device(args.device)  # before any work (and before the sweep directory is written)
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ConfigError(f"--lr must be a positive number, got {args.lr}")
    if args.no_eval_classifier:
        refuse_ignored(args, ("eval_epochs",))
    importable_cwd()  # as every command that loads models does
    summary = run_sweep(
        args.out,
        classifier_dir=args.model,
        dataset=args.dataset,
        layers=args.layers,
        alphas=args.alphas if args.alphas is not None else DEFAULT_ALPHAS,
        seeds=args.seeds,
        epochs=args.epochs,
        limit=args.limit,
        test_limit=args.test_limit,
        data_root=args.data_root,
        size=args.size,
        eval_classifier=not args.no_eval_classifier,
        eval_epochs=args.eval_epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        decoder_norm=args.decoder_norm,
        device=dev,
        verbose=not args.quiet,
    )
    print(format_summary_table(summary))
    print(f"wrote {args.out}/summary.csv, summary.json, tradeoff.png")
    return 0
