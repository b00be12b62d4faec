"""A study's answers: reading the answer files, summarising them, and the summary's text."""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .._errors import DataError, SaveFormatError
from .._io import write_json
from .study import ANSWER_COLUMNS, ANSWERS_FORMAT, CONCEPTS, OPTIONAL_COLUMNS

__all__ = ["read_answers", "summarize_answers", "format_summary"]

SUMMARY_FORMAT = "cladec-study-summary"


def _expand(paths: Iterable[str | os.PathLike]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        s = str(p)
        path = Path(s)
        if path.is_dir():
            found = sorted(list(path.glob("*.csv")) + list(path.glob("*.json")))
            if not found:
                raise DataError(f"{path} holds no .csv or .json answer files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        elif any(ch in s for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(s))
            if not matched:
                raise DataError(f"no answer files match {s!r}")
            files.extend(m for m in matched if m.is_file())
        else:
            raise DataError(f"answer file not found: {s}")
    if not files:
        raise DataError("give at least one answer file (CSV or JSON downloaded from the study page)")
    return files


def _split_list(v: Any) -> list[str]:
    if isinstance(v, list):
        return [str(x).strip() for x in v if str(x).strip()]
    if v is None:
        return []
    return [t.strip() for t in str(v).split(";") if t.strip()]


def _check_row(row: dict[str, Any], where: str) -> dict[str, Any]:
    missing = [c for c in ("participant_id", "item_id", "confidence") if str(row.get(c) or "").strip() == ""]
    if missing:
        raise SaveFormatError(
            f"{where}: empty {', '.join(missing)}; every answer needs a participant, an item and "
            "a confidence from 1 to 5"
        )
    try:
        cval = float(str(row["confidence"]).strip())
        if not cval.is_integer():
            raise ValueError
        conf = int(cval)
    except (ValueError, OverflowError):
        raise SaveFormatError(f"{where}: confidence {row['confidence']!r} is not a whole number from 1 to 5") from None
    if not 1 <= conf <= 5:
        raise SaveFormatError(f"{where}: confidence {conf} is outside 1..5")
    secs_raw = str(row.get("seconds_on_item") or "").strip()
    try:
        secs = float(secs_raw) if secs_raw else None
    except ValueError:
        raise SaveFormatError(f"{where}: seconds_on_item {secs_raw!r} is not a number") from None
    pos_raw = "" if row.get("position") is None else str(row["position"]).strip()
    try:
        pval = float(pos_raw) if pos_raw else None
        if pval is not None and (not pval.is_integer() or pval < 1):
            raise ValueError
        pos = int(pval) if pval is not None else None
    except (ValueError, OverflowError):
        raise SaveFormatError(
            f"{where}: position {pos_raw!r} is not a whole number from 1 (the place in the "
            "participant's sequence at which the item was shown; empty in older files)"
        ) from None
    return {
        "study_id": str(row.get("study_id") or "").strip(),
        "participant_id": str(row["participant_id"]).strip(),
        "item_id": str(row["item_id"]).strip(),
        "image_id": str(row.get("image_id") or "").strip(),
        "true_label": str(row.get("true_label") or "").strip(),
        "uses": _split_list(row.get("uses")),
        "ignores": _split_list(row.get("ignores")),
        "free_text": str(row.get("free_text") or "").strip(),
        "confidence": conf,
        "seconds_on_item": secs,
        "started_at": str(row.get("started_at") or ""),
        "answered_at": str(row.get("answered_at") or ""),
        "position": pos,
    }


def _read_csv(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ANSWER_COLUMNS if c not in header and c not in OPTIONAL_COLUMNS]  # older files lack them
    if missing:
        raise SaveFormatError(
            f"{path} is not a cladec study answer file: its header lacks {', '.join(missing)} "
            f"(expected columns: {', '.join(ANSWER_COLUMNS)})"
        )
    rows = []
    for n, row in enumerate(reader, start=2):
        if None in row:
            raise SaveFormatError(f"{path}, line {n}: more fields than the header has columns")
        if not any(str(v or "").strip() for v in row.values()):
            continue
        rows.append(_check_row(row, f"{path}, line {n}"))
    return rows


def _read_json(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise SaveFormatError(f"{path} is not valid JSON: {e}") from None
    answers = obj.get("answers") if isinstance(obj, dict) else obj
    if isinstance(obj, dict) and obj.get("format") not in (None, ANSWERS_FORMAT):
        raise SaveFormatError(f"{path} has format {obj.get('format')!r}, expected {ANSWERS_FORMAT!r}")
    if not isinstance(answers, list) or not all(isinstance(a, dict) for a in answers):
        raise SaveFormatError(
            f"{path} is not a cladec study answer file: expected an object with an 'answers' list "
            "(as downloaded from the study page)"
        )
    study = obj.get("study_id") if isinstance(obj, dict) else None
    return [
        _check_row(dict({"study_id": study}, **a) if study and not a.get("study_id") else a, f"{path}, answer {i + 1}")
        for i, a in enumerate(answers)
    ]


def read_answers(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read answer files downloaded from the study page (CSV or JSON).

    Args:
        paths: Files, folders (all ``*.csv`` / ``*.json`` in them) or glob patterns.

    Returns:
        One dict per answer with the keys of :data:`ANSWER_COLUMNS`; ``uses`` and ``ignores`` as lists,
        ``confidence`` as int, ``seconds_on_item`` as float or None, ``position`` (1-based place in the
        participant's sequence at which the item was shown) as int, or None in files written before answers
        had it (likewise ``study_id`` is ``""`` in files from before answers carried it). When the same
        participant answered the same item in several files, the latest answer (by ``answered_at``) is kept.

    Raises:
        DataError: No file found.
        SaveFormatError: A file is not an answer file (missing columns, bad confidence or position, not
            UTF-8, …); the message names the file and line.

    Examples:
        >>> _ = Path("answers").mkdir()
        >>> _ = Path("answers/p1.csv").write_text(
        ...     "participant_id,item_id,image_id,true_label,uses,ignores,free_text,confidence,seconds_on_item,"
        ...     "started_at,answered_at\\n"
        ...     "P1,item-01,17,Bag,shape;details,background,,4,12.5,2024-05-01T10:00:00Z,2024-05-01T10:00:12Z\\n"
        ...     "P1,item-02,3,Trouser,shape,,,5,8.0,2024-05-01T10:00:12Z,2024-05-01T10:00:20Z\\n"
        ... )  # an answer file as the study page downloads it
        >>> rows = read_answers(["answers/p1.csv"])
        >>> len(rows), rows[0]["uses"], rows[0]["confidence"], rows[0]["position"]
        (2, ['shape', 'details'], 4, None)
    """
    rows: list[dict[str, Any]] = []
    for f in _expand(paths):
        try:
            text = f.read_text(encoding="utf-8-sig")
        except UnicodeDecodeError:
            raise SaveFormatError(f"{f} is not a UTF-8 text file; expected a CSV or JSON answer file") from None
        if not text.strip():
            raise SaveFormatError(f"{f} is empty; expected a CSV or JSON answer file from the study page")
        is_json = f.suffix.lower() == ".json" or text.lstrip()[:1] in "{["
        got = _read_json(f, text) if is_json else _read_csv(f, text)
        rows.extend(got)
    latest: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        key = (r["study_id"], r["participant_id"], r["item_id"])  # item-01 of another study is another image
        if key not in latest or r["answered_at"] >= latest[key]["answered_at"]:
            latest[key] = r
    return list(latest.values())


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _halves(rows: list[dict[str, Any]]) -> dict[int, str]:
    """``id(row) -> "first" | "second"`` for the answers with a position: per sequence (study, participant),
    sorted by position, the first ⌊k/2⌋ and the last ⌊k/2⌋ of its k answers (an odd one in the middle is left
    out)."""
    seqs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        if r["position"] is not None:
            seqs.setdefault((r["study_id"], r["participant_id"]), []).append(r)
    half: dict[int, str] = {}
    for seq in seqs.values():
        seq.sort(key=lambda r: r["position"])
        h = len(seq) // 2
        for r in seq[:h]:
            half[id(r)] = "first"
        for r in seq[len(seq) - h :] if h else []:
            half[id(r)] = "second"
    return half


def _half_means(rows: list[dict[str, Any]], half: dict[int, str]) -> tuple[float | None, float | None]:
    return (
        _mean([r["confidence"] for r in rows if half.get(id(r)) == "first"]),
        _mean([r["confidence"] for r in rows if half.get(id(r)) == "second"]),
    )


def summarize_answers(paths: Iterable[str | os.PathLike], out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Aggregate study answers across participants.

    Order fields (they need the answers' ``position``; older answer files lack it, and then they are
    None):

    * ``mean_position``: the item's mean 1-based position over the answers that have one. With
      per-participant orders it should lie near the middle, (n + 1) / 2, for every item.
    * Halves: each participant's answers in a study that have a position, sorted by it, are split into
      the first ⌊k/2⌋ and the last ⌊k/2⌋ of their k answers (with k odd the middle one is in neither).
      ``first_half_mean_confidence`` / ``second_half_mean_confidence`` are the mean confidences of those
      answers (None for a participant with fewer than 2 positioned answers).
    * ``order_effect``: None when no participant has two positioned answers, else ``{"participants"
      (how many sequences count), "answers_per_half", "first_half_mean_confidence",
      "second_half_mean_confidence", "difference"}`` (second minus first; below 0: confidence falls as
      the study goes on) over all counted answers. It is a descriptive check, not a test. With
      per-participant orders every item is equally likely in either half, so a difference points to
      order (learning, fatigue); with a fixed order the halves hold different items and the difference
      mixes order with the items.

    Args:
        paths: Answer files (CSV or JSON), folders or glob patterns, as for :func:`read_answers`.
        out: Optional JSON file to write the summary to (atomically).

    Returns:
        ``{"format": "cladec-study-summary", "files", "studies", "participants", "answers", "items",
        "mean_confidence", "mean_seconds", "concepts": {concept: {"uses", "ignores", "uses_share",
        "ignores_share"}}, "per_item": [{"study_id", "item_id", "image_id", "true_label", "answers", "mean_confidence",
        "mean_position", "uses": {...}, "ignores": {...}, "free_text": [...]}], "per_participant":
        [{"participant_id", "answers", "mean_confidence", "total_seconds", "first_half_mean_confidence",
        "second_half_mean_confidence"}], "order_effect"}``. Shares are fractions of all answers.

    Examples:
        >>> _ = Path("answers").mkdir()
        >>> _ = Path("answers/p1.csv").write_text(
        ...     "participant_id,item_id,image_id,true_label,uses,ignores,free_text,confidence,seconds_on_item,"
        ...     "started_at,answered_at\\n"
        ...     "P1,item-01,17,Bag,shape;details,background,,4,12.5,2024-05-01T10:00:00Z,2024-05-01T10:00:12Z\\n"
        ...     "P1,item-02,3,Trouser,shape,,,5,8.0,2024-05-01T10:00:12Z,2024-05-01T10:00:20Z\\n"
        ... )  # an answer file as the study page downloads it
        >>> s = summarize_answers(["answers/"])
        >>> s["answers"], s["participants"], s["concepts"]["shape"]
        (2, 1, {'uses': 2, 'ignores': 0, 'uses_share': 1.0, 'ignores_share': 0.0})
    """

    plist = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = _expand(plist)
    rows = read_answers(files)
    if not rows:
        raise DataError("the answer files hold no answers")
    n = len(rows)
    concepts = list(CONCEPTS) + sorted({c for r in rows for c in r["uses"] + r["ignores"]} - set(CONCEPTS))
    tally: dict[str, dict[str, float]] = {c: {"uses": 0, "ignores": 0} for c in concepts}
    for r in rows:
        for c in r["uses"]:
            tally[c]["uses"] += 1
        for c in r["ignores"]:
            tally[c]["ignores"] += 1
    for c in tally.values():
        c["uses_share"] = round(c["uses"] / n, 4)
        c["ignores_share"] = round(c["ignores"] / n, 4)
    items: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:  # per (study, item): the same item number is another image in another study
        it = items.setdefault(
            (r["study_id"], r["item_id"]),
            {
                "study_id": r["study_id"],
                "item_id": r["item_id"],
                "image_id": r["image_id"],
                "true_label": r["true_label"],
                "answers": 0,
                "_conf": [],
                "_pos": [],
                "uses": dict.fromkeys(concepts, 0),
                "ignores": dict.fromkeys(concepts, 0),
                "free_text": [],
            },
        )
        it["answers"] += 1
        it["_conf"].append(r["confidence"])
        if r["position"] is not None:
            it["_pos"].append(r["position"])
        for c in r["uses"]:
            it["uses"][c] += 1
        for c in r["ignores"]:
            it["ignores"][c] += 1
        if r["free_text"]:
            it["free_text"].append(r["free_text"])
    per_item = []
    for key in sorted(items):
        it = items[key]
        it["mean_confidence"] = _mean(it.pop("_conf"))
        it["mean_position"] = _mean(it.pop("_pos"))
        per_item.append(it)
    parts: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        parts.setdefault(r["participant_id"], []).append(r)
    half = _halves(rows)
    per_participant = []
    for p, rs in sorted(parts.items()):
        first, second = _half_means(rs, half)
        per_participant.append(
            {
                "participant_id": p,
                "answers": len(rs),
                "mean_confidence": _mean([r["confidence"] for r in rs]),
                "total_seconds": round(sum(r["seconds_on_item"] or 0.0 for r in rs), 1),
                "first_half_mean_confidence": first,
                "second_half_mean_confidence": second,
            }
        )
    order_effect = None
    if half:
        first, second = _half_means(rows, half)
        order_effect = {
            "participants": len({(r["study_id"], r["participant_id"]) for r in rows if id(r) in half}),
            "answers_per_half": sum(1 for v in half.values() if v == "first"),
            "first_half_mean_confidence": first,
            "second_half_mean_confidence": second,
            "difference": round(second - first, 4),  # type: ignore[operator]  # numbers: both halves hold answers
        }
    secs = [r["seconds_on_item"] for r in rows if r["seconds_on_item"] is not None]
    summary = {
        "format": SUMMARY_FORMAT,
        "files": [str(f) for f in files],
        "studies": sorted({r["study_id"] for r in rows}),
        "participants": len(parts),
        "answers": n,
        "items": len(items),
        "mean_confidence": _mean([r["confidence"] for r in rows]),
        "mean_seconds": _mean(secs),
        "concepts": tally,
        "per_item": per_item,
        "per_participant": per_participant,
        "order_effect": order_effect,
    }
    if out is not None:
        write_json(out, summary)
    return summary


def _fmt_pos(v: float | None) -> str:
    return "" if v is None else f"{v:.1f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text view of :func:`summarize_answers`' result (what ``cladec study-summary`` prints).

    Args:
        summary: The dict returned by :func:`summarize_answers`.

    Returns:
        Text with one line per concept and per item (with its mean position when the answers have
        positions), and the first- vs second-half confidence of :func:`summarize_answers`' ``order_effect``.

    Examples:
        >>> _ = Path("answers").mkdir()
        >>> _ = Path("answers/p1.csv").write_text(
        ...     "participant_id,item_id,image_id,true_label,uses,ignores,free_text,confidence,seconds_on_item,"
        ...     "started_at,answered_at\\n"
        ...     "P1,item-01,17,Bag,shape;details,background,,4,12.5,2024-05-01T10:00:00Z,2024-05-01T10:00:12Z\\n"
        ...     "P1,item-02,3,Trouser,shape,,,5,8.0,2024-05-01T10:00:12Z,2024-05-01T10:00:20Z\\n"
        ... )  # an answer file as the study page downloads it
        >>> print(format_summary(summarize_answers(["answers/"])))
        2 answers from 1 participant(s) on 2 item(s); mean confidence 4.5, mean 10.2 s per item
        <BLANKLINE>
        concept        uses  ignores
        shape             2        0
        ...
        item       label          answers  conf.  pos.  most named as used
        item-01    Bag                  1    4.0        shape (1), details (1)
        item-02    Trouser              1    5.0        shape (1)
    """
    lines = [
        f"{summary['answers']} answers from {summary['participants']} participant(s) on {summary['items']} item(s); "
        f"mean confidence {summary['mean_confidence']}"
        + (f", mean {summary['mean_seconds']:.1f} s per item" if summary.get("mean_seconds") is not None else ""),
        "",
        f"{'concept':<12} {'uses':>6} {'ignores':>8}",
    ]
    for c, t in summary["concepts"].items():
        lines.append(f"{c:<12} {t['uses']:>6} {t['ignores']:>8}")
    oe = summary.get("order_effect")
    if oe:
        lines += [
            "",
            f"order check: mean confidence {oe['first_half_mean_confidence']} in the first half of each "
            f"participant's sequence, {oe['second_half_mean_confidence']} in the second "
            f"(difference {oe['difference']:+}; {oe['participants']} sequence(s), "
            f"{oe['answers_per_half']} answers per half)",
        ]
    lines += ["", f"{'item':<10} {'label':<14} {'answers':>7} {'conf.':>6} {'pos.':>5}  most named as used"]
    several = len(summary.get("studies") or []) > 1
    if several:
        lines.insert(
            1,
            f"answers of {len(summary['studies'])} studies: {', '.join(s or '(unknown)' for s in summary['studies'])}"
            " (items are counted per study)",
        )
    for it in summary["per_item"]:
        top = sorted(((v, c) for c, v in it["uses"].items() if v), reverse=True)[:3]
        name = f"{it.get('study_id') or '?'}/{it['item_id']}" if several else it["item_id"]
        lines.append(
            f"{name:<10} {it['true_label'][:14]:<14} {it['answers']:>7} "
            f"{it['mean_confidence'] if it['mean_confidence'] is not None else '':>6} "
            f"{_fmt_pos(it.get('mean_position')):>5}  " + ", ".join(f"{c} ({v})" for v, c in top)
        )
    return "\n".join(lines)
