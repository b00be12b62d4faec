"""``cladec study`` and ``cladec study-summary``."""

from __future__ import annotations

import argparse
from typing import Any

from ._args import pos_int, seed_int

__all__ = ["register", "cmd_study", "cmd_study_summary"]


def register(subparsers: Any) -> None:
    """Add the ``study`` and ``study-summary`` subcommands to an argparse ``subparsers`` object.

    Each parser gets ``func``: the handler, called with the parsed namespace, returning an exit code.

    Args:
        subparsers: The object returned by ``ArgumentParser.add_subparsers()``.

    Returns:
        None.

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); sub = p.add_subparsers(dest="command")
        >>> register(sub)
        >>> p.parse_args(["study", "runs/conv4", "--out", "study"]).items
        20
    """
    s = subparsers.add_parser(
        "study",
        help="write a user-study page (consent, items, answers downloaded as CSV/JSON) for a run",
        description="Write a static user-study page to --out after Schneider & Vlachos (2022): instructions and "
        "consent, then test images, in an order of its own for each participant (derived from the participant id; "
        "--order fixed: one seeded order for all), each as original, RefAE and ClaDec, asking which "
        "concepts the classifier uses or ignores and how confident the participant is. Answers are kept in the "
        "browser and downloaded at the end; aggregate them with `cladec study-summary`.",
    )
    s.add_argument("run", metavar="RUN_DIR", help="run directory (made by `cladec fit`)")
    s.add_argument(
        "--out", required=True, help="output folder (new, empty, or an earlier study page, which is replaced)"
    )
    s.add_argument("--items", type=pos_int, default=20, help="number of images to ask about (default 20, at most 200)")
    s.add_argument(
        "--seed",
        type=seed_int,
        default=0,
        help="seeds the choice of the images (and their order with --order fixed) (default 0)",
    )
    s.add_argument(
        "--order",
        choices=["per-participant", "fixed"],
        default="per-participant",
        help="item order: each participant's own, derived from their participant id (default), or one "
        "seeded order for everyone (e.g. a pilot)",
    )
    s.add_argument("--data-root", default=None, metavar="PATH", help="folder holding the data set")
    s.add_argument("--device", default=None, help="device for the reconstructions (default: cpu)")
    s.add_argument("--title", default=None, help="page title")
    s.set_defaults(func=cmd_study)

    m = subparsers.add_parser(
        "study-summary",
        help="aggregate user-study answer files (CSV/JSON) across participants",
        description="Read the answer files downloaded from a `cladec study` page (CSV or JSON; folders and glob "
        "patterns are accepted) and count, per concept and per item, how often it was named as used or ignored, "
        "with the mean confidence. Prints a summary; --out also writes it as JSON.",
    )
    m.add_argument("answers", nargs="+", metavar="ANSWERS", help="answer files, folders or glob patterns")
    m.add_argument("--out", default=None, help="write the summary as JSON to this file")
    m.set_defaults(func=cmd_study_summary)


def cmd_study(args: argparse.Namespace) -> int:
    """Handler of ``cladec study``: build the study page and print where ``index.html`` is.

    Args:
        args: The parsed namespace (``run``, ``out``, ``items``, ``seed``, ``order``, ``data_root``, ``device``,
            ``title``).

    Returns:
        0 on success.

    Examples:
        >>> cmd_study(argparse.Namespace(run=str(run_dir), out="study", items=8, seed=0, order="per-participant",
        ...                              data_root=None, device=None, title=None))
        wrote study/index.html (8 items); send it to participants as a folder, they open index.html
        0
    """
    from ..report.study import build_study

    index = build_study(
        args.run,
        args.out,
        items=args.items,
        seed=args.seed,
        data_root=args.data_root,
        device=args.device,
        title=args.title,
        order=getattr(args, "order", "per-participant"),
    )
    print(f"wrote {index} ({args.items} items); send it to participants as a folder, they open index.html")
    return 0


def cmd_study_summary(args: argparse.Namespace) -> int:
    """Handler of ``cladec study-summary``: print the aggregate of the answer files (and write JSON).

    Args:
        args: The parsed namespace (``answers``, ``out``).

    Returns:
        0 on success.

    Examples:
        >>> _ = Path("answers").mkdir()
        >>> _ = Path("answers/p1.csv").write_text(
        ...     "participant_id,item_id,image_id,true_label,uses,ignores,free_text,confidence,seconds_on_item,"
        ...     "started_at,answered_at\\n"
        ...     "P1,item-01,17,Bag,shape;details,background,,4,12.5,2024-05-01T10:00:00Z,2024-05-01T10:00:12Z\\n"
        ...     "P1,item-02,3,Trouser,shape,,,5,8.0,2024-05-01T10:00:12Z,2024-05-01T10:00:20Z\\n"
        ... )  # an answer file as the study page downloads it
        >>> cmd_study_summary(argparse.Namespace(answers=["answers/"], out="summary.json"))
        2 answers from 1 participant(s) on 2 item(s); mean confidence 4.5, mean 10.2 s per item
        ...
        0
        >>> Path("summary.json").is_file()
        True
    """
    from ..report.answers import format_summary, summarize_answers

    summary = summarize_answers(args.answers, out=args.out)
    print(format_summary(summary))
    if args.out:
        print(f"\nwrote {args.out}")
    return 0
