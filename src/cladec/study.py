"""A user study of ClaDec explanations, after Schneider & Vlachos (2022): a static page and its answers.

:func:`build_study` writes a self-contained page (``index.html`` with images and script beside it; opens
from ``file://``, no network) that shows a participant, after instructions and a consent screen, a set of
test images in a seeded random order, each as original | RefAE | ClaDec (the participant is told which is
which), and asks which concepts the classifier uses or ignores (shape, texture, colour, background,
details, plus free text) and how confident they are (1–5). Answers are kept in the browser's
``localStorage`` (a reload loses nothing) and downloaded at the end as CSV and JSON with the columns
:data:`ANSWER_COLUMNS`.

:func:`summarize_answers` (``cladec study-summary``) aggregates the downloaded files of all participants.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import random
from pathlib import Path
from typing import Any, Iterable, Sequence

from ._errors import ConfigError, DataError, SaveFormatError
from ._sampling import balanced_indices

__all__ = ["ANSWER_COLUMNS", "CONCEPTS", "build_study", "read_answers", "summarize_answers", "format_summary"]

#: Columns of the answer files the study page downloads (CSV header; keys of each JSON answer).
ANSWER_COLUMNS = [
    "study_id",
    "participant_id",
    "item_id",
    "image_id",
    "true_label",
    "uses",
    "ignores",
    "free_text",
    "confidence",
    "seconds_on_item",
    "started_at",
    "answered_at",
]
#: Concepts offered as checkboxes ("uses" / "ignores").
CONCEPTS = ["shape", "texture", "colour", "background", "details"]
ANSWERS_FORMAT = "cladec-study-answers"
SUMMARY_FORMAT = "cladec-study-summary"


def _subject(dataset: str) -> str:
    """What the classifier recognises, in words for participants."""
    d = dataset.lower()
    if "fashion" in d or "fmnist" in d:
        return "pieces of clothing"
    if "mnist" in d:
        return "handwritten digits"
    if "cifar" in d:
        return "objects in small photos (planes, cars, birds, cats, …)"
    return "the objects in images"


def _pick_items(labels: Sequence[int], n: int, seed: int) -> list[int]:
    """``n`` indices, class-balanced, chosen and ordered at random with ``seed``."""
    rng = random.Random(seed)
    out = balanced_indices(labels, n, rng)
    rng.shuffle(out)
    return out


def build_study(
    run_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    items: int = 20,
    seed: int = 0,
    data_root: str | os.PathLike | None = None,
    device: str | None = None,
    title: str | None = None,
) -> Path:
    """Build the user-study page for a run directory.

    Args:
        run_dir: A run directory (``cladec fit``); its RefAE is shown when it has one.
        out: Output folder (created; replaced if an earlier study or report page is there; any other
            non-empty folder is refused).
        items: Number of test images to ask about (1–200), class-balanced.
        seed: Seeds which images are chosen and their order.
        data_root: Where the run's data set is (default: the root recorded in the run).
        device: Device for the reconstructions (default: CPU).
        title: Page title.

    Returns:
        The path of ``index.html``.

    Raises:
        SaveFormatError: ``run_dir`` is not a run directory.
        ConfigError: bad ``items`` / ``seed`` or an unusable ``out``.
        DataError: the run's data set cannot be found (pass ``data_root``).

    Example:
        >>> from cladec.study import build_study
        >>> build_study("runs/conv4", "study/", items=20, seed=1)  # doctest: +SKIP
        PosixPath('study/index.html')
    """
    from ._version import __version__
    from .explanation import explain
    from .report._images import write_png
    from .report._site import copy_static, environment, script_json, site_dir
    from .report._sources import read_run_config
    from .runs import load_run

    if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= 200:
        raise ConfigError(f"items must be an integer from 1 to 200, got {items!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SaveFormatError(f"{run_dir} is not a directory; expected a run directory (run.json, made by `cladec fit`)")
    if not (run_dir / "run.json").is_file():
        raise SaveFormatError(
            f"{run_dir} is not a cladec run directory: it has no run.json (make one with `cladec fit`; "
            "a study needs one run, not a sweep or evaluation directory)"
        )
    cfg = read_run_config(run_dir)
    env = environment()
    run = load_run(run_dir, device=device or "cpu")
    try:
        ds = run.dataset("test", limit=max(items * 25, 500), data_root=str(data_root) if data_root else None)
    except DataError as e:
        raise DataError(f"{e}\n(the study shows test images of the run's data set: pass --data-root to say where "
                        "it is)") from None
    x_all, y_all = ds.tensors()
    idx = _pick_items(y_all.tolist(), items, seed)
    x, y = x_all[idx].clone(), y_all[idx].clone()
    e = explain(x, cladec=run.cladec, refae=run.refae, labels=y, classes=ds.classes)
    has_refae = e.x_refae is not None
    ds_name = str((cfg.get("dataset") or {}).get("name", ds.name))
    image_ids = [f"{ds_name}:test:{i}" for i in idx]
    study_id = hashlib.sha1(
        json.dumps([str(run_dir.resolve().name), cfg.get("layer"), cfg.get("alpha"), seed, image_ids]).encode()
    ).hexdigest()[:12]
    with site_dir(out, "study", protect=[run_dir]) as site:
        entries = []
        for k in range(len(idx)):
            item_id = f"item-{k + 1:02d}"
            base = f"img/{item_id}"
            write_png(site / f"{base}-original.png", e.x[k])
            write_png(site / f"{base}-cladec.png", e.x_cladec[k])
            if has_refae:
                write_png(site / f"{base}-refae.png", e.x_refae[k])  # type: ignore[index]
            entries.append({
                "item_id": item_id,
                "image_id": image_ids[k],
                "true_label": ds.classes[int(y[k])],
                "predicted": ds.classes[int(e.pred_x[k])],
                "original": f"{base}-original.png",
                "refae": f"{base}-refae.png" if has_refae else None,
                "cladec": f"{base}-cladec.png",
            })
        data = {
            "format": "cladec-study",
            "study_id": study_id,
            "concepts": CONCEPTS,
            "columns": ANSWER_COLUMNS,
            "has_refae": has_refae,
            "items": entries,
            "run": {"layer": cfg.get("layer"), "alpha": cfg.get("alpha"), "dataset": ds_name},
        }
        html = env.get_template("study.html").render(
            title=title or "What does the classifier look at?",
            version=__version__,
            n_items=len(entries),
            has_refae=has_refae,
            concepts=CONCEPTS,
            study_id=study_id,
            example=entries[0],
            subject=_subject(ds_name),
            data_json=script_json(data),
        )
        (site / "index.html").write_text(html, encoding="utf-8")
        copy_static(site, ("cladec.css", "study.js"))
    return Path(out) / "index.html"


# --------------------------------------------------------------------------------------------------
# Answers
# --------------------------------------------------------------------------------------------------


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
        raise SaveFormatError(f"{where}: empty {', '.join(missing)}; every answer needs a participant, an item and "
                              "a confidence from 1 to 5")
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
    }


def _read_csv(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    header = reader.fieldnames or []
    missing = [c for c in ANSWER_COLUMNS if c not in header and c != "study_id"]  # older answer files lack it
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
        raise SaveFormatError(f"{path} is not a cladec study answer file: expected an object with an 'answers' list "
                              "(as downloaded from the study page)")
    study = obj.get("study_id") if isinstance(obj, dict) else None
    return [_check_row(dict({"study_id": study}, **a) if study and not a.get("study_id") else a,
                       f"{path}, answer {i + 1}") for i, a in enumerate(answers)]


def read_answers(paths: Iterable[str | os.PathLike]) -> list[dict[str, Any]]:
    """Read answer files downloaded from the study page (CSV or JSON).

    Args:
        paths: Files, folders (all ``*.csv`` / ``*.json`` in them) or glob patterns.

    Returns:
        One dict per answer with the keys of :data:`ANSWER_COLUMNS`; ``uses`` and ``ignores`` as lists,
        ``confidence`` as int, ``seconds_on_item`` as float or None. When the same participant answered the
        same item in several files, the latest answer (by ``answered_at``) is kept.

    Raises:
        DataError: No file found. SaveFormatError: A file is not an answer file (missing columns, bad
        confidence, not UTF-8, …); the message names the file and line.

    Example:
        >>> rows = read_answers(["answers/p1.csv", "answers/p2.json"])  # doctest: +SKIP
        >>> rows[0]["uses"]  # doctest: +SKIP
        ['shape', 'details']
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


