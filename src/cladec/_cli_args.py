"""Argument types shared by the ``cladec`` subcommand modules."""

from __future__ import annotations

import argparse
from typing import Any, Callable


def pos_int(text: str) -> int:
    """argparse type: a positive integer."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return v


def csv_list(conv: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """argparse type: a comma-separated list, each item converted by ``conv`` (at least one item)."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{what}: give a comma-separated list, got {text!r}")
        try:
            return [conv(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: cannot read {text!r} as a comma-separated list") from None

    return parse
