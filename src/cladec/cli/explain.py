"""``cladec explain``."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._errors import ConfigError
from ._args import add_common, importable_cwd, parse_device, pos_int

__all__ = ["register", "cmd_explain"]


def register(subparsers: Any) -> None:
    """Add ``explain`` to ``ArgumentParser.add_subparsers()`` (its ``func`` is :func:`cmd_explain`).

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); register(p.add_subparsers(dest="command"))
        >>> p.parse_args(["explain", "--run", "run", "--out", "t.png"]).n
        48
    """
    e = subparsers.add_parser(
        "explain",
        help="draw original | RefAE | ClaDec triplets of a run as a PNG grid",
        description="Load a run directory, reconstruct N images with its ClaDec and RefAE and save a labelled "
        "grid (true class and the classifier's prediction under every image; wrong predictions in red).",
    )
    e.add_argument("--run", required=True, metavar="DIR", help="run directory (made by `cladec fit`)")
    e.add_argument("--dataset", default=None, help="data set (default: the run's; same image shape needed)")
    e.add_argument("--n", type=pos_int, default=48, help="number of images (default: 48)")
    e.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    e.add_argument("--split", default="test", choices=["train", "test"], help="split to draw from (default: test)")
    e.add_argument("--columns", type=pos_int, default=6, help="triplets per row (default: 6)")
    add_common(e)
    e.set_defaults(func=cmd_explain)


def cmd_explain(args: argparse.Namespace) -> int:
    """Handler of ``cladec explain`` (:func:`cladec.runs.explain_run`): save a triplet grid of a run.

    Examples:
        >>> from cladec.cli import main
        >>> main(["explain", "--run", str(run_dir), "--n", "8", "--out", "triplets.png", "-q"])
        8 fashion-mnist-mini test images, layer conv2: MSE ClaDec ..., RefAE ...; classifier accuracy originals ...
        wrote triplets.png
        0
    """
    from ..runs import explain_run, load_run

    if not str(args.out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file, got {args.out!r}")
    dev = parse_device(args.device)
    importable_cwd()  # a run made with --factory imports the user's module again
    ex, info = explain_run(
        load_run(args.run, device=dev),
        n=args.n,
        split=args.split,
        dataset=args.dataset,
        data_root=args.data_root,
        seed=args.seed,
    )
    for note in info["notes"]:
        print(f"cladec: note: {note}", file=sys.stderr)
    ex.save_grid(args.out, columns=min(args.columns, len(ex)))
    print(info["summary"])
    print(f"wrote {args.out}")
    return 0