def summarize_answers(paths: Iterable[str | os.PathLike], out: str | os.PathLike | None = None) -> dict[str, Any]:
    """Aggregate study answers across participants.

    Args:
        paths: Answer files (CSV or JSON), folders or glob patterns, as for :func:`read_answers`.
        out: Optional JSON file to write the summary to (atomically).

    Returns:
        ``{"format": "cladec-study-summary", "files", "studies", "participants", "answers", "items",
        "mean_confidence", "mean_seconds", "concepts": {concept: {"uses", "ignores", "uses_share",
        "ignores_share"}}, "per_item": [{"study_id", "item_id", "image_id", "true_label", "answers", "mean_confidence",
        "uses": {...}, "ignores": {...}, "free_text": [...]}], "per_participant": [...]}``. Shares are
        fractions of all answers.

    Example:
        >>> s = summarize_answers(["answers/"])  # doctest: +SKIP
        >>> s["concepts"]["shape"]["uses"]  # doctest: +SKIP
        14
    """
    from ._io import write_json

    plist = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    files = _expand(plist)
    rows = read_answers(files)
    if not rows:
        raise DataError("the answer files hold no answers")
    n = len(rows)
    concepts = list(CONCEPTS) + sorted({c for r in rows for c in r["uses"] + r["ignores"]} - set(CONCEPTS))
    tally = {c: {"uses": 0, "ignores": 0} for c in concepts}
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
        it = items.setdefault((r["study_id"], r["item_id"]), {
            "study_id": r["study_id"], "item_id": r["item_id"], "image_id": r["image_id"],
            "true_label": r["true_label"], "answers": 0, "_conf": [], "uses": {c: 0 for c in concepts},
            "ignores": {c: 0 for c in concepts}, "free_text": []})
        it["answers"] += 1
        it["_conf"].append(r["confidence"])
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
        per_item.append(it)
    parts: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        parts.setdefault(r["participant_id"], []).append(r)
    per_participant = [
        {"participant_id": p, "answers": len(rs), "mean_confidence": _mean([r["confidence"] for r in rs]),
         "total_seconds": round(sum(r["seconds_on_item"] or 0.0 for r in rs), 1)}
        for p, rs in sorted(parts.items())
    ]
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
    }
    if out is not None:
        write_json(out, summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A short plain-text view of :func:`summarize_answers`' result (what ``cladec study-summary`` prints).

    Args:
        summary: The dict returned by :func:`summarize_answers`.

    Returns:
        Text with one line per concept and per item.

    Example:
        >>> print(format_summary(summarize_answers(["answers/"])))  # doctest: +SKIP
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
    lines += ["", f"{'item':<10} {'label':<14} {'answers':>7} {'conf.':>6}  most named as used"]
    several = len(summary.get("studies") or []) > 1
    if several:
        lines.insert(1, f"answers of {len(summary['studies'])} studies: {', '.join(s or '(unknown)' for s in summary['studies'])}"
                        " (items are counted per study)")
    for it in summary["per_item"]:
        top = sorted(((v, c) for c, v in it["uses"].items() if v), reverse=True)[:3]
        name = f"{it.get('study_id') or '?'}/{it['item_id']}" if several else it["item_id"]
        lines.append(f"{name:<10} {it['true_label'][:14]:<14} {it['answers']:>7} "
                     f"{it['mean_confidence'] if it['mean_confidence'] is not None else '':>6}  "
                     + ", ".join(f"{c} ({v})" for v, c in top))
    return "\n".join(lines)
