"""`cladec explain`."""

from __future__ import annotations

import argparse
import sys

from .._errors import ConfigError
from ._args import importable_cwd, parse_device


def cmd_explain(args: argparse.Namespace) -> int:
    """Handler of ``cladec explain``: save a triplet grid (original | RefAE | ClaDec) of a run.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> from cladec.cli import main
        >>> main(["explain", "--run", str(run_dir), "--n", "8", "--out", "triplets.png", "-q"])
        8 fashion-mnist-mini test images, layer conv2: MSE ClaDec ..., RefAE ...; classifier accuracy originals ...
        wrote triplets.png
        0
    """
    import torch

    from ..data.recorded import load_recorded_dataset
    from ..data.sizes import check_dataset_fits
    from ..explanation import explain
    from ..runs import load_run

    if not str(args.out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file, got {args.out!r}")
    dev = parse_device(args.device)
    importable_cwd()  # a run made with --factory imports the user's module again
    run = load_run(args.run, device=dev)
    ds_cfg = run.config.get("dataset", {})
    name = args.dataset or ds_cfg.get("name")
    if not name:
        raise ConfigError("give the data set with --dataset NAME (the run does not record one)")
    check_dataset_fits(
        name,
        [(args.split, None)],
        ds_cfg.get("size"),
        what=f"the run's image size {ds_cfg.get('size')} (run.json dataset.size)",
    )
    # --data-root, else the run's recorded root while it holds the data set, else $CLADEC_DATA / the user cache
    ds = load_recorded_dataset(name, args.data_root, ds_cfg.get("root"), split=args.split, size=ds_cfg.get("size"))
    x, y = ds.tensors()
    n = min(args.n, len(ds))
    g = torch.Generator().manual_seed(int(args.seed))
    idx = torch.randperm(len(ds), generator=g)[:n].sort().values
    # the classifier's outputs are the classes it was trained on (else those of the run's data set)
    out_classes = run.output_classes
    labels = y[idx]
    if out_classes and list(ds.classes) != list(out_classes):
        # another label space: a true class is no class the classifier knows, so no accuracy can be measured
        labels = None
        shown = ", ".join(map(str, list(out_classes)[:4])) + (", ..." if len(out_classes) > 4 else "")
        print(
            f"cladec: note: the classes of {ds.name} are not the classifier's ({shown}); predictions are named "
            "with the classifier's classes and no accuracy is reported",
            file=sys.stderr,
        )
    classes = list(out_classes) if out_classes else ds.classes
    ex = explain(x[idx], cladec=run.cladec, refae=run.refae, labels=labels, classes=classes)
    ex.save_grid(args.out, columns=min(args.columns, n))
    s = ex.summary()
    line = f"{n} {ds.name} {args.split} images, layer {run.layer}: MSE ClaDec {s['mse_cladec']:.4f}"
    if "mse_refae" in s:
        line += f", RefAE {s['mse_refae']:.4f}"
    if "accuracy_original" in s:
        line += f"; classifier accuracy originals {s['accuracy_original']:.3f}, ClaDec {s['accuracy_cladec']:.3f}" + (
            f", RefAE {s['accuracy_refae']:.3f}" if "accuracy_refae" in s else ""
        )
    else:
        line += (
            f"; classifier agrees with its prediction on the original for ClaDec's reconstructions "
            f"{s['agreement_cladec']:.3f}" + (f", RefAE's {s['agreement_refae']:.3f}" if "agreement_refae" in s else "")
        )
    print(line)
    print(f"wrote {args.out}")
    return 0
