"""Building the static report of a run, evaluation, sweep or demo directory: :func:`build_report` (what the site
shows is described in :mod:`cladec.report`)."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from .._version import __version__
from ._gallery import build_gallery
from ._site import check_device, copy_static, environment, script_json, site_dir
from ._sources import RunRef, Source, detect_source
from ._tables import eval_section, fmt_value, read_json_obj, saliency_section, sweep_section

__all__ = ["build_report"]

#: The run statistics shown in the configuration: (key in run.json's metrics, label, short label).
STATS = (
    ("accuracy_original", "accuracy on originals", "acc. original"),
    ("accuracy_refae", "accuracy on RefAE", "acc. RefAE"),
    ("accuracy_cladec", "accuracy on ClaDec", "acc. ClaDec"),
    ("mse_refae", "MSE RefAE", "MSE RefAE"),
    ("mse_cladec", "MSE ClaDec", "MSE ClaDec"),
)

_KIND_TEXT = {
    "run": "Run directory",
    "eval": "Evaluation directory",
    "sweep": "Sweep directory",
    "demo": "Demo directory",
}


def _classifier_text(ref: RunRef) -> tuple[str, dict[str, Any]]:
    """A short model description and the classifier's info (from its checkpoint, without loading it)."""
    spec = ref.config.get("classifier") or {}
    if spec.get("type") in ("factory", "source"):
        return str(spec.get(spec["type"], "custom model")), {}
    info: dict[str, Any] = {}
    p = spec.get("path")
    if isinstance(p, str):
        cand = [Path(p) if Path(p).is_absolute() else ref.path / p]
        if isinstance(spec.get("abs_path"), str):
            cand.append(Path(spec["abs_path"]))
        for c in cand:
            obj = read_json_obj(c / "classifier.json")
            if obj:
                info = obj
                break
    arch = str(info.get("arch") or "classifier")
    kw = info.get("arch_kwargs") or {}
    width = kw.get("width")
    return (f"{arch} (width {width:g})" if isinstance(width, (int, float)) and width != 1 else arch), info


def _run_view(ref: RunRef) -> dict[str, Any]:
    cfg = ref.config
    model, info = _classifier_text(ref)
    ds = cfg.get("dataset") or {}
    shape = cfg.get("image_shape") or ds.get("image_shape")
    shape_txt = "×".join(str(s) for s in shape[1:]) if isinstance(shape, list) and len(shape) == 3 else ""
    ds_txt = str(ds.get("name", "?"))
    extra = [
        t for t in (shape_txt, f"{ds['n_train']:,} training images" if isinstance(ds.get("n_train"), int) else "") if t
    ]
    if extra:
        ds_txt += f" ({', '.join(extra)})"
    exp = read_json_obj(ref.path / "cladec" / "cladec.json") or {}
    act = exp.get("activation_shape") or []
    act_txt = "×".join(str(a) for a in act) if act else ""
    neurons = cfg.get("neurons")
    if neurons is None:
        n_txt = f"all ({act_txt})" if act_txt else "all"
    else:
        n_txt = f"{len(neurons)} selected" + (f": {', '.join(map(str, neurons[:8]))}{' …' if len(neurons) > 8 else ''}")
    ep = cfg.get("epochs")
    rep = cfg.get("refae_epochs")
    ep_txt = f"{ep}" + (f" (RefAE {rep})" if rep not in (None, ep) else "")
    chips = [
        ("Model", model),
        ("Layer", cfg.get("layer", "?")),
        ("Neurons", n_txt),
        ("α", fmt_value(float(cfg["alpha"])) if isinstance(cfg.get("alpha"), (int, float)) else str(cfg.get("alpha"))),
        ("Data set", ds_txt),
        ("Epochs", ep_txt),
        ("Seed", str(cfg.get("seed", "–"))),
        ("Version", f"cladec {cfg.get('cladec_version', '?')}"),
    ]
    m = cfg.get("metrics") or {}
    # a run fitted without a RefAE of its own is shown with its layer's shared RefAE: its numbers are those
    # measured in the run that fitted it, and say so
    shared_from: Path | None = None
    shared_m: dict[str, Any] = {}
    if ref.refae_from is not None and not (ref.path / "refae").is_dir():
        shared_from = ref.refae_from.parent
        shared_m = (read_json_obj(shared_from / "run.json") or {}).get("metrics") or {}
    stats: list[dict[str, Any]] = []
    for key, label, short in STATS:
        v, shared = m.get(key), False
        if not isinstance(v, (int, float)) and shared_from is not None and key.endswith("_refae"):
            v, shared = shared_m.get(key), True
        if isinstance(v, (int, float)):
            text = f"{100 * v:.1f}%" if key.startswith("acc") else f"{v:.4f}"
            stats.append(
                {
                    "label": label
                    + (f" (shared RefAE, fitted in {shared_from.name})" if shared and shared_from is not None else ""),
                    "short": short,
                    "value": text,
                    "shared": shared,
                }
            )
    n = m.get("test_images")
    if isinstance(n, int) and stats:
        stats[0]["label"] += f" ({n:,} test images)"
    return {
        "name": ref.path.name,
        "chips": chips,
        "stats": stats,
        "path": str(ref.path),
        "refae_shared_from": shared_from.name if shared_from is not None else None,
    }


