"""The ``cladec`` command line.

Commands (``cladec COMMAND --help`` for every option)::

    cladec demo               train a classifier on the embedded data, fit ClaDec + RefAE on two layers,
                              write triplet grids and a summary (no data download, a few minutes on a CPU)
    cladec train-classifier   train a registered architecture on a data set and save a checkpoint
    cladec layers             list a classifier's layers with their output shapes
    cladec fit                fit ClaDec (and its RefAE) for one layer into a run directory
    cladec explain            draw original | RefAE | ClaDec triplets of a run as a PNG grid

More commands (``evaluate``, ``sweep``, ``saliency``, ``report`` ...) come from the modules
``cladec._cli_evaluate``, ``cladec._cli_saliency`` and ``cladec._cli_report`` when they are installed:
each exposes ``register(subparsers)`` and gives every parser it adds a ``func`` default, the handler,
which is called with the parsed namespace and returns the exit code.

Errors that come from the user's input (:class:`cladec.CladecError`, a missing file) are printed as one
message, ``cladec: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ._cli_args import learning_rate as _learning_rate
from ._cli_args import pos_int as _pos_int
from ._cli_args import seed_int as _seed_int
from ._errors import CladecError, ConfigError

__all__ = ["main", "build_parser", "parse_neurons", "parse_input_norm", "parse_image_shape"]

SUBCOMMAND_MODULES = ("cladec._cli_evaluate", "cladec._cli_saliency", "cladec._cli_report")


# --------------------------------------------------------------------------------------------------
# Argument parsing helpers
# --------------------------------------------------------------------------------------------------


def parse_neurons(text: str) -> list[int]:
    """Parse a unit selection such as ``"0,1,5-9"`` into a sorted-as-given list of indices.

    Args:
        text: Comma-separated indices and inclusive ranges ``a-b``.

    Returns:
        The list of indices, in the order given, ranges expanded.

    Raises:
        ConfigError: If the text is empty, malformed or has duplicates.

    Examples:
        >>> parse_neurons("0,1,5-7")
        [0, 1, 5, 6, 7]
    """
    out: list[int] = []
    bad = ConfigError(f"--neurons must look like '0,1,5-9' (indices and inclusive ranges), got {text!r}")
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        if "-" in part[1:]:
            lo_s, hi_s = part.split("-", 1) if not part.startswith("-") else (None, None)
            try:
                lo, hi = int(lo_s), int(hi_s)  # type: ignore[arg-type]  # None raises TypeError, caught below
            except (TypeError, ValueError):
                raise bad from None
            if hi < lo or lo < 0:
                raise bad
            out.extend(range(lo, hi + 1))
        else:
            try:
                v = int(part)
            except ValueError:
                raise bad from None
            if v < 0:
                raise bad
            out.append(v)
    if not out:
        raise bad
    if len(set(out)) != len(out):
        raise ConfigError(f"--neurons {text!r} names some units twice")
    return out


def parse_input_norm(text: str | None) -> tuple[list[float], list[float]] | None:
    """Parse a classifier's input normalisation ``mean, std`` from the command line.

    Accepted forms: ``"0.5,0.5"`` (one channel: mean, std), ``"m1,m2,m3,s1,s2,s3"`` (first half means,
    second half stds) and ``"m1,m2,m3;s1,s2,s3"``.

    Args:
        text: The option's value, or None.

    Returns:
        ``(means, stds)`` or None.

    Raises:
        ConfigError: If the text cannot be read so, a value is not finite or a std is not positive.

    Examples:
        >>> parse_input_norm("0.5,0.25")
        ([0.5], [0.25])
        >>> parse_input_norm("0.4,0.5,0.6;0.2,0.2,0.2")
        ([0.4, 0.5, 0.6], [0.2, 0.2, 0.2])
    """
    if text is None:
        return None
    msg = (
        f"--input-norm must be 'MEAN,STD' (one channel), 'M1,M2,M3,S1,S2,S3' or 'M1,M2,M3;S1,S2,S3' "
        f"with every std > 0, got {text!r}"
    )
    try:
        if ";" in text:
            m_s, s_s = text.split(";", 1)
            mean = [float(v) for v in m_s.split(",") if v.strip()]
            std = [float(v) for v in s_s.split(",") if v.strip()]
        else:
            vals = [float(v) for v in text.split(",") if v.strip()]
            if len(vals) % 2:
                raise ConfigError(msg)
            mean, std = vals[: len(vals) // 2], vals[len(vals) // 2 :]
    except ValueError:
        raise ConfigError(msg) from None
    if not mean or len(mean) != len(std) or any(s <= 0 for s in std):
        raise ConfigError(msg)
    if not all(math.isfinite(v) for v in (*mean, *std)):
        raise ConfigError(f"--input-norm needs finite numbers (no nan or inf), got {text!r}")
    return mean, std


def parse_image_shape(text: str) -> tuple[int, int, int]:
    """Parse ``"C,H,W"`` (``"1,28,28"``, also ``1x28x28``) into a tuple.

    Args:
        text: The option's value.

    Returns:
        ``(C, H, W)``.

    Raises:
        ConfigError: If it is not three positive integers.

    Examples:
        >>> parse_image_shape("3,32,32")
        (3, 32, 32)
    """
    parts = [p for p in str(text).replace("x", ",").replace("×", ",").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or any(s < 1 for s in shape):
        raise ConfigError(f"--image-shape must be C,H,W (three positive integers, e.g. 1,28,28), got {text!r}")
    return shape


def _pos_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not v > 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _alpha(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"α must be a number in [0, 1], got {text!r}") from None
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"α must lie in [0, 1] (0 = pure reconstruction), got {text!r}")
    return v


def _json_kwargs(text: str) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}': {e}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r}")
    return obj


def _add_common(p: argparse.ArgumentParser, *, data_root: bool = True, seed: bool = True) -> None:
    if data_root:
        p.add_argument(
            "--data-root",
            default=None,
            metavar="PATH",
            help="folder holding the data sets (default: $CLADEC_DATA, else the user cache folder)",
        )
    if seed:
        p.add_argument("--seed", type=_seed_int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_model_source(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("classifier (a checkpoint directory, or your own model)")
    g.add_argument(
        "--model",
        default=None,
        metavar="DIR",
        help="classifier checkpoint directory (made by `cladec train-classifier`)",
    )
    g.add_argument(
        "--factory",
        default=None,
        metavar="PKG.MOD:FN",
        help="your own model: an importable 'package.module:function' that builds it "
        "(the current folder is importable)",
    )
    g.add_argument(
        "--weights",
        default=None,
        metavar="FILE",
        help="weights for --factory (.safetensors or a PyTorch state dict, loaded with weights_only=True)",
    )
    g.add_argument(
        "--factory-kwargs",
        type=_json_kwargs,
        default=None,
        metavar="JSON",
        help="keyword arguments for --factory as a JSON object, e.g. '{\"num_classes\": 10}'",
    )


# --------------------------------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------------------------------


class _Formatter(argparse.HelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``cladec: error: fit: argument --seed: ...``, like
    every other error of the command line (exit status 2), instead of the usage text followed by the message."""

    def error(self, message: str):
        cmd = self.prog[len("cladec") :].strip() if self.prog.startswith("cladec") else self.prog
        where = f"{cmd}: " if cmd else ""
        self.exit(2, f"cladec: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``cladec`` argument parser with every available subcommand.

    Args:
        (none)

    Returns:
        The :class:`argparse.ArgumentParser`.

    Examples:
        >>> p = build_parser()
        >>> p.parse_args(["layers", "--model", "clf"]).command
        'layers'
    """
    from ._version import __version__

    parser = _Parser(
        prog="cladec",
        description="Explain a layer of an image classifier by decoding its activations back into images "
        "(ClaDec, Schneider & Vlachos 2022). Start with `cladec demo`.",
        formatter_class=_Formatter,
        epilog="Run `cladec COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"cladec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    # demo -----------------------------------------------------------------------------------------
    d = sub.add_parser(
        "demo",
        help="train a classifier on embedded data, fit ClaDec + RefAE on two layers, write triplets and a summary",
        description="The end-to-end demo. With no arguments (and no network) it trains the paper's VGG-style "
        "classifier on the embedded Fashion-MNIST subset 'fashion-mnist-mini' (6,000 training / 1,000 test "
        "images), fits ClaDec (α = 0.001) and the reference auto-encoder (RefAE) on the classifier's last "
        "and middle layers, and writes triplet grids (original | RefAE | ClaDec), summary.json and "
        "summary.txt (and an HTML report when available) to --out. A few minutes on a laptop CPU; --quick "
        "runs a smaller version in about a minute.",
        formatter_class=_Formatter,
    )
    d.add_argument("--out", default="cladec-demo", metavar="DIR", help="output folder (default: cladec-demo)")
    d.add_argument(
        "--quick", action="store_true", help="smaller and faster (quarter-width classifier, fewer images and epochs)"
    )
    d.add_argument(
        "--dataset",
        default="fashion-mnist-mini",
        help="data set: fashion-mnist-mini (embedded, default), fashion-mnist, mnist, cifar10, imagefolder:PATH",
    )
    d.add_argument("--arch", default="vgg-paper", help="classifier architecture (default: vgg-paper)")
    from .demo import DEMO_SETTINGS

    full, quick = DEMO_SETTINGS["full"], DEMO_SETTINGS["quick"]
    d.add_argument(
        "--limit",
        type=_pos_int,
        default=None,
        help=f"training images (default: {full['limit']}; {quick['limit']} with --quick)",
    )
    d.add_argument(
        "--test-limit",
        type=_pos_int,
        default=None,
        help=f"test images for the metrics (default: {full['test_limit']}; {quick['test_limit']} with --quick)",
    )
    d.add_argument(
        "--epochs",
        type=_pos_int,
        default=None,
        help=f"classifier epochs (default: {full['epochs']}; {quick['epochs']} with --quick)",
    )
    d.add_argument(
        "--decoder-epochs",
        type=_pos_int,
        default=None,
        help=f"ClaDec and RefAE epochs (default: {full['decoder_epochs']}; {quick['decoder_epochs']} with --quick)",
    )
    d.add_argument(
        "--width",
        type=_pos_float,
        default=None,
        help=f"classifier width multiplier (default: {full['width']:g}; {quick['width']:g} with --quick)",
    )
    d.add_argument("--n-images", type=_pos_int, default=24, help="test images per triplet grid (default: 24)")
    d.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    d.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    _add_common(d)
    d.set_defaults(func=cmd_demo)

    # train-classifier ------------------------------------------------------------------------------
    t = sub.add_parser(
        "train-classifier",
        help="train a classifier (vgg-paper, resnet10, resnet18) and save a checkpoint directory",
        description="Train a registered architecture with SGD + momentum and step decay (the ClaDec authors' "
        "recipe) and save it as a checkpoint directory (model.safetensors + classifier.json) that records the "
        "data set, its image size and classes, and the test accuracy.",
        formatter_class=_Formatter,
    )
    t.add_argument(
        "--dataset", required=True, help="fashion-mnist, mnist, cifar10, fashion-mnist-mini, imagefolder:PATH"
    )
    t.add_argument("--arch", default="vgg-paper", help="architecture (default: vgg-paper; see also resnet10, resnet18)")
    t.add_argument("--epochs", type=_pos_int, default=5, help="epochs (default: 5)")
    t.add_argument("--out", required=True, metavar="DIR", help="checkpoint directory to write")
    t.add_argument("--size", type=_pos_int, default=None, help="resize images to SIZE×SIZE (the paper uses 32)")
    t.add_argument("--limit", type=_pos_int, default=None, help="use the first N training images")
    t.add_argument("--test-limit", type=_pos_int, default=None, help="use the first N test images")
    t.add_argument("--batch-size", type=_pos_int, default=128, help="batch size (default: 128)")
    t.add_argument("--lr", type=_learning_rate, default=0.1, help="initial SGD learning rate (default: 0.1)")
    t.add_argument("--width", type=_pos_float, default=None, help="channel width multiplier (default: 1.0)")
    t.add_argument(
        "--input-norm",
        default=None,
        metavar="MEAN,STD",
        help="normalise images before the model, e.g. '0.286,0.353' (default: none)",
    )
    t.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    _add_common(t)
    t.set_defaults(func=cmd_train_classifier)

    # layers ----------------------------------------------------------------------------------------
    lay = sub.add_parser(
        "layers",
        help="list a classifier's layers with their types and output shapes",
        description="Run one zero image through the classifier and print every layer it reaches with the "
        "module type and output shape. The architecture's default layers ('last', 'middle') are marked.",
        formatter_class=_Formatter,
    )
    _add_model_source(lay)
    lay.add_argument(
        "--image-shape",
        default=None,
        metavar="C,H,W",
        help="input shape, e.g. 1,28,28 (default: the checkpoint's; required with --factory)",
    )
    lay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lay.set_defaults(func=cmd_layers)

    # fit -------------------------------------------------------------------------------------------
    f = sub.add_parser(
        "fit",
        help="fit ClaDec (and its RefAE) for one layer and save a run directory",
        description="Fit ClaDec for one layer of a classifier, loss (1 − α)·MSE + α·CE, and the reference "
        "auto-encoder (RefAE: same architecture up to the layer, trained from scratch on reconstruction only), "
        "and save both with run.json (settings and test metrics) to --out. With equal epochs the two train "
        "together (one batch order; on a GPU their steps overlap), with the same result as one after the other "
        "unless the trained modules draw random numbers (dropout).",
        formatter_class=_Formatter,
    )
    _add_model_source(f)
    f.add_argument(
        "--input-norm",
        default=None,
        metavar="MEAN,STD",
        help="with --factory: the normalisation your model expects, e.g. '0.5,0.5' or "
        "'0.49,0.48,0.45;0.25,0.24,0.26' (checkpoints record their own)",
    )
    f.add_argument(
        "--dataset",
        default=None,
        help="data set (default: the checkpoint's); fashion-mnist, mnist, cifar10, fashion-mnist-mini ...",
    )
    f.add_argument(
        "--layer",
        required=True,
        help="layer name (see `cladec layers`); 'last' / 'middle' pick the architecture's defaults",
    )
    f.add_argument(
        "--neurons",
        default=None,
        metavar="LIST",
        help="decode only these units (channels), e.g. '0,1,5-9' (default: all)",
    )
    f.add_argument("--alpha", type=_alpha, default=0.001, help="α, weight of the classification loss (default: 0.001)")
    f.add_argument("--epochs", type=_pos_int, default=5, help="ClaDec epochs (default: 5)")
    f.add_argument(
        "--refae-epochs",
        type=_pos_int,
        default=None,
        help="RefAE epochs (default: --epochs; a different value fits RefAE after ClaDec)",
    )
    f.add_argument("--no-refae", action="store_true", help="fit ClaDec only")
    f.add_argument("--out", required=True, metavar="DIR", help="run directory to write (replaced if it exists)")
    f.add_argument(
        "--size",
        type=_pos_int,
        default=None,
        help="resize images to SIZE×SIZE (default: the size the classifier was trained at when its "
        "checkpoint records it, also for another data set; else the data's own size)",
    )
    f.add_argument("--limit", type=_pos_int, default=None, help="use the first N training images")
    f.add_argument("--test-limit", type=_pos_int, default=2000, help="test images for the metrics (default: 2000)")
    f.add_argument("--batch-size", type=_pos_int, default=128, help="batch size (default: 128)")
    f.add_argument("--lr", type=_learning_rate, default=3e-4, help="Adam learning rate (default: 3e-4)")
    f.add_argument(
        "--decoder-norm", default=None, choices=["batch"], help="normalisation in the decoder (default: none)"
    )
    f.add_argument(
        "--compile",
        nargs="?",
        const="default",
        default=None,
        metavar="MODE",
        choices=["default", "max-autotune-no-cudagraphs"],
        help="torch.compile the training losses: faster epochs after a compile of several seconds "
        "per model (worth it for long fits on a GPU); MODE: default or max-autotune-no-cudagraphs",
    )
    _add_common(f)
    f.set_defaults(func=cmd_fit)

    # explain ---------------------------------------------------------------------------------------
    e = sub.add_parser(
        "explain",
        help="draw original | RefAE | ClaDec triplets of a run as a PNG grid",
        description="Load a run directory, reconstruct N images with its ClaDec and RefAE and save a labelled "
        "grid (true class and the classifier's prediction under every image; wrong predictions in red).",
        formatter_class=_Formatter,
    )
    e.add_argument("--run", required=True, metavar="DIR", help="run directory (made by `cladec fit`)")
    e.add_argument("--dataset", default=None, help="data set (default: the run's; same image shape needed)")
    e.add_argument("--n", type=_pos_int, default=48, help="number of images (default: 48)")
    e.add_argument("--out", required=True, metavar="PNG", help="output PNG file")
    e.add_argument("--split", default="test", choices=["train", "test"], help="split to draw from (default: test)")
    e.add_argument("--columns", type=_pos_int, default=6, help="triplets per row (default: 6)")
    _add_common(e)
    e.set_defaults(func=cmd_explain)

    for modname in SUBCOMMAND_MODULES:
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as err:
            if err.name == modname:
                continue  # that command module is not part of this installation
            raise
        mod.register(sub)
    return parser


# --------------------------------------------------------------------------------------------------
# Handlers
# --------------------------------------------------------------------------------------------------


def _device(name: str | None, what: str = "--device"):
    """A ``--device`` value as a :class:`torch.device` (``None``: CUDA if available, else the CPU), checked with
    :func:`cladec._checks.device` before any work (the subcommand modules call ``cli._device`` too)."""
    from ._checks import device

    return device(name, what)


def _importable_cwd() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def _classifier_spec(args: argparse.Namespace) -> dict[str, Any]:
    """The run-style classifier entry for --model or --factory/--weights."""
    if args.model is not None and args.factory is not None:
        raise ConfigError("give the classifier either as --model DIR or as --factory PKG.MOD:FN, not both")
    if args.model is not None:
        if args.weights is not None:
            raise ConfigError("--weights goes with --factory; a --model checkpoint holds its own weights")
        if args.factory_kwargs is not None:
            raise ConfigError(
                "--factory-kwargs goes with --factory; a --model checkpoint records the arguments that rebuild it"
            )
        return {"type": "checkpoint", "path": str(Path(args.model).resolve())}
    if args.factory is not None:
        _importable_cwd()
        if args.weights is not None and not Path(args.weights).is_file():
            raise ConfigError(f"--weights: file not found: {args.weights}")
        return {
            "type": "factory",
            "factory": args.factory,
            "weights": str(Path(args.weights).resolve()) if args.weights else None,
            "kwargs": dict(args.factory_kwargs or {}),
            "input_norm": parse_input_norm(getattr(args, "input_norm", None)),
        }
    raise ConfigError(
        "give the classifier: --model DIR (a checkpoint from `cladec train-classifier`) "
        "or --factory PKG.MOD:FN [--weights FILE]"
    )


def _load_model(args: argparse.Namespace, device=None):
    from .runs import load_classifier_spec

    spec = _classifier_spec(args)
    model, info = load_classifier_spec(spec, Path.cwd(), device=device or "cpu")
    return spec, model, info


def _default_layer_marks(model) -> dict[str, list[str]]:
    marks: dict[str, list[str]] = {}
    dl = getattr(model, "default_layers", None)
    if isinstance(dl, dict):
        for k, v in dl.items():
            marks.setdefault(str(v), []).append(str(k))
    return marks


def cmd_train_classifier(args: argparse.Namespace) -> int:
    """Handler of ``cladec train-classifier``: train and save a classifier checkpoint.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success (user errors are raised as :class:`cladec.CladecError`).

    Examples:
        >>> main(["train-classifier", "--dataset", "fashion-mnist-mini", "--width", "0.25", "--epochs", "1",
        ...       "--limit", "1000", "--test-limit", "200", "--out", "clf", "-q"])
        test accuracy ... on 200 fashion-mnist-mini test images (chance 0.10); trained in ... s
        wrote classifier checkpoint clf
        0
    """
    import time

    import torch

    from ._io import check_replaceable
    from ._limits import build_on_meta, check_dataset_fits, check_model_fits
    from .classifier import save_classifier, train_classifier
    from .data import load_dataset
    from .models import create_model
    from .runs import recorded_dataset_name

    dev = _device(args.device)
    norm = parse_input_norm(args.input_norm)
    # before loading data or training: refuse a file or a folder of other things (a checkpoint is replaced)
    # files are written into --out (never replaced as a folder), so it may be the current directory
    check_replaceable(args.out, "classifier.json", "cladec classifier checkpoint", in_place=True)
    check_dataset_fits(
        args.dataset, [("train", args.limit), ("test", args.test_limit)], args.size, what=f"--size {args.size}"
    )
    train = load_dataset(
        args.dataset, root=args.data_root, split="train", size=args.size, limit=args.limit, download=args.download
    )
    test = load_dataset(
        args.dataset, root=args.data_root, split="test", size=args.size, limit=args.test_limit, download=args.download
    )
    kw = {} if args.width is None else {"width": args.width}
    # before the model is built (a --width of 1e6 asks for petabytes of weights) or a batch is run
    meta = build_on_meta(
        lambda: create_model(args.arch, in_channels=train.image_shape[0], num_classes=train.num_classes, **kw)
    )
    if meta is not None:
        batch = min(args.batch_size, len(train))
        check_model_fits(
            meta,
            train.image_shape,
            batch,
            device=dev,
            what=f"training {args.arch}"
            + (f" at --width {args.width:g}" if args.width else "")
            + f" on batches of {batch} {'×'.join(map(str, train.image_shape))} images (--batch-size)",
            hint="use a smaller --width, --batch-size or --size",
        )
        del meta
    torch.manual_seed(args.seed)
    model = create_model(args.arch, in_channels=train.image_shape[0], num_classes=train.num_classes, **kw).to(dev)
    if not args.quiet:
        print(
            f"training {model.arch} on {train.name} ({len(train)} training / {len(test)} test images, "
            f"{'×'.join(map(str, train.image_shape))}) for {args.epochs} epoch(s) on {dev}",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    hist = train_classifier(
        model,
        train,
        args.epochs,
        test_data=test,
        batch_size=args.batch_size,
        lr=args.lr,
        input_norm=norm,
        seed=args.seed,
        device=dev,
        verbose=not args.quiet,
    )
    seconds = time.perf_counter() - t0
    test_acc = float(hist["test_acc"][-1])
    dataset = {
        "name": recorded_dataset_name(train.name),  # imagefolder: absolute, valid from any folder
        "size": args.size,
        "image_shape": list(train.image_shape),
        "classes": list(train.classes),
        "num_classes": train.num_classes,
        "root": str(Path(args.data_root).resolve()) if args.data_root else None,
        "limit": args.limit,
        "n_train": len(train),
        "n_test": len(test),
    }
    metrics = {
        "test_acc": test_acc,
        "train_acc": float(hist["train_acc"][-1]),
        "test_images": len(test),
        "train_seconds": round(seconds, 2),
    }
    save_classifier(args.out, model.cpu(), dataset=dataset, input_norm=norm, metrics=metrics, history=hist)
    print(
        f"test accuracy {test_acc:.4f} on {len(test)} {train.name} test images "
        f"(chance {1 / train.num_classes:.2f}); trained in {seconds:.0f} s"
    )
    print(f"wrote classifier checkpoint {args.out}")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    """Handler of ``cladec layers``: print the classifier's layers, types and output shapes.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> main(["layers", "--model", str(clf_dir)])  # clf_dir: a checkpoint of vgg-paper at width 0.25
        /...clf: input 1×28×28, 36 layers
        layer        type               output shape  default
        -----------  -----------------  ------------  -------
        conv0        ConvBlock          8×14×14
        ...
        conv4        ConvBlock          128×1×1       last
        ...
        fc           Linear             10
        <BLANKLINE>
        default layers: last = conv4, middle = conv2  (use them as `cladec fit --layer NAME`)
        0
    """
    import torch

    from .capture import list_layers

    spec, model, info = _load_model(args)
    if args.image_shape is not None:
        shape = parse_image_shape(args.image_shape)
    else:
        ds = info.get("dataset") if isinstance(info, dict) else None
        shape_l = ds.get("image_shape") if isinstance(ds, dict) else None
        if not shape_l:
            raise ConfigError(
                "give the input shape with --image-shape C,H,W (e.g. 1,28,28): the model does not record it"
            )
        shape = tuple(int(s) for s in shape_l)  # type: ignore[assignment]  # the recorded [C, H, W]
    try:
        layers = list_layers(model, torch.zeros(1, *shape))
    except RuntimeError as e:
        raise ConfigError(f"the model does not accept input of shape {shape} (C, H, W): {e}") from None
    marks = _default_layer_marks(model)
    if args.json:
        print(
            json.dumps(
                [
                    {"name": L.name, "type": L.type, "shape": list(L.shape), "default": marks.get(L.name, [])}
                    for L in layers
                ],
                indent=2,
            )
        )
        return 0
    rows = [
        (L.name, L.type, "×".join(map(str, L.shape)) if L.shape else "-", ", ".join(marks.get(L.name, [])))
        for L in layers
    ]
    head = ("layer", "type", "output shape", "default")
    widths = [max(len(head[i]), *(len(r[i]) for r in rows)) if rows else len(head[i]) for i in range(4)]
    src = args.model if spec["type"] == "checkpoint" else args.factory
    print(f"{src}: input {'×'.join(map(str, shape))}, {len(rows)} layers")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    if marks:
        print(
            "\ndefault layers: "
            + ", ".join(f"{k} = {n}" for n, ks in marks.items() for k in ks)
            + "  (use them as `cladec fit --layer NAME`)"
        )
    return 0


def cmd_fit(args: argparse.Namespace) -> int:
    """Handler of ``cladec fit``: fit ClaDec (+ RefAE) for one layer into a run directory.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> main(["fit", "--model", str(clf_dir), "--layer", "conv2", "--epochs", "1", "--limit", "500",
        ...       "--test-limit", "100", "--lr", "3e-3", "--batch-size", "32", "--out", "run", "-q"])
        layer conv2, α = 0.001: test MSE ClaDec ..., RefAE ...; classifier accuracy on originals ...
        wrote run directory run  (next: cladec explain --run run --out triplets.png)
        0
    """
    from .capture import resolve_layer_or_role
    from .explainer import CollapseWarning
    from .runs import fit_run

    dev = _device(args.device)
    neurons = parse_neurons(args.neurons) if args.neurons is not None else None
    if args.input_norm is not None and args.factory is None:
        raise ConfigError("--input-norm goes with --factory; a --model checkpoint records its own normalisation")
    if args.no_refae and args.refae_epochs is not None:
        raise ConfigError("--refae-epochs sets the RefAE's epochs, but --no-refae fits no RefAE; drop one of them")
    spec, model, info = _load_model(args)
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
    from ._limits import check_dataset_fits, check_model_fits

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


def cmd_explain(args: argparse.Namespace) -> int:
    """Handler of ``cladec explain``: save a triplet grid (original | RefAE | ClaDec) of a run.

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> main(["explain", "--run", str(run_dir), "--n", "8", "--out", "triplets.png", "-q"])
        8 fashion-mnist-mini test images, layer conv2: MSE ClaDec ..., RefAE ...; classifier accuracy originals ...
        wrote triplets.png
        0
    """
    import torch

    from ._limits import check_dataset_fits
    from .explanation import explain
    from .runs import load_recorded_dataset, load_run

    if not str(args.out).lower().endswith(".png"):
        raise ConfigError(f"--out must be a .png file, got {args.out!r}")
    dev = _device(args.device)
    _importable_cwd()  # a run made with --factory imports the user's module again
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


def cmd_demo(args: argparse.Namespace) -> int:
    """Handler of ``cladec demo`` (see :func:`cladec.demo.run_demo`).

    Args:
        args: The parsed arguments.

    Returns:
        0 on success.

    Examples:
        >>> main(["demo", "--quick"])  # takes about a minute  # doctest: +SKIP
        0
    """
    from .demo import run_demo

    dev = _device(args.device)  # before any work: a bad --device is a usage error
    run_demo(
        args.out,
        quick=args.quick,
        dataset=args.dataset,
        data_root=args.data_root,
        device=str(dev),
        arch=args.arch,
        limit=args.limit,
        test_limit=args.test_limit,
        epochs=args.epochs,
        decoder_epochs=args.decoder_epochs,
        width=args.width,
        n_images=args.n_images,
        seed=args.seed,
        download=args.download,
        report=not args.no_report,
        verbose=not args.quiet,
    )
    return 0


# --------------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------------


def _error(msg: str) -> int:
    # a message that names ClaDec's (or RefAE's) training first would read "cladec: error: cladec: ..."
    msg = re.sub(r"^cladec(\d*): ", r"ClaDec\1: ", re.sub(r"^refae(\d*): ", r"RefAE\1: ", msg))
    print(f"cladec: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cladec`` command line.

    Everything heavy (torch, the subcommand modules) is imported inside this function, so that an interrupt
    (Ctrl-C) at any moment -- also while the first imports run -- ends in one line, ``cladec: interrupted``,
    and exit status 130, never a traceback. When the reader of the output goes away (``cladec layers ... |
    head -1``), the command stops quietly with exit status 141 (128 + SIGPIPE, what a shell reports for
    ``cat`` or ``grep`` stopped the same way); nothing more is printed.

    Args:
        argv: Arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status: 0 on success, 2 for a usage or input error (printed as ``cladec: error: ...``),
        130 when interrupted, 141 when the output's reader closed the pipe.

    Examples:
        >>> main(["--version"])
        cladec ...
        0
        >>> main(["layers", "--model", "no-such-folder"])  # "cladec: error: ... does not exist; ..." on stderr
        2
    """
    try:
        try:
            code = _main(argv)
            sys.stdout.flush()  # output still buffered for a closed pipe fails here, not at exit
            return code
        except KeyboardInterrupt:
            print("cladec: interrupted", file=sys.stderr)
            return 130
    except BrokenPipeError:
        _stdout_to_devnull()
        return 141


def _stdout_to_devnull() -> None:
    """Point the standard output at /dev/null, so that flushing it at exit does not fail on the closed pipe."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by an object without a file (tests, notebooks)
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, fd)
    finally:
        os.close(devnull)


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as e:  # --help, --version, usage errors
        return int(e.code) if isinstance(e.code, int) else (0 if e.code is None else 2)
    if getattr(args, "func", None) is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        _check_out_paths(args)
        return int(args.func(args) or 0)
    except CladecError as e:
        return _error(str(e))
    except FileNotFoundError as e:
        return _error(f"file not found: {e.filename}" if e.filename else str(e))
    except (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError) as e:
        return _error(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    except OSError as e:
        if e.errno in (errno.EROFS, errno.ENOSPC, errno.EDQUOT):  # read-only file system, disk full
            return _error(f"{e.strerror}: {e.filename}" if e.filename else str(e))
        raise
    except (MemoryError, RuntimeError) as e:
        # what the estimates before the work (cladec._limits) did not foresee: the allocator's refusal, one line
        text = str(e)
        if isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text.lower():
            m = re.search(r"tried to allocate ([0-9.]+ ?[KMGT]?i?B|\d+ bytes)", text)
            got = f" (an allocation of {m.group(1)} failed)" if m else ""
            return _error(
                f"out of memory{got}; use a smaller --batch-size, --size or --width, or fewer images (--limit)"
            )
        raise


#: Options that name something a command writes (the folder or file is created with its parents).
OUT_OPTIONS = ("out",)


def _check_out_paths(args: argparse.Namespace) -> None:
    """Refuse an output path below a file (``--out /etc/passwd/x``) or in a folder that cannot be written
    (read-only) before any work.

    The nearest existing folder of the path (the path itself when it is a folder) must be a writable folder:
    below a file nothing can be created, and the command would fail only at the end, after the work, with an
    OS error.
    """
    for opt in OUT_OPTIONS:
        value = getattr(args, opt, None)
        if not isinstance(value, (str, os.PathLike)) or not str(value):
            continue
        path = Path(value).expanduser().absolute()
        for parent in (path, *path.parents):
            if parent.exists() or parent.is_symlink():
                if parent == path and not path.is_dir():
                    continue  # an existing file (a PNG, a JSON summary) is replaced: its folder is checked
                if not parent.is_dir():
                    raise ConfigError(
                        f"--{opt.replace('_', '-')} {value}: {parent} is a file, not a folder, so "
                        "nothing can be written below it; give a path in a folder"
                    )
                if not os.access(parent, os.W_OK | os.X_OK):
                    raise ConfigError(
                        f"--{opt.replace('_', '-')} {value}: the folder {parent} is not writable "
                        "(read-only, or not yours); give a path in a folder you can write to"
                    )
                break


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
