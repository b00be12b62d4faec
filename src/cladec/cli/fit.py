"""`cladec fit`."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from .._errors import ConfigError
from ._args import parse_device, parse_neurons
from .classifier import load_model_arg


def cmd_fit(args: argparse.Namespace) -> int:
    """Handler of ``cladec fit``: fit ClaDec (+ RefAE) for one layer into a run directory.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> from cladec.cli import main
        >>> main(["fit", "--model", str(clf_dir), "--layer", "conv2", "--epochs", "1", "--limit", "500",
        ...       "--test-limit", "100", "--lr", "3e-3", "--batch-size", "32", "--out", "run", "-q"])
        layer conv2, α = 0.001: test MSE ClaDec ..., RefAE ...; classifier accuracy on originals ...
        wrote run directory run  (next: cladec explain --run run --out triplets.png)
        0
    """
    from ..capture import resolve_layer_or_role
    from ..explainers.fitting import CollapseWarning
    from ..runs import fit_run

    dev = parse_device(args.device)
    neurons = parse_neurons(args.neurons) if args.neurons is not None else None
    if args.input_norm is not None and args.factory is None:
        raise ConfigError("--input-norm goes with --factory; a --model checkpoint records its own normalisation")
    if args.no_refae and args.refae_epochs is not None:
        raise ConfigError("--refae-epochs sets the RefAE's epochs, but --no-refae fits no RefAE; drop one of them")
    spec, model, info = load_model_arg(args)
    layer = resolve_layer_or_role(model, args.layer)  # fails fast, listing valid names
    dataset = args.dataset
    if dataset is None:
        ds = info.get("dataset") if isinstance(info, dict) else None
        dataset = ds.get("name") if isinstance(ds, dict) else None
        if not dataset:
            raise ConfigError("give the data set with --dataset NAME (the classifier does not record one)")
    _check_fit_fits(args, dataset, model, info, dev)
    del model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # reported below from run.json, in one line
        run = fit_run(
            args.out,
            dataset=dataset,
            layer=layer,
            classifier_dir=args.model if spec["type"] == "checkpoint" else None,
            factory=spec.get("factory"),
            weights=spec.get("weights"),
            factory_kwargs=spec.get("kwargs"),
            input_norm=spec.get("input_norm"),
            alpha=args.alpha,
            neurons=neurons,
            epochs=args.epochs,
            refae=not args.no_refae,
            refae_epochs=args.refae_epochs,
            batch_size=args.batch_size,
            lr=args.lr,
            seed=args.seed,
            size=args.size,
            limit=args.limit,
            test_limit=args.test_limit,
            data_root=args.data_root,
            device=str(dev),
            decoder_norm=args.decoder_norm,
            compile=args.compile or False,
            verbose=not args.quiet,
        )
    m = run.config["metrics"]
    line = f"layer {run.layer}, α = {args.alpha:g}: test MSE ClaDec {m['mse_cladec']:.4f}"
    if "mse_refae" in m:
        line += f", RefAE {m['mse_refae']:.4f}"
    if "accuracy_cladec" in m:
        line += (
            f"; classifier accuracy on originals {m['accuracy_original']:.3f}, "
            f"on ClaDec's reconstructions {m['accuracy_cladec']:.3f}"
        )
        if "accuracy_refae" in m:
            line += f", on RefAE's {m['accuracy_refae']:.3f}"
    print(line)
    for kind, flag in run.config.get("collapsed", {}).items():
        if flag:
            print(
                f"cladec: warning: {kind} for layer {run.layer} collapsed: its reconstructions hardly vary "
                "across images. Train longer (--epochs), on more images (--limit) or with --decoder-norm batch",
                file=sys.stderr,
            )
    print(f"wrote run directory {args.out}  (next: cladec explain --run {args.out} --out triplets.png)")
    return 0


def _check_fit_fits(args: argparse.Namespace, dataset: str, model: Any, info: Any, dev: Any) -> None:
    """Refuse a ``fit`` whose images (at ``--size``, else the size the classifier records) or batches could not
    fit in memory, before any data is loaded (the size fit_run uses: ``--size``, else the checkpoint's)."""
    from .._limits import check_model_fits
    from ..data.sizes import check_dataset_fits

    rec = info.get("dataset") if isinstance(info, dict) else None
    rec = rec if isinstance(rec, dict) else {}
    shape = rec.get("image_shape")
    shape = shape if isinstance(shape, (list, tuple)) and len(shape) == 3 else None
    size = args.size if args.size is not None else (rec.get("size") or (list(shape[1:]) if shape else None))
    where = f"--size {size}" if args.size is not None else f"the classifier's recorded image size {size}"
    check_dataset_fits(dataset, [("train", args.limit), ("test", args.test_limit)], size, what=where)
    hw = (size, size) if isinstance(size, int) else size
    if (
        shape is not None
        and isinstance(hw, (list, tuple))
        and len(hw) == 2
        and all(isinstance(v, int) for v in hw)
        and isinstance(shape[0], int)
    ):
        batch = min(args.batch_size, args.limit) if args.limit else args.batch_size
        check_model_fits(
            model,
            (shape[0], *hw),
            batch,
            device=dev,
            train_copies=1,
            activation_copies=2,
            what=f"fitting on batches of {batch} {shape[0]}×{hw[0]}×{hw[1]} images (--batch-size)",
            hint="use a smaller --batch-size or --size",
        )
