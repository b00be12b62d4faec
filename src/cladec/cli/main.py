"""The ``cladec`` command line: the root parser, the entry point and the mapping of errors to one line.

Commands (``cladec COMMAND --help`` for every option)::

    cladec demo               train a classifier on the embedded data, fit ClaDec + RefAE on two layers,
                              write triplet grids and a summary (no data download, a few minutes on a CPU)
    cladec train-classifier   train a registered architecture on a data set and save a checkpoint
    cladec layers             list a classifier's layers with their output shapes
    cladec fit                fit ClaDec (and its RefAE) for one layer into a run directory
    cladec explain            draw original | RefAE | ClaDec triplets of a run as a PNG grid
    cladec evaluate           metrics of a run's reconstructions, and the evaluation classifiers
    cladec sweep              fit and evaluate over layers × α values × seeds
    cladec compare-saliency   score ClaDec relevance maps against saliency methods
    cladec report             a static HTML report of a run, evaluation, sweep or demo
    cladec study              a user-study page for a run; ``cladec study-summary`` aggregates its answers

Each command group is a module of :mod:`cladec.cli` (:data:`COMMAND_MODULES`) with ``register(subparsers)``,
which adds its parsers and gives each a ``func`` default, the handler: it is called with the parsed namespace
and returns the exit code.

Errors that come from the user's input (:class:`cladec.CladecError`, a missing file) are printed as one
message, ``cladec: error: ...``, with exit status 2 and no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import re
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

from .._errors import CladecError, ConfigError
from .._version import __version__
from . import classifier, demo, evaluate, explain, fit, layers, report, saliency, study, sweep

__all__ = ["main", "build_parser", "COMMAND_MODULES"]

#: The command modules, in the order ``cladec --help`` lists their commands: demo, train-classifier, layers,
#: fit, explain, evaluate, sweep, compare-saliency, report, study, study-summary.
COMMAND_MODULES = (demo, classifier, layers, fit, explain, evaluate, sweep, saliency, report, study)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line, ``cladec: error: fit: argument --seed: ...``, like
    every other error of the command line (exit status 2), instead of the usage text followed by the message."""

    def error(self, message: str):
        cmd = self.prog[len("cladec") :].strip() if self.prog.startswith("cladec") else self.prog
        where = f"{cmd}: " if cmd else ""
        self.exit(2, f"cladec: error: {where}{message} (see `{self.prog} --help`)\n")


def build_parser() -> argparse.ArgumentParser:
    """Build the ``cladec`` argument parser with every subcommand (loads no torch).

    Returns:
        The :class:`argparse.ArgumentParser`.

    Examples:
        >>> p = build_parser()
        >>> p.parse_args(["layers", "--model", "clf"]).command
        'layers'
    """
    parser = _Parser(
        prog="cladec",
        description="Explain a layer of an image classifier by decoding its activations back into images "
        "(ClaDec, Schneider & Vlachos 2022). Start with `cladec demo`.",
        epilog="Run `cladec COMMAND --help` for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"cladec {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _error(msg: str) -> int:
    # a message that names ClaDec's (or RefAE's) training first would read "cladec: error: cladec: ..."
    msg = re.sub(r"^cladec(\d*): ", r"ClaDec\1: ", re.sub(r"^refae(\d*): ", r"RefAE\1: ", msg))
    print(f"cladec: error: {msg}", file=sys.stderr)
    return 2


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cladec`` command line.

    Everything heavy (torch, the library) is imported inside the command handlers it runs, so that an interrupt
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
        _load_torch()
        with _data_parallel(args):
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


def _load_torch() -> None:
    """Import torch, which every command uses, holding a Ctrl-C back until it is loaded (then it interrupts).

    torch's start-up (C code) imports numpy and clears any error of that import, an interrupt included: a Ctrl-C
    in that moment was lost, and the command ran on, or left numpy half imported (a confusing error later).
    """
    if "torch" in sys.modules:
        return
    hold = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not ignored, not the caller's handler
    )
    held: list[int] = []
    if hold:
        signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    try:
        importlib.import_module("torch")
    finally:
        if hold:
            signal.signal(signal.SIGINT, signal.default_int_handler)
    if held:
        raise KeyboardInterrupt


#: The commands that run data-parallel under ``torchrun`` (:mod:`cladec.training.distributed`).
DATA_PARALLEL = ("fit", "train-classifier", "sweep", "evaluate")


@contextlib.contextmanager
def _data_parallel(args: argparse.Namespace) -> Iterator[None]:
    """Under ``torchrun`` (``$WORLD_SIZE`` > 1): join the process group for the command (a command that does not run
    data-parallel is refused); ranks other than 0 print nothing on the standard output (errors still go to stderr).
    """
    if os.environ.get("WORLD_SIZE", "").strip() in ("", "0", "1"):  # not under torchrun (launched() checks the rest)
        yield
        return
    if args.command not in DATA_PARALLEL:
        raise ConfigError(
            f"`cladec {args.command}` does not run data-parallel: run it without torchrun "
            f"(under torchrun: {', '.join(DATA_PARALLEL)})"
        )
    from ..training.distributed import launched
    from ._args import parse_device

    with launched(parse_device(getattr(args, "device", None))) as (rank, _):
        if rank == 0:
            yield
            return
        with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):
            yield


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
