"""The gallery: reconstruct the same test images with every run and write the PNG tiles."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import torch

from .._errors import DataError
from .._sampling import balanced_indices
from ._images import colormap_lut, diff_map, diff_scale, write_colorbar, write_png
from ._sources import RunRef


def pick_images(labels: torch.Tensor, n: int) -> list[int]:
    """Class-balanced, deterministic choice of ``n`` indices: round-robin over classes in data order."""
    return sorted(balanced_indices(labels.tolist(), n))


def _fmt_alpha(a: float) -> str:
    return f"{a:g}"


def _layer_order(model: torch.nn.Module) -> dict[str, int]:
    return {name: i for i, (name, _) in enumerate(model.named_modules())}


def build_gallery(
    runs: list[RunRef],
    site: Path,
    *,
    n_images: int,
    data_root: str | None,
    device: str | None,
    notes: list[str],
) -> dict[str, Any] | None:
    """Reconstruct ``n_images`` test images with each run; write tiles under ``site/img``.

    Returns:
        ``{"classes", "images", "layers", "scale", "cards", "tile"}`` for the template and the page's
        script, or None when there is no run.
    """
    from ..explanation import explain
    from ..runs import load_run

    if not runs:
        return None
    dev = device or "cpu"
    first = load_run(runs[0].path, device=dev)
    ds_cfg = runs[0].config.get("dataset", {})
    n_load = max(n_images * 12, 240)
    try:
        ds = first.dataset("test", limit=n_load, data_root=data_root)
    except DataError as e:
        raise DataError(f"{e}\n(the report reconstructs test images of the run's data set "
                        f"{ds_cfg.get('name')!r}: pass --data-root / data_root= to say where it is)") from None
    x_all, y_all = ds.tensors()
    idx = pick_images(y_all, n_images)
    x, y = x_all[idx].clone(), y_all[idx].clone()
    classes = list(ds.classes)
    order = _layer_order(first.classifier)
    shape = tuple(x.shape[1:])

    results = []  # (RunRef, Explanation)
    for k, ref in enumerate(runs):
        run = first if k == 0 else None
        try:
            if run is None:
                run = load_run(ref.path, device=dev)
            if run.refae is None and ref.refae_from is not None:
                from ..persistence import load

                run.refae = load(ref.refae_from, run.classifier)
            if tuple(run.image_shape) != shape:
                notes.append(f"{ref.path.name}: images of shape {tuple(run.image_shape)} differ from the gallery's "
                             f"{shape}; left out of the gallery.")
                continue
            e = explain(x, cladec=run.cladec, refae=run.refae, labels=y, classes=classes)
        finally:
            run = None
            gc.collect()
        results.append((ref, e))
    first = None
    if not results:
        return None

    lut = colormap_lut("magma")
    diffs = []
    for _, e in results:
        diffs.append((e.x_cladec - e.x).abs().mean(1))
        if e.x_refae is not None:
            diffs.append((e.x_refae - e.x).abs().mean(1))
    scale = diff_scale(diffs)
    write_colorbar(site / "img" / "colorbar.png", lut)

    for j in range(len(idx)):
        write_png(site / "img" / "orig" / f"{j:03d}.png", x[j])

    # group by layer (classifier order), α ascending
    by_layer: dict[str, list[tuple[RunRef, Any]]] = {}
    for ref, e in results:
        by_layer.setdefault(e.layer, []).append((ref, e))
    layer_names = sorted(by_layer, key=lambda n: (order.get(n, 10**9), n))
    layers = []
    vcount = 0
    for li, name in enumerate(layer_names):
        variants = []
        for ref, e in sorted(by_layer[name], key=lambda t: t[0].alpha):
            vkey = f"v{vcount:02d}"
            vcount += 1
            items = []
            for j in range(len(idx)):
                base = f"img/{vkey}/{j:03d}"
                write_png(site / f"{base}-cladec.png", e.x_cladec[j])
                write_png(site / f"{base}-dcladec.png", diff_map(e.x[j], e.x_cladec[j], scale, lut))
                item: dict[str, Any] = {
                    "cladec": f"{base}-cladec.png",
                    "dcladec": f"{base}-dcladec.png",
                    "pred_x": int(e.pred_x[j]),
                    "pred_e": int(e.pred_cladec[j]),
                    "mse_e": round(float(e.mse_cladec[j]), 6),
                    "refae": None, "drefae": None, "pred_r": None, "mse_r": None,
                }
                if e.x_refae is not None:
                    write_png(site / f"{base}-refae.png", e.x_refae[j])
                    write_png(site / f"{base}-drefae.png", diff_map(e.x[j], e.x_refae[j], scale, lut))
                    item.update(refae=f"{base}-refae.png", drefae=f"{base}-drefae.png",
                                pred_r=int(e.pred_refae[j]), mse_r=round(float(e.mse_refae[j]), 6))
                items.append(item)
            summary = e.summary()
            variants.append({
                "key": vkey,
                "alpha": ref.alpha,
                "alpha_text": _fmt_alpha(ref.alpha),
                "run": ref.path.name,
                "has_refae": e.x_refae is not None,
                "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "alpha"},
                "items": items,
            })
        layers.append({"name": name, "index": li, "variants": variants, "default": 0})

    c, h, w = shape
    tile = int(w * max(1, round(96 / w))) if w <= 128 else 128
    images = [{"j": j, "index": int(idx[j]), "label": int(y[j]), "label_name": classes[int(y[j])],
               "src": f"img/orig/{j:03d}.png"} for j in range(len(idx))]
    cards = []
    for im in images:
        j = im["j"]
        blocks = []
        for L in layers:
            v = L["variants"][L["default"]]
            blocks.append({"layer": L["name"], "li": L["index"], "alpha_text": v["alpha_text"], **v["items"][j]})
        cards.append({**im, "blocks": blocks})
    return {
        "classes": classes,
        "images": images,
        "layers": layers,
        "scale": round(scale, 4),
        "cards": cards,
        "tile": tile,
        "image_size": [h, w],
        "dataset": ds_cfg.get("name"),
        "split": "test",
    }
