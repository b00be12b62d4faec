"""``cladec fit``."""

from __future__ import annotations

import argparse
import sys
import warnings
from typing import Any

from .._errors import ConfigError
from ._args import (
    OPTION_NAMES,
    add_common,
    add_model_source,
    alpha_value,
    importable_cwd,
    parse_device,
    parse_input_norm,
    parse_neurons,
    pos_int,
)
from ._data_args import add_lazy_options
from ._train_options import add_train_options

__all__ = ["register", "cmd_fit"]


def register(subparsers: Any) -> None:
    """Add ``fit`` to ``ArgumentParser.add_subparsers()`` (its ``func`` is :func:`cmd_fit`).

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); register(p.add_subparsers(dest="command"))
        >>> p.parse_args(["fit", "--model", "clf", "--layer", "last", "--out", "run"]).alpha
        0.001
    """
    f = subparsers.add_parser(
        "fit",
        help="fit ClaDec (and its RefAE) for one layer and save a run directory",
        description="Fit ClaDec for one layer of a classifier, loss (1 − α)·MSE + α·CE, and the reference "
        "auto-encoder (RefAE: same architecture up to the layer, trained from scratch on reconstruction only), "
        "and save both with run.json (settings and test metrics) to --out. With equal epochs the two train "
        "together (one batch order; on a GPU their steps overlap), with the same result as one after the other "
        "unless the trained modules draw random numbers (dropout).",
    )
    add_model_source(f)
    f.add_argument(
        "--input-norm",
        metavar="MEAN,STD",
        help="with --factory: the normalisation your model expects, e.g. '0.5,0.5' or "
        "'0.49,0.48,0.45;0.25,0.24,0.26' (checkpoints record their own)",
    )
    f.add_argument(
        "--dataset", help="data set (default: the checkpoint's); fashion-mnist, mnist, cifar10, fashion-mnist-mini ..."
    )
    layer_help = "layer name (see `cladec layers`); 'last' / 'middle' pick the architecture's defaults"
    f.add_argument("--layer", required=True, help=layer_help)
    layout_help = "the layer output's layout: (N,C,H,W), channels-last (N,H,W,C), (N,T,D), (N,D) (default: detected)"
    f.add_argument("--layout", choices=["nchw", "nhwc", "tokens", "flat"], help=layout_help)
    neurons_help = "decode only these units (channels), e.g. '0,1,5-9' (default: all)"
    f.add_argument("--neurons", metavar="LIST", help=neurons_help)
    f.add_argument(
        "--alpha", type=alpha_value, default=0.001, help="α, weight of the classification loss (default: 0.001)"
    )
    f.add_argument("--epochs", type=pos_int, default=5, help="ClaDec epochs (default: 5)")
    refae_help = "RefAE epochs (default: --epochs; a different value fits RefAE after ClaDec)"
    f.add_argument("--refae-epochs", type=pos_int, help=refae_help)
    f.add_argument("--no-refae", action="store_true", help="fit ClaDec only")
    f.add_argument("--out", required=True, metavar="DIR", help="run directory to write (replaced if it exists)")
    f.add_argument(
        "--size",
        type=pos_int,
        help="resize images to SIZE×SIZE (default: the size the classifier was trained at when its "
        "checkpoint records it, also for another data set; else the data's own size)",
    )
    f.add_argument("--limit", type=pos_int, help="use the first N training images")
    f.add_argument("--test-limit", type=pos_int, default=2000, help="test images for the metrics (default: 2000)")
    add_train_options(f)
    add_lazy_options(f)
    add_common(f)
    f.set_defaults(func=cmd_fit)


def cmd_fit(args: argparse.Namespace) -> int:
    """Handler of ``cladec fit`` (:func:`cladec.runs.fit_run`).

    Examples:
        >>> from cladec.cli import main
        >>> main(["fit", "--model", str(clf_dir), "--layer", "conv2", "--epochs", "1", "--limit", "500",
        ...       "--test-limit", "100", "--lr", "3e-3", "--batch-size", "32", "--out", "run", "-q"])
        layer conv2, α = 0.001: test MSE ClaDec ..., RefAE ...; classifier accuracy on originals ...
        wrote run directory run  (next: cladec explain --run run --out triplets.png)
        0
    """
    from ..explainers.fitting import CollapseWarning
    from ..runs import fit_run

    dev = parse_device(args.device)
    neurons = parse_neurons(args.neurons) if args.neurons is not None else None
    if args.no_refae and args.refae_epochs is not None:
        raise ConfigError("--refae-epochs sets the RefAE's epochs, but --no-refae fits no RefAE; drop one of them")
    importable_cwd()  # --factory PKG.MOD:FN imports the user's module from here
    settings = "dataset layer alpha epochs refae_epochs batch_size lr seed size limit test_limit data_root lazy".split()
    settings += "factory weights factory_kwargs num_classes pretrained decoder_norm decoder_arch layout workers".split()
    settings += ["recipe", "resume", "validation", "until_mse", "patience"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CollapseWarning)  # reported below from run.json, in one line
        run = fit_run(
            args.out,
            **{k: getattr(args, k) for k in settings},
            classifier_dir=args.model,
            input_norm=parse_input_norm(args.input_norm),
            neurons=neurons,
            refae=not args.no_refae,
            device=str(dev),
            compile=args.compile or False,
            verbose=not args.quiet,
            names=OPTION_NAMES,
        )
    m = run.config["metrics"]
    line = f"layer {run.layer}, α = {run.alpha:g}: test MSE ClaDec {m['mse_cladec']:.4f}"
    line += f", RefAE {m['mse_refae']:.4f}" if "mse_refae" in m else ""
    if "accuracy_cladec" in m:
        line += (
            f"; classifier accuracy on originals {m['accuracy_original']:.3f}, on ClaDec's reconstructions "
            f"{m['accuracy_cladec']:.3f}" + (f", on RefAE's {m['accuracy_refae']:.3f}" if "accuracy_refae" in m else "")
        )
    print(line)
    for kind, why in (run.config.get("stopped") or {}).items():
        if why:
            print(f"{kind} stopped after {run.config['epochs_run'][kind]} epoch(s): {why}")
    for kind, flag in run.config.get("collapsed", {}).items():
        if flag:
            print(
                f"cladec: warning: {kind} for layer {run.layer} collapsed: its reconstructions hardly vary "
                "across images. Train longer (--epochs), on more images (--limit) or with --decoder-norm batch",
                file=sys.stderr,
            )
    print(f"wrote run directory {args.out}  (next: cladec explain --run {args.out} --out triplets.png)")
    return 0
