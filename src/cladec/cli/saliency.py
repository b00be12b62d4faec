"""`cladec compare-saliency`."""

from __future__ import annotations

import argparse
from typing import Any

from ..defaults import DEFAULT_METHODS
from ._args import csv_list, pos_int, seed_int

__all__ = ["register", "cmd_compare_saliency"]


def register(subparsers: Any) -> None:
    """Add the ``compare-saliency`` subcommand to an argparse ``subparsers`` object.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None (the parser's ``func`` is :func:`cmd_compare_saliency`).

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> p.parse_args(["compare-saliency", "--run", "r", "--out", "c"]).methods
        'cladec,saliency,input-x-gradient,integrated-gradients,guided-backprop,gradcam,guided-gradcam,occlusion,random,sobel'
    """
    p = subparsers.add_parser(
        "compare-saliency",
        help="score ClaDec relevance maps against saliency methods (deletion/insertion, ROAD, ROAR)",
        description="Compute ClaDec relevance maps and captum saliency baselines for a run's classifier and "
        "score them by deletion/insertion AUC, ROAD and ROAR. Writes results.json, results.csv, curves.png "
        "and maps.png to --out; finished units are kept there and skipped when run again.",
    )
    p.add_argument("--run", required=True, help="run directory (made by `cladec fit`)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--dataset", default=None, help="data set (default: the run's)")
    p.add_argument(
        "--methods",
        default=",".join(DEFAULT_METHODS),
        help="comma-separated methods: cladec, cladec-<variant>, saliency, input-x-gradient, "
        "integrated-gradients, guided-backprop, gradcam, guided-gradcam, occlusion, random, sobel",
    )
    p.add_argument(
        "--scores",
        default="deletion,insertion,road",
        help="comma-separated scores: deletion, insertion, road, roar (default: all but roar)",
    )
    p.add_argument("--n", type=pos_int, default=200, help="test images scored (200)")
    p.add_argument("--roar-k", default="10,30,50,70,90", help="ROAR percentages in [0, 100) (10,30,50,70,90)")
    p.add_argument(
        "--roar-epochs",
        type=pos_int,
        default=None,
        help="epochs of each ROAR retraining (default: the classifier's own)",
    )
    p.add_argument("--seeds", type=csv_list(seed_int, "--seeds"), default=[0], help="comma-separated seeds (0)")
    p.add_argument("--data-root", default=None, help="data root (default: the run's, else $CLADEC_DATA)")
    p.add_argument("--limit", type=pos_int, default=5000, help="training images for ROAR retraining (5000)")
    p.add_argument("--steps", type=pos_int, default=32, help="deletion/insertion steps (32)")
    p.add_argument(
        "--insertion-start",
        default="zero",
        choices=["zero", "blur", "mean"],
        help="image insertion starts from (zero = black, default)",
    )
    p.add_argument(
        "--deletion-baseline",
        default="zero",
        choices=["zero", "blur", "mean"],
        help="what deleted pixels become (zero = black, default)",
    )
    p.add_argument(
        "--gradcam-layer",
        default=None,
        help="layer for Grad-CAM / guided Grad-CAM, with a spatial map larger than 1×1 (default: the "
        "run's layer if it has one, else the classifier's last layer that has one)",
    )
    p.add_argument("--device", default=None, help="device (default: cuda if available, else cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=cmd_compare_saliency)


def cmd_compare_saliency(args: argparse.Namespace) -> int:
    """Handler of ``cladec compare-saliency``.

    Args:
        args: The parsed arguments (see :func:`register`).

    Returns:
        0 on success (errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> from cladec.cli import build_parser
        >>> args = build_parser().parse_args(["compare-saliency", "--run", str(run_dir), "--out", "cmp",
        ...                                   "--methods", "cladec,gradcam", "--scores", "deletion", "--n", "8",
        ...                                   "--steps", "8", "--quiet"])
        >>> cmd_compare_saliency(args)
        method ...
        cladec ...
        gradcam ...
        0
    """
    from ..saliency.compare import compare_saliency
    from ..saliency.methods import canonical_method
    from ..saliency.results import format_table
    from ..saliency.roar import check_roar_k
    from ..saliency.scores import check_scores

    # validate before loading anything
    methods = [canonical_method(m) for m in args.methods.split(",") if m.strip()]
    scores = check_scores(args.scores)
    ks = check_roar_k(args.roar_k)
    res = compare_saliency(
        args.run,
        out=args.out,
        methods=methods,
        scores=scores,
        n=args.n,
        roar_k=ks,
        roar_epochs=args.roar_epochs,
        roar_train_limit=args.limit,
        seeds=args.seeds,
        dataset=args.dataset,
        data_root=args.data_root,
        steps=args.steps,
        insertion_start=args.insertion_start,
        deletion_baseline=args.deletion_baseline,
        device=args.device,
        layer=args.gradcam_layer,
        verbose=not args.quiet,
    )
    print(format_table(res))
    print(f"wrote {args.out}")
    return 0
