"""A user study of ClaDec explanations, after Schneider & Vlachos (2022): a static page and its answers.

:func:`build_study` writes a self-contained page (``index.html`` with images and script beside it; opens
from ``file://``, no network) that shows a participant, after instructions and a consent screen, a set of
test images chosen class-balanced with a seed, each as original | RefAE | ClaDec (the participant is told
which is which), and asks which concepts the classifier uses or ignores (shape, texture, colour, background,
details, plus free text) and how confident they are (1–5). Answers are kept in the browser's
``localStorage`` (a reload loses nothing) and downloaded at the end as CSV and JSON with the columns
:data:`ANSWER_COLUMNS`.

Item order: by default every participant sees the items in an order of their own, so that order effects
(learning, fatigue) are spread over the items instead of confounded with them. The order is a Fisher–Yates
shuffle driven by the mulberry32 generator seeded with the 32-bit FNV-1a hash of the UTF-8 text
``"<study_id>:<participant_id>"``; it depends on nothing else, so a reload shows the same order and
:func:`participant_order` reconstructs it. ``build_study(order="fixed")`` (e.g. for a pilot) shows every
participant the one seeded order instead. Each answer records the 1-based ``position`` at which its item
was shown.

:func:`summarize_answers` (``cladec study-summary``) aggregates the downloaded files of all participants.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Callable, Sequence
from pathlib import Path

from .._errors import ConfigError, DataError, SaveFormatError
from .._sampling import balanced_indices
from .._version import __version__
from ..explanation import explain
from ..runs import load_run
from ._images import write_png
from ._site import check_device, copy_static, environment, script_json, site_dir
from ._sources import read_run_config

__all__ = ["ANSWER_COLUMNS", "CONCEPTS", "ORDERS", "build_study", "participant_order"]

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
    "position",
]

#: Columns older answer files may lack (``study_id``: before studies had ids; ``position``: before each
#: participant had an own item order).
OPTIONAL_COLUMNS = ("study_id", "position")

#: Item orders of :func:`build_study`: one per participant (seeded by the participant id), or one for all.
ORDERS = ("per-participant", "fixed")

#: Concepts offered as checkboxes ("uses" / "ignores").
CONCEPTS = ["shape", "texture", "colour", "background", "details"]

ANSWERS_FORMAT = "cladec-study-answers"


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
    """``n`` indices, class-balanced, chosen and ordered at random with ``seed`` (the order of ``order="fixed"``)."""
    return balanced_indices(labels, n, random.Random(seed), order="random")


_U32 = 0xFFFFFFFF


def _fnv1a32(text: str) -> int:
    """32-bit FNV-1a hash of ``text``'s UTF-8 bytes (as ``fnv1a`` in ``study.js``)."""
    h = 0x811C9DC5
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & _U32
    return h


def _mulberry32(seed: int) -> Callable[[], float]:
    """The mulberry32 generator (as ``mulberry32`` in ``study.js``): floats in [0, 1), 32-bit arithmetic."""
    a = seed & _U32

    def nxt() -> float:
        nonlocal a
        a = (a + 0x6D2B79F5) & _U32
        t = ((a ^ (a >> 15)) * (1 | a)) & _U32
        t = ((t + (((t ^ (t >> 7)) * (61 | t)) & _U32)) & _U32) ^ t
        return ((t ^ (t >> 14)) & _U32) / 4294967296

    return nxt


