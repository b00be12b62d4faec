"""``cladec report``."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import pos_int

__all__ = ["register", "cmd_report"]


def register(subparsers: Any) -> None:
    """Add the ``report`` subcommand to an argparse ``subparsers`` object (its ``func`` is :func:`cmd_report`).

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None.

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> p.parse_args(["report", "runs/conv4", "--out", "site"]).n_images
        48
    """
    r = subparsers.add_parser(
        "report",
        help="write a static HTML report (gallery, metrics, plots) of a run, evaluation, sweep or demo directory",
        description="Write a self-contained static HTML report to --out: a gallery of original | RefAE | ClaDec "
        "triplets with difference maps and the classifier's predictions (filter by class and by correct / "
        "incorrect prediction, sort by error, an α slider for sweeps, layers side by side), the run "
        "configuration, and the tables and plots of the evaluation, sweep and saliency comparison found in the "
        "source. Open OUT/index.html in a browser; it needs no network.",
    )
    r.add_argument(
        "source",
        metavar="RUN_OR_EVAL_DIR",
        help="a run (run.json), evaluation (metrics.json), sweep (sweep.json) or demo (runs/<layer>/) directory",
    )
    r.add_argument("--out", required=True, help="output folder (new, empty, or an earlier report, which is replaced)")
    r.add_argument("--n-images", type=pos_int, default=48, help="test images in the gallery (default 48)")
    r.add_argument(
        "--data-root",
        default=None,
        metavar="PATH",
        help="folder holding the data set (default: the run's, else $CLADEC_DATA / the user cache)",
    )
    r.add_argument("--device", default=None, help="device for the reconstructions (default: cpu)")
    r.add_argument("--title", default=None, help="page title")
    r.set_defaults(func=cmd_report)


def cmd_report(args: argparse.Namespace) -> int:
    """Handler of ``cladec report``: build the site and print where ``index.html`` is.

    Args:
        args: The parsed namespace (``source``, ``out``, ``n_images``, ``data_root``, ``device``, ``title``).

    Returns:
        0 on success (errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> cmd_report(argparse.Namespace(source=str(run_dir), out="site", n_images=8, data_root=None,
        ...                               device=None, title=None))
        wrote site/index.html
        0
    """
    from ..report.build import build_report

    index = build_report(
        args.source, args.out, n_images=args.n_images, data_root=args.data_root, device=args.device, title=args.title
    )
    print(f"wrote {index}")
    return 0
