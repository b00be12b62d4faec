"""Command-line options for reading data that does not fit in memory: ``--lazy`` and ``--workers``."""

from __future__ import annotations

import argparse

__all__ = ["add_lazy_options", "workers_int"]


def workers_int(text: str) -> int:
    """``--workers N``: a non-negative integer.

    Examples:
        >>> workers_int("2")
        2
    """
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(
            f"expected a non-negative integer (0: decode in the main process), got {text!r}"
        )
    return value


def add_lazy_options(p: argparse.ArgumentParser) -> None:
    """Add ``--lazy`` and ``--workers N`` (default 0) to a command that loads a data set for training.

    Examples:
        >>> p = argparse.ArgumentParser(); add_lazy_options(p)
        >>> p.parse_args(["--lazy", "--workers", "2"]).workers
        2
    """
    g = p.add_argument_group("data that does not fit in memory")
    g.add_argument(
        "--lazy",
        action="store_true",
        help="read the data set lazily: keep only the file list (an image folder or zip) or the native 8-bit "
        "images (built-in sets) and decode and resize batches as training streams them, so memory does not grow "
        "with the number of images (default: decode the whole split into memory, faster where it fits)",
    )
    g.add_argument(
        "--workers",
        type=workers_int,
        default=0,
        metavar="N",
        help="with --lazy: worker processes that decode images while the model trains (default: 0, decode in "
        "the main process; 2-8 keep a GPU busy on JPEG folders)",
    )
