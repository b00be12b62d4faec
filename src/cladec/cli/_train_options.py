"""``cladec fit``'s training options: batch size, learning rate and recipe, the decoder's kind, compiling."""

from __future__ import annotations

import argparse

from ..defaults import DEFAULT_RECIPE, RECIPE_NAMES
from ._args import learning_rate, pos_int

__all__ = ["add_train_options", "add_recipe_option", "fraction", "positive_float"]


def add_train_options(f: argparse.ArgumentParser) -> None:
    """Add ``--batch-size``, ``--lr``, ``--recipe``, ``--decoder-norm``, ``--decoder``, ``--compile``, ``--resume``,
    ``--validation``, ``--until-mse`` and ``--patience``.

    Examples:
        >>> p = argparse.ArgumentParser(); add_train_options(p)
        >>> p.parse_args(["--recipe", "fast"]).recipe, p.parse_args([]).lr, p.parse_args(["--resume"]).resume
        ('fast', None, True)
    """
    batch_help = (
        "batch size (default: 128); under torchrun the global batch, split over the ranks (a multiple of their number)"
    )
    f.add_argument("--batch-size", type=pos_int, default=128, help=batch_help)
    f.add_argument(
        "--lr", type=learning_rate, help="Adam learning rate, the peak of a scheduled recipe (default: the recipe's)"
    )
    add_recipe_option(f, "run.json")
    f.add_argument("--decoder-norm", choices=["batch"], help="normalisation in the decoder (default: none)")
    arch_help = "decoder: the paper's, or scaled (1×1 reduction, halving widths); auto: paper up to 32 px (default)"
    f.add_argument(
        "--decoder", dest="decoder_arch", choices=["auto", "paper", "scaled"], default="auto", help=arch_help
    )
    f.add_argument(
        "--compile",
        nargs="?",
        const="default",
        metavar="MODE",
        choices=["default", "max-autotune-no-cudagraphs"],
        help="torch.compile the training losses: faster epochs after a compile of several seconds "
        "per model (worth it for long fits on a GPU); MODE: default or max-autotune-no-cudagraphs",
    )
    f.add_argument(
        "--resume",
        action="store_true",
        help="write an epoch checkpoint to OUT.checkpoint/ after every epoch; run the same command again after an "
        "interruption to go on from the last complete epoch (also on another number of ranks)",
    )
    stop = f.add_argument_group("held-out validation and stopping early")
    stop.add_argument(
        "--validation",
        type=fraction,
        metavar="FRACTION",
        help="hold out this fraction of the training images (e.g. 0.1) and show their reconstruction MSE (val_mse) "
        "after every epoch, in the progress bar and the history",
    )
    stop.add_argument(
        "--until-mse",
        type=positive_float,
        metavar="MSE",
        help="stop a fit after the first epoch whose val_mse is at most MSE (needs --validation; --epochs is then "
        "the most it takes)",
    )
    stop.add_argument(
        "--patience",
        type=pos_int,
        metavar="EPOCHS",
        help="stop a fit once val_mse has not improved for EPOCHS epochs (needs --validation)",
    )


def add_recipe_option(p: argparse.ArgumentParser, record: str) -> None:
    """Add ``--recipe`` (its choices the named recipes; recorded in ``record``).

    Examples:
        >>> p = argparse.ArgumentParser(); add_recipe_option(p, "run.json")
        >>> p.parse_args(["--recipe", "fast-cosine"]).recipe
        'fast-cosine'
    """
    p.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=DEFAULT_RECIPE,
        help=f"training recipe (default: {DEFAULT_RECIPE}): paper (Adam 3e-4, constant, the authors'), fast (Adam "
        "3e-3 after a linear warm-up over 5%% of the steps), fast-cosine (the same, then a cosine decay to 0.05x) or "
        "warm-cosine (fast-cosine with a 20%% warm-up); "
        f"see benchmarks/RESULTS.md; recorded in {record}",
    )


def fraction(text: str) -> float:
    """argparse type: a fraction strictly between 0 and 1.

    Examples:
        >>> fraction("0.1")
        0.1
    """
    return _float_in(text, 0.0, 1.0, "a fraction between 0 and 1 such as 0.1")


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0.

    Examples:
        >>> positive_float("0.03")
        0.03
    """
    return _float_in(text, 0.0, float("inf"), "a positive number such as 0.03")


def _float_in(text: str, lo: float, hi: float, what: str) -> float:
    """``text`` as a float strictly between ``lo`` and ``hi`` (not nan), else argparse's error naming ``what``."""
    try:
        v = float(text)
    except ValueError:
        v = float("nan")
    if not lo < v < hi:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return v
