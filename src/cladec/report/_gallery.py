"""The gallery: reconstruct the same test images with every run and write the PNG tiles."""

from __future__ import annotations

import gc
import hashlib
from pathlib import Path
from typing import Any

import torch

from .._errors import CladecError, DataError
from .._sampling import balanced_indices
from ..data.recorded import same_dataset
from ..explanation import explain
from ..models.spec import classifier_classes
from ..persistence import load
from ..runs import load_run
from ._images import colormap_lut, diff_map, diff_scale, write_colorbar, write_png
from ._sources import RunRef


def pick_images(labels: torch.Tensor, n: int) -> list[int]:
    """Class-balanced, deterministic choice of ``n`` indices: round-robin over classes in data order."""
    return balanced_indices(labels, n, order="index")


def _fmt_alpha(a: float) -> str:
    return f"{a:g}"


def _layer_order(model: torch.nn.Module) -> dict[str, int]:
    return {name: i for i, (name, _) in enumerate(model.named_modules())}


def _names(xs: list[str], n: int = 6) -> str:
    return ", ".join(str(x) for x in xs[:n]) + (f" … ({len(xs)} in all)" if len(xs) > n else "")


def classifier_fingerprint(model: torch.nn.Module) -> str:
    """A hash of a model's parameters and buffers (names, dtypes, shapes, values): the same classifier or not."""
    h = hashlib.sha256()
    for k, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _dataset_key(cfg: dict[str, Any]) -> tuple[str, list[str] | None]:
    ds = cfg.get("dataset")
    if not isinstance(ds, dict):
        ds = {}
    classes = ds.get("classes")
    return str(ds.get("name", "?")), (list(classes) if isinstance(classes, list) else None)


def _dataset_mismatch(base: dict[str, Any], cfg: dict[str, Any]) -> str | None:
    """Why a run's data set is not the gallery's (None when it is the same)."""

    name0, classes0 = _dataset_key(base)
    name, classes = _dataset_key(cfg)
    if not same_dataset(name0, name):
        return f"it was fitted on data set {name!r}, the gallery shows {name0!r}"
    if classes is not None and classes0 is not None and classes != classes0:
        return f"its data set has the classes {_names(classes)}, the gallery's {_names(classes0)}"
    return None


