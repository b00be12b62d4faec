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
import os
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from .._errors import CladecError, ConfigError
from ._args import add_common, add_model_source, alpha_value, pos_float
from ._args import learning_rate as _learning_rate
from ._args import pos_int as _pos_int
from .classifier import cmd_layers, cmd_train_classifier
from .demo import cmd_demo
from .explain import cmd_explain
from .fit import cmd_fit

__all__ = ["main", "build_parser"]

SUBCOMMAND_MODULES = ("cladec.cli.evaluate", "cladec.cli.saliency", "cladec.cli.report")


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
    from .._version import __version__

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
    from ..defaults import DEMO_SETTINGS

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
        type=pos_float,
        default=None,
        help=f"classifier width multiplier (default: {full['width']:g}; {quick['width']:g} with --quick)",
    )
    d.add_argument("--n-images", type=_pos_int, default=24, help="test images per triplet grid (default: 24)")
    d.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    d.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    add_common(d)
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
    t.add_argument("--width", type=pos_float, default=None, help="channel width multiplier (default: 1.0)")
    t.add_argument(
        "--input-norm",
        default=None,
        metavar="MEAN,STD",
        help="normalise images before the model, e.g. '0.286,0.353' (default: none)",
    )
    t.add_argument("--download", action="store_true", help="download a missing MNIST / Fashion-MNIST / CIFAR-10")
    add_common(t)
    t.set_defaults(func=cmd_train_classifier)

    # layers ----------------------------------------------------------------------------------------
    lay = sub.add_parser(
        "layers",
        help="list a classifier's layers with their types and output shapes",
        description="Run one zero image through the classifier and print every layer it reaches with the "
        "module type and output shape. The architecture's default layers ('last', 'middle') are marked.",
        formatter_class=_Formatter,
    )
    add_model_source(lay)
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
    add_model_source(f)
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
    f.add_argument(
        "--alpha", type=alpha_value, default=0.001, help="α, weight of the classification loss (default: 0.001)"
    )
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
    add_common(f)
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
    add_common(e)
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
