"""``cladec sweep``."""

from __future__ import annotations

import argparse
from typing import Any

from ..defaults import DEFAULT_ALPHAS
from ._args import (
    OPTION_NAMES,
    csv_list,
    importable_cwd,
    learning_rate,
    parse_device,
    pos_int,
    refuse_ignored,
    seed_int,
)
from ._source_options import add_source_options
from ._train_options import add_recipe_option

__all__ = ["register", "cmd_sweep"]


def register(subparsers: Any) -> None:
    """Add the ``sweep`` subcommand to an argparse ``subparsers`` object (its ``func`` is :func:`cmd_sweep`).

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None.

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> args = p.parse_args(["sweep", "--model", "c", "--dataset", "mnist", "--layers", "conv2,last", "--out", "s"])
        >>> args.layers, args.seeds
        (['conv2', 'last'], [0])
    """
    s = subparsers.add_parser(
        "sweep",
        help="fit and evaluate ClaDec over layers × α values × seeds (resumable)",
        description="Fit ClaDec for every (layer, α, seed) and one RefAE per (layer, seed), evaluate each, and "
        "write summary.csv, summary.json and tradeoff.png. Re-running resumes; new α values / seeds / layers "
        "may be added.",
    )
    model_help = "classifier checkpoint folder (`cladec train-classifier`), or a model: torchvision:NAME, timm:NAME"
    s.add_argument("--model", required=True, metavar="DIR|SOURCE", help=model_help)
    add_source_options(s)
    s.add_argument("--dataset", required=True, help="data set name, e.g. fashion-mnist, mnist, cifar10")
    s.add_argument("--layers", required=True, type=csv_list(str, "--layers"), help="comma-separated layer names")
    s.add_argument(
        "--alphas",
        type=csv_list(float, "--alphas"),
        default=None,
        help=f"comma-separated α values (default: {','.join(f'{a:g}' for a in DEFAULT_ALPHAS)})",
    )
    s.add_argument("--seeds", type=csv_list(seed_int, "--seeds"), default=[0], help="comma-separated seeds (0)")
    s.add_argument("--epochs", type=pos_int, default=5, help="decoder epochs per cell (5)")
    s.add_argument("--out", required=True, help="sweep directory")
    s.add_argument("--limit", type=pos_int, default=None, help="training images per cell (default: all)")
    s.add_argument("--test-limit", type=pos_int, default=2000, help="test images for the evaluation (2000)")
    s.add_argument("--size", type=pos_int, default=None, help="resize images (default: the classifier's size)")
    s.add_argument("--no-eval-classifier", action="store_true", help="skip the evaluation classifiers")
    s.add_argument("--eval-epochs", type=pos_int, default=None, help="epochs of the evaluation classifiers")
    s.add_argument(
        "--batch-size", type=pos_int, default=128, help="decoder batch size (128; under torchrun the global batch)"
    )
    s.add_argument("--lr", type=learning_rate, default=None, help="decoder learning rate (default: the recipe's)")
    add_recipe_option(s, "sweep.json")
    s.add_argument("--decoder-norm", default=None, choices=["batch"], help="normalisation in the decoder")
    arch_help = "decoder architecture (auto: the paper's up to 32 px, else scaled)"
    s.add_argument(
        "--decoder", dest="decoder_arch", default="auto", choices=["auto", "paper", "scaled"], help=arch_help
    )
    s.add_argument("--data-root", default=None, help="data root (default: $CLADEC_DATA / user cache)")
    s.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    s.add_argument("-q", "--quiet", action="store_true", help="no progress output")
    s.set_defaults(func=cmd_sweep)


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
    from ..evaluation.sweep import run_sweep
    from ..evaluation.sweep_summary import format_summary_table

    dev = parse_device(args.device)  # before any work (and before the sweep directory is written)
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
        recipe=args.recipe,
        decoder_norm=args.decoder_norm,
        decoder_arch=args.decoder_arch,
        weights=args.weights,
        num_classes=args.num_classes,
        pretrained=args.pretrained,
        factory_kwargs=args.factory_kwargs,
        layout=args.layout,
        names=OPTION_NAMES,
        device=dev,
        verbose=not args.quiet,
    )
    print(format_summary_table(summary))
    print(f"wrote {args.out}/summary.csv, summary.json, tradeoff.png")
    return 0
