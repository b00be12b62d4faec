"""Argument types and option groups shared by the command modules (torch-free: the library is imported inside
the functions that need it)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from typing import Any

from .. import _checks
from .._errors import ConfigError

__all__ = ["parse_neurons", "parse_input_norm", "parse_image_shape"]

#: How the library's messages name the settings that the command line takes as options (``names=`` of
#: :func:`cladec.models.spec.classifier_entry`, :func:`cladec.models.spec.check_fit_fits` and
#: :func:`cladec.models.training.train_checkpoint`): ``batch_size`` is ``--batch-size``, ``classifier_dir`` ``--model``.
OPTION_NAMES = {"classifier_dir": "--model"} | {
    k: "--" + k.replace("_", "-")
    for k in "factory weights factory_kwargs input_norm num_classes pretrained dataset size width batch_size limit "
    "test_limit device arch_kwargs".split()
}


def _number(text: str, conv: Callable[[str], Any], ok: Callable[[Any], bool], bad: str, unreadable: str = "") -> Any:
    """``conv(text)`` when ``ok`` accepts it, else an argparse error: ``bad`` (``unreadable`` when ``conv`` fails)."""
    try:
        v = conv(text)
    except ValueError:
        raise argparse.ArgumentTypeError(unreadable or bad) from None
    if not ok(v):
        raise argparse.ArgumentTypeError(bad)
    return v


def pos_int(text: str) -> int:
    """argparse type: a positive integer."""
    return _number(text, int, lambda v: v >= 1, f"expected a positive integer, got {text!r}")


def csv_list(conv: Callable[[str], Any], what: str) -> Callable[[str], list]:
    """argparse type: a comma-separated list, each item converted by ``conv`` (at least one item)."""

    def parse(text: str) -> list:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{what}: give a comma-separated list, got {text!r}")
        try:
            return [conv(t) for t in items]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{what}: cannot read {text!r} as a comma-separated list") from None

    return parse


def seed_int(text: str) -> int:
    """argparse type: a random seed, an integer from 0 to 2**63 - 1 (see :func:`cladec._checks.seed`)."""
    top = _checks.SEED_MAX  # read when called, not imported: a test may change it
    bad = f"expected an integer from 0 to {top} (2**63 - 1), got {text}"
    return _number(text, int, lambda v: 0 <= v <= top, bad, f"expected an integer from 0 to {top}, got {text!r}")


def learning_rate(text: str) -> float:
    """argparse type: a learning rate, a finite number in (0, 10] (see :func:`cladec._checks.learning_rate`)."""
    top = _checks.LR_MAX  # read when called, not imported: a test lifts it to let a fit diverge
    msg = f"expected a finite number in (0, {top:g}] (Adam typically 1e-4 to 1e-2, SGD 0.01 to 0.1), got {text!r}"
    return _number(text, float, lambda v: 0 < v <= top, msg)  # not nan, not inf


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


def pos_float(text: str) -> float:
    """argparse type: a positive finite number."""
    return _number(text, float, lambda v: 0 < v < math.inf, f"expected a positive number, got {text!r}")


def alpha_value(text: str) -> float:
    """argparse type: ClaDec's α, a number in [0, 1]."""
    bad = f"α must lie in [0, 1] (0 = pure reconstruction), got {text!r}"
    return _number(text, float, lambda v: 0.0 <= v <= 1.0, bad, f"α must be a number in [0, 1], got {text!r}")


def json_kwargs(text: str) -> dict:
    """argparse type: a JSON object (keyword arguments for ``--factory``)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}': {e}") from None
    if not isinstance(obj, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object such as '{{\"num_classes\": 10}}', got {text!r}")
    return obj


def add_common(p: argparse.ArgumentParser, *, data_root: bool = True, seed: bool = True) -> None:
    """Add ``--data-root``, ``--seed``, ``--device`` and ``-q/--quiet``."""
    if data_root:
        p.add_argument(
            "--data-root",
            default=None,
            metavar="PATH",
            help="folder holding the data sets (default: $CLADEC_DATA, else the user cache folder)",
        )
    if seed:
        p.add_argument("--seed", type=seed_int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available, else cpu)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_model_source(p: argparse.ArgumentParser) -> None:
    """Add the classifier options: ``--model`` (a checkpoint or a model source, with ``--weights``,
    ``--num-classes``, ``--pretrained``), or ``--factory`` with ``--weights`` and ``--factory-kwargs``."""
    g = p.add_argument_group("classifier (a checkpoint directory, a torchvision/timm model, or your own model)")
    src = "checkpoint folder (`cladec train-classifier`), or a model: torchvision:NAME, timm:NAME, a cladec model"
    fn = "your own model: an importable 'package.module:function' that builds it (the current folder is importable)"
    for option, metavar, kind, text in (
        ("--model", "DIR|SOURCE", str, src),
        ("--factory", "PKG.MOD:FN", str, fn),
        ("--weights", "FILE", str, "weights (.safetensors or a state dict, read with weights_only=True)"),
        (
            "--factory-kwargs",
            "JSON",
            json_kwargs,
            "arguments for --factory or --model's library, e.g. '{\"img_size\": 64}'",
        ),
        ("--num-classes", "N", pos_int, "a --model source's number of classes (default: the library's, 1000)"),
    ):
        g.add_argument(option, default=None, metavar=metavar, type=kind, help=text)
    g.add_argument("--pretrained", action="store_true", help="a --model source with its library's pretrained weights")


def parse_device(name: str | None, what: str = "--device"):
    """A ``--device`` value as a :class:`torch.device` (``None``: CUDA if available, else the CPU), checked before
    any work (:func:`cladec._tensors.device`)."""
    from .._tensors import device

    return device(name, what)


def importable_cwd() -> None:
    """Make the current folder importable, as for ``python -m``: ``--factory PKG.MOD:FN`` (and a run fitted with
    one) imports the user's module from there."""
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def classifier_source(args: argparse.Namespace) -> dict[str, Any]:
    """The run-style classifier entry (:func:`cladec.models.spec.classifier_entry`) of ``--model`` or
    ``--factory``/``--weights``/``--factory-kwargs`` (and ``--input-norm`` where the command has it)."""
    from ..models.spec import classifier_entry

    if args.factory is not None:
        importable_cwd()
    return classifier_entry(
        args.model,
        factory=args.factory,
        weights=args.weights,
        factory_kwargs=args.factory_kwargs,
        input_norm=parse_input_norm(getattr(args, "input_norm", None)),
        names=OPTION_NAMES,
        num_classes=args.num_classes,
        pretrained=args.pretrained,
    )


def refuse_ignored(args: argparse.Namespace, names: tuple[str, ...]) -> None:
    """Raise a ConfigError for options that only matter with evaluation classifiers (--no-eval-classifier)."""
    given = [f"--{n.replace('_', '-')}" for n in names if getattr(args, n, None) is not None]
    if given:
        raise ConfigError(
            f"{', '.join(given)} set{'s' if len(given) == 1 else ''} up the evaluation classifiers, which "
            "--no-eval-classifier skips; drop "
            + ("it" if len(given) == 1 else "them")
            + " or drop --no-eval-classifier"
        )