def participant_order(
    study_id: str, participant_id: str, item_ids: Sequence[str], order: str = "per-participant"
) -> list[str]:
    """The order in which the study page shows the items to a participant (the same as ``study.js``).

    With ``order="per-participant"`` the items are shuffled (Fisher–Yates, from the last position down)
    with the mulberry32 generator seeded by the 32-bit FNV-1a hash of the UTF-8 text
    ``f"{study_id}:{participant_id}"`` (the participant id with surrounding spaces removed, as the page keeps
    it); with ``order="fixed"`` they stay as given.

    Args:
        study_id: The study's id (``study_id`` of the page's data and of every answer).
        participant_id: The participant's id.
        item_ids: The study's item ids in the page's order (``item-01``, ``item-02``, …).
        order: ``"per-participant"`` or ``"fixed"`` (the study's ``order``).

    Returns:
        ``item_ids`` in the order the participant sees them; an answer's ``position`` is the 1-based index
        of its item here.

    Raises:
        ConfigError: ``order`` is not one of :data:`ORDERS`.

    Examples:
        >>> participant_order("3f2a9c0d1e4b", "P-07", ["item-01", "item-02", "item-03"])
        ['item-02', 'item-03', 'item-01']
        >>> participant_order("3f2a9c0d1e4b", "P-07", ["item-01", "item-02", "item-03"], order="fixed")
        ['item-01', 'item-02', 'item-03']
    """
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {', '.join(repr(o) for o in ORDERS)}, got {order!r}")
    out = [str(i) for i in item_ids]
    if order == "fixed":
        return out
    rnd = _mulberry32(_fnv1a32(f"{study_id}:{participant_id.strip()}"))
    for i in range(len(out) - 1, 0, -1):
        j = int(rnd() * (i + 1))
        out[i], out[j] = out[j], out[i]
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
    order: str = "per-participant",
) -> Path:
    """Build the user-study page for a run directory.

    Args:
        run_dir: A run directory (``cladec fit``); its RefAE is shown when it has one.
        out: Output folder (created; replaced if an earlier study or report page is there; any other
            non-empty folder is refused).
        items: Number of test images to ask about (1–200), class-balanced.
        seed: Seeds which images are chosen and the order of ``order="fixed"``.
        data_root: Where the run's data set is (default: the root recorded in the run).
        device: Device for the reconstructions (default: CPU).
        title: Page title.
        order: ``"per-participant"`` (default): each participant sees the items in an order of their own,
            derived from the study id and their participant id (:func:`participant_order`);
            ``"fixed"``: everyone sees the one order seeded by ``seed`` (e.g. for a pilot). Recorded as
            ``order`` in the page's data and in the downloaded JSON answers.

    Returns:
        The path of ``index.html``.

    Raises:
        SaveFormatError: ``run_dir`` is not a run directory.
        ConfigError: bad ``items`` / ``seed`` / ``order`` or an unusable ``out``.
        DataError: the run's data set cannot be found (pass ``data_root``).

    Examples:
        >>> from cladec.report import build_study
        >>> build_study(run_dir, "study/", items=8, seed=1)  # run_dir: a run directory
        PosixPath('study/index.html')
        >>> sorted(p.name for p in Path("study").iterdir())
        ['.cladec-site', 'img', 'index.html', 'static']
    """

    if isinstance(items, bool) or not isinstance(items, int) or not 1 <= items <= 200:
        raise ConfigError(f"items must be an integer from 1 to 200, got {items!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ConfigError(f"seed must be an integer, got {seed!r}")
    if order not in ORDERS:
        raise ConfigError(f"order must be one of {', '.join(repr(o) for o in ORDERS)}, got {order!r}")
    device = check_device(device)
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise SaveFormatError(
            f"{run_dir} is not a directory; expected a run directory (run.json, made by `cladec fit`)"
        )
    if not (run_dir / "run.json").is_file():
        raise SaveFormatError(
            f"{run_dir} is not a cladec run directory: it has no run.json (make one with `cladec fit`; "
            "a study needs one run, not a sweep or evaluation directory)"
        )
    cfg = read_run_config(run_dir)
    env = environment()
    run = load_run(run_dir, device=device)
    try:
        ds = run.dataset("test", limit=max(items * 25, 500), data_root=str(data_root) if data_root else None)
    except DataError as e:
        raise DataError(
            f"{e}\n(the study shows test images of the run's data set: pass --data-root to say where it is)"
        ) from None
    x_all, y_all = ds.tensors()
    idx = _pick_items(y_all.tolist(), items, seed)
    x, y = x_all[idx].clone(), y_all[idx].clone()
    expl = explain(x, cladec=run.cladec, refae=run.refae, labels=y, classes=ds.classes)
    has_refae = expl.x_refae is not None
    # predictions are named with the classifier's own classes (it may have more outputs than the data set has
    # classes, e.g. a 10-class classifier explained on a 3-class image folder), else by number
    out_names = run.output_classes or list(ds.classes)

    def pred_name(i: int) -> str:
        return out_names[i] if 0 <= i < len(out_names) else str(i)

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
            write_png(site / f"{base}-original.png", expl.x[k])
            write_png(site / f"{base}-cladec.png", expl.x_cladec[k])
            if expl.x_refae is not None:
                write_png(site / f"{base}-refae.png", expl.x_refae[k])
            entries.append(
                {
                    "item_id": item_id,
                    "image_id": image_ids[k],
                    "true_label": ds.classes[int(y[k])],
                    "predicted": pred_name(int(expl.pred_x[k])),
                    "original": f"{base}-original.png",
                    "refae": f"{base}-refae.png" if has_refae else None,
                    "cladec": f"{base}-cladec.png",
                }
            )
        data = {
            "format": "cladec-study",
            "study_id": study_id,
            "concepts": CONCEPTS,
            "columns": ANSWER_COLUMNS,
            "has_refae": has_refae,
            "order": order,
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