def _data_hint(ref: RunRef) -> str:
    """What to do when the run's test images cannot be loaded."""
    name = str((ref.config.get("dataset") or {}).get("name"))
    if name.lower().startswith("imagefolder:"):
        folder = name[len("imagefolder:") :]
        return (
            f"the report reconstructs test images of the run's image folder {folder} (recorded in "
            f"{ref.path / 'run.json'}): that folder or zip must exist, with a test/ split; --data-root "
            "does not apply to image folders"
        )
    return (
        f"the report reconstructs test images of the run's data set {name!r}: pass --data-root / "
        "data_root= to say where it is"
    )


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

    The first run that loads sets the images (its data set), the classifier and the class names; a
    run that cannot be loaded, or whose data set, image shape or classifier differs, is left out with a
    note in ``notes``.

    Args:
        runs: The runs to show.
        site: The page's folder.
        n_images: Test images in the gallery.
        data_root: Where the data set is (None: the root recorded in the run).
        device: Device for the reconstructions (None: CPU).
        notes: Notes shown on the page; appended to.

    Returns:
        ``{"classes", "pred_classes", "images", "layers", "scale", "cards", "tile", ...}`` for the
        template and the page's script, or None when no run could be shown.

    Raises:
        DataError: the first usable run's data set cannot be found.

    Examples:
        >>> from cladec.report._sources import detect_source
        >>> g = build_gallery(detect_source(run_dir).runs, Path("site"), n_images=8, data_root=None,
        ...                   device=None, notes=[])
        >>> len(g["images"]), [layer["name"] for layer in g["layers"]], Path("site/img").is_dir()
        (8, ['conv2'], True)
    """

    if not runs:
        return None
    dev = device or "cpu"
    n_load = max(n_images * 12, 240)
    base: dict[str, Any] | None = None  # the first usable run: its data set, images, classifier
    results = []  # (RunRef, Explanation, uses a shared RefAE)
    for ref in runs:
        run = None
        try:
            try:
                run = load_run(ref.path, device=dev)
                shared = False
                if run.refae is None and ref.refae_from is not None:
                    run.refae = load(ref.refae_from, run.classifier)
                    shared = True
            except CladecError as err:
                notes.append(f"{ref.path.name}: could not be loaded ({err}); left out of the gallery.")
                continue
            if base is None:
                try:
                    ds = run.dataset("test", limit=n_load, data_root=data_root)
                except DataError as err:
                    raise DataError(f"{err}\n({_data_hint(ref)})") from None
                x_all, y_all = ds.tensors()
                idx = pick_images(y_all, n_images)
                base = {
                    "ref": ref,
                    "cfg": ref.config,
                    "idx": idx,
                    "x": x_all[idx].clone(),
                    "y": y_all[idx].clone(),
                    "classes": list(ds.classes),
                    "shape": tuple(x_all.shape[1:]),
                    "order": _layer_order(run.classifier),
                    "fp": classifier_fingerprint(run.classifier),
                    "clf_classes": classifier_classes(run.classifier_info),
                }
                del ds, x_all, y_all
            else:
                why = None
                if tuple(run.image_shape) != base["shape"]:
                    why = f"its images of shape {tuple(run.image_shape)} differ from the gallery's {base['shape']}"
                why = why or _dataset_mismatch(base["cfg"], ref.config)
                if why is None and classifier_fingerprint(run.classifier) != base["fp"]:
                    why = f"it explains another classifier than {base['ref'].path.name}"
                if why:
                    notes.append(f"{ref.path.name}: {why}; left out of the gallery.")
                    continue
            try:
                e = explain(base["x"], cladec=run.cladec, refae=run.refae, labels=base["y"])
            except CladecError as err:
                notes.append(
                    f"{ref.path.name}: could not reconstruct the gallery's images ({err}); left out of the gallery."
                )
                continue
            results.append((ref, e, shared))
        finally:
            run = None
            gc.collect()
    if not results or base is None:
        return None
    idx, x, y, classes, order, shape = base["idx"], base["x"], base["y"], base["classes"], base["order"], base["shape"]

    # predictions are named by the classifier's own classes (a classifier may have more outputs than the data set
    # has classes); without recorded names, by their index
    n_pred = 1 + max(
        int(t.max())
        for _, e, _ in results
        for t in (e.pred_x, e.pred_cladec, e.pred_refae)
        if t is not None and t.numel()
    )
    clf_classes = base["clf_classes"]
    known = clf_classes or []
    pred_classes = [known[i] if i < len(known) else str(i) for i in range(max(n_pred, len(known)))]
    if clf_classes is None:
        notes.append(
            "The classifier records no class names: its predictions are shown by class index, and count as "
            "correct when the index equals the test label's."
        )
    elif clf_classes != classes:
        notes.append(
            f"The classifier's classes ({_names(clf_classes)}) are not the data set's ({_names(classes)}): "
            "predictions are named by the classifier's classes and count as correct when their index equals "
            "the test label's, as in the run's metrics."
        )

    lut = colormap_lut("magma")
    diffs = []
    for _, e, _ in results:
        diffs.append((e.x_cladec - e.x).abs().mean(1))
        if e.x_refae is not None:
            diffs.append((e.x_refae - e.x).abs().mean(1))
    scale = diff_scale(diffs)
    write_colorbar(site / "img" / "colorbar.png", lut)

    for j in range(len(idx)):
        write_png(site / "img" / "orig" / f"{j:03d}.png", x[j])

    # group by layer (classifier order); a layer's runs form an α series when their α values differ, else
    # each is named by its run directory
    by_layer: dict[str, list[tuple[RunRef, Any, bool]]] = {}
    for ref, e, shared in results:
        by_layer.setdefault(e.layer, []).append((ref, e, shared))
    layer_names = sorted(by_layer, key=lambda n: (order.get(n, 10**9), n))
    layers: list[dict[str, Any]] = []
    vcount = 0
    for li, name in enumerate(layer_names):
        group = sorted(by_layer[name], key=lambda t: (t[0].alpha, t[0].path.name))
        alphas = [ref.alpha for ref, _, _ in group]
        series = "α" if len(set(alphas)) == len(alphas) else "run"
        variants: list[dict[str, Any]] = []
        for ref, e, shared in group:
            vkey = f"v{vcount:02d}"
            vcount += 1
            items = []
            for j in range(len(idx)):
                base_name = f"img/{vkey}/{j:03d}"
                write_png(site / f"{base_name}-cladec.png", e.x_cladec[j])
                write_png(site / f"{base_name}-dcladec.png", diff_map(e.x[j], e.x_cladec[j], scale, lut))
                item: dict[str, Any] = {
                    "cladec": f"{base_name}-cladec.png",
                    "dcladec": f"{base_name}-dcladec.png",
                    "pred_x": int(e.pred_x[j]),
                    "pred_e": int(e.pred_cladec[j]),
                    "mse_e": round(float(e.mse_cladec[j]), 6),
                    "refae": None,
                    "drefae": None,
                    "pred_r": None,
                    "mse_r": None,
                }
                if e.x_refae is not None:
                    write_png(site / f"{base_name}-refae.png", e.x_refae[j])
                    write_png(site / f"{base_name}-drefae.png", diff_map(e.x[j], e.x_refae[j], scale, lut))
                    item.update(
                        refae=f"{base_name}-refae.png",
                        drefae=f"{base_name}-drefae.png",
                        pred_r=int(e.pred_refae[j]),
                        mse_r=round(float(e.mse_refae[j]), 6),
                    )
                items.append(item)
            summary = e.summary()
            alpha_text = _fmt_alpha(ref.alpha)
            variants.append(
                {
                    "key": vkey,
                    "alpha": ref.alpha,
                    "alpha_text": alpha_text,
                    "run": ref.path.name,
                    "label": alpha_text if series == "α" else ref.path.name,
                    "has_refae": e.x_refae is not None,
                    "refae_shared": shared and e.x_refae is not None,
                    "summary": {k: v for k, v in summary.items() if isinstance(v, (int, float)) and k != "alpha"},
                    "items": items,
                }
            )
        layers.append(
            {
                "name": name,
                "index": li,
                "variants": variants,
                "default": 0,
                "series": series,
                "has_refae": any(v["has_refae"] for v in variants),
            }
        )

    c, h, w = shape
    tile = int(w * max(1, round(96 / w))) if w <= 128 else 128
    images = [
        {
            "j": j,
            "index": int(idx[j]),
            "label": int(y[j]),
            "label_name": classes[int(y[j])],
            "src": f"img/orig/{j:03d}.png",
        }
        for j in range(len(idx))
    ]
    cards = []
    for im in images:
        j = im["j"]
        blocks = []
        for L in layers:
            v = L["variants"][L["default"]]
            blocks.append(
                {
                    "layer": L["name"],
                    "li": L["index"],
                    "alpha_text": v["alpha_text"],
                    "label": v["label"],
                    "series": L["series"],
                    **v["items"][j],
                }
            )
        cards.append({**im, "blocks": blocks})
    return {
        "classes": classes,
        "pred_classes": pred_classes,
        "images": images,
        "layers": layers,
        "scale": round(scale, 4),
        "cards": cards,
        "tile": tile,
        "image_size": [h, w],
        "dataset": (base["cfg"].get("dataset") or {}).get("name"),
        "split": "test",
        "has_refae": any(L["has_refae"] for L in layers),
        "all_refae": all(v["has_refae"] for L in layers for v in L["variants"]),
    }