def _config_view(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Split the runs' settings into those all runs share (chips) and those that vary (table columns)."""
    if not runs:
        return {"common": [], "columns": [], "rows": [], "stat_names": [], "shared_from": []}
    keys = [k for k, _ in runs[0]["chips"]]
    vals = [dict(r["chips"]) for r in runs]
    common = [(k, vals[0][k]) for k in keys if all(v.get(k) == vals[0][k] for v in vals)]
    columns = [k for k in keys if k not in dict(common)]
    present = {s["short"] for r in runs for s in r["stats"]}
    stat_names = [short for _, _, short in STATS if short in present]
    rows = []
    for r, v in zip(runs, vals, strict=True):
        st = {s["short"]: s["value"] + (" (shared)" if s["shared"] else "") for s in r["stats"]}
        rows.append(
            {"cells": [r["name"]] + [v.get(k, "") for k in columns], "stats": [st.get(n, "–") for n in stat_names]}
        )
    shared = sorted({r["refae_shared_from"] for r in runs if r.get("refae_shared_from")})
    return {
        "common": common,
        "columns": ["Run"] + columns,
        "rows": rows,
        "stat_names": stat_names,
        "shared_from": shared,
    }


def _title(src: Source) -> str:
    if src.kind in ("run", "eval") and src.runs:
        r = src.runs[0]
        head = "Evaluation" if src.kind == "eval" else "ClaDec explanations"
        return f"{head} · layer {r.layer}, α = {r.alpha:g}"
    if src.kind == "sweep":
        layers = sorted({r.layer for r in src.runs})
        alphas = sorted({r.alpha for r in src.runs})
        return f"Sweep · {len(layers)} layer{'s' * (len(layers) != 1)}, {len(alphas)} α value{'s' * (len(alphas) != 1)}"
    if src.kind == "demo":
        n_layers = len({r.layer for r in src.runs})
        text = f"cladec demo · {n_layers} layer{'s' * (n_layers != 1)}"
        return text + (f", {len(src.runs)} runs" if len(src.runs) != n_layers else "")
    return f"Report · {src.path.name}"


def _rel_title(p: Path, base: Path) -> str:
    try:
        rel = p.resolve().relative_to(base.resolve())
        return str(rel) if str(rel) != "." else base.name
    except ValueError:
        return str(p)


def build_report(
    source: str | os.PathLike,
    out: str | os.PathLike,
    *,
    n_images: int = 48,
    data_root: str | os.PathLike | None = None,
    device: str | None = None,
    title: str | None = None,
) -> Path:
    """Build a self-contained static HTML report of a run, evaluation, sweep or demo directory.

    The site is written to ``out`` (replaced if it is a page cladec made before; any other non-empty
    folder is refused): ``index.html``, the image tiles under ``img/``, copied figures under ``assets/``
    and the stylesheet and script under ``static/``. It needs no network and opens from disk.

    Args:
        source: A run directory (``run.json``), an evaluation directory (``metrics.json``), a sweep
            directory (``sweep.json``) or a demo directory (``runs/<layer>/``).
        out: Output folder.
        n_images: Test images in the gallery (class-balanced, the same for every run).
        data_root: Where the run's data set is (default: the root recorded in the run, else
            ``$CLADEC_DATA`` / the user cache).
        device: Device for the reconstructions (default: CPU): ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        title: Page title (default: derived from the source).

    Returns:
        The path of ``index.html``.

    Raises:
        SaveFormatError: ``source`` is none of the accepted directories, or a run in it is broken.
        ConfigError: bad ``n_images`` or ``device``, or an ``out`` that would overwrite something else.
        DataError: the run's data set cannot be found (pass ``data_root``).

    Examples:
        >>> from cladec.report import build_report
        >>> build_report(run_dir, "site/", n_images=8)  # run_dir: a run directory (cladec fit)
        PosixPath('site/index.html')
    """

    if isinstance(n_images, bool) or not isinstance(n_images, int) or not 1 <= n_images <= 1000:
        raise ConfigError(f"n_images must be an integer from 1 to 1000, got {n_images!r}")
    device = check_device(device)
    source = Path(source)
    out = Path(out)
    env = environment()
    src = detect_source(source, exclude=[out])
    with site_dir(out, "report", protect=[source]) as site:
        notes = list(src.notes)
        gallery = build_gallery(
            src.runs,
            site,
            n_images=n_images,
            data_root=str(data_root) if data_root is not None else None,
            device=device,
            notes=notes,
        )
        runs_view = [_run_view(r) for r in src.runs]
        if gallery:
            order = {L["name"]: i for i, L in enumerate(gallery["layers"])}
            pairs = sorted(
                zip(src.runs, runs_view, strict=True),
                key=lambda t: (order.get(t[0].layer, 99), t[0].alpha, t[0].path.name),
            )
            runs_view = [v for _, v in pairs]
        config = _config_view(runs_view)
        evals = []
        for k, e in enumerate(src.evals):
            t = "" if src.kind == "eval" and len(src.evals) == 1 else _rel_title(e, src.path)
            evals.append(eval_section(e, site, f"eval-{k}", t))
        saliency = [
            saliency_section(s, site, f"saliency-{k}", _rel_title(s, src.path)) for k, s in enumerate(src.saliency)
        ]
        sweep = sweep_section(src.path, src.sweep, site) if src.sweep is not None else None
        page_data: dict[str, Any] = {"kind": src.kind, "gallery": None}
        if gallery:
            page_data["gallery"] = {k: gallery[k] for k in ("classes", "pred_classes", "images", "layers", "scale")}
        html = env.get_template("report.html").render(
            title=title or _title(src),
            kind_text=_KIND_TEXT[src.kind],
            source=str(source),
            generated=datetime.now().strftime("%Y-%m-%d %H:%M"),
            version=__version__,
            notes=notes,
            runs=runs_view,
            config=config,
            gallery=gallery,
            evals=evals,
            sweep=sweep,
            saliency=saliency,
            summary_text=src.summary_text,
            data_json=script_json(page_data),
        )
        (site / "index.html").write_text(html, encoding="utf-8")
        copy_static(site, ("cladec.css", "report.js"))
    return out / "index.html"
