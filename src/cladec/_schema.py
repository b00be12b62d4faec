"""Schemas of the JSON files cladec reads back: ``run.json`` (a run directory), ``cladec.json`` (a saved ClaDec or
RefAE) and ``classifier.json`` (a classifier checkpoint).

Each file is checked once, right after it is read (:func:`validate`), so that a damaged or hand-edited file is
refused in one message naming the file, the field, what it holds and what would be valid -- not met later as a
``KeyError`` or ``TypeError`` deep inside the code that uses it. Keys a schema does not name are allowed (a newer
cladec may add some); a missing key is an error only where the schema marks it required.

A schema is a tree of small checkers (``Obj``, ``List``, ``Of``, ...), each knowing what it accepts in words.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._errors import SaveFormatError
from .normalize import check_input_norm

__all__ = ["validate", "RUN", "CLASSIFIER_ENTRY", "EXPLAINER", "CLASSIFIER"]


class _Invalid(Exception):
    def __init__(self, field: str, expected: str, value: Any, missing: bool = False) -> None:
        super().__init__(field)
        self.field, self.expected, self.value, self.missing = field, expected, value, missing


class Of:
    """A leaf: ``test(value)`` says whether the value is valid (by its truth); ``desc`` says in words what is."""

    def __init__(self, desc: str, test: Callable[[Any], object]) -> None:
        self.desc, self.test = desc, test

    def check(self, v: Any, field: str) -> None:
        try:
            ok = bool(self.test(v))
        except Exception:  # noqa: BLE001 - a test that cannot even look at the value: invalid
            ok = False
        if not ok:
            raise _Invalid(field, self.desc, v)


class Null(Of):
    """``inner`` or null."""

    def __init__(self, inner: Of) -> None:
        super().__init__(f"{inner.desc} or null", lambda v: True)
        self.inner = inner

    def check(self, v: Any, field: str) -> None:
        if v is not None:
            try:
                self.inner.check(v, field)
            except _Invalid as e:
                if e.field == field:  # the value itself, not a part of it: say that null is valid too
                    raise _Invalid(field, self.desc, v) from None
                raise


class List(Of):
    """A JSON array of ``item``s (of ``length`` items, or ``lengths`` (lo, hi) inclusive)."""

    def __init__(
        self, item: Of, *, length: int | None = None, lengths: tuple[int, int] | None = None, desc: str | None = None
    ) -> None:
        n = f"{length} " if length is not None else ""
        super().__init__(desc or f"a list of {n}{item.desc}", lambda v: True)
        self.item = item
        self.lengths = (length, length) if length is not None else lengths

    def check(self, v: Any, field: str) -> None:
        if not isinstance(v, list) or (self.lengths and not self.lengths[0] <= len(v) <= self.lengths[1]):
            raise _Invalid(field, self.desc, v)
        for i, x in enumerate(v):
            try:
                self.item.check(x, f"{field}[{i}]")
            except _Invalid:
                raise _Invalid(field, self.desc, v) from None


class Obj(Of):
    """A JSON object whose named keys are checked (others allowed); ``required`` keys must be there."""

    def __init__(self, fields: dict[str, Of], required: tuple[str, ...] = (), desc: str = "an object") -> None:
        super().__init__(desc, lambda v: True)
        self.fields, self.required = fields, required

    def check(self, v: Any, field: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(field, self.desc, v)
        for key in self.required:
            if key not in v:
                raise _Invalid(_join(field, key), self.fields[key].desc, None, missing=True)
        for key, checker in self.fields.items():
            if key in v:
                checker.check(v[key], _join(field, key))


class Tagged(Of):
    """An object whose ``tag`` key picks its schema among ``kinds``."""

    def __init__(self, tag: str, kinds: dict[str, Obj]) -> None:
        names = " or ".join(repr(k) for k in kinds)
        super().__init__(f"an object with {tag!r}: {names}", lambda v: True)
        self.tag, self.kinds = tag, kinds

    def check(self, v: Any, field: str) -> None:
        if not isinstance(v, dict):
            raise _Invalid(field, self.desc, v)
        kind = v.get(self.tag)
        if kind not in self.kinds:
            raise _Invalid(
                _join(field, self.tag), " or ".join(repr(k) for k in self.kinds), kind, missing=self.tag not in v
            )
        self.kinds[kind].check(v, field)


def _join(field: str, key: str) -> str:
    return f"{field}.{key}" if field else key


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int | None = None, desc: str | None = None) -> Of:
    words = desc or {None: "an integer", 0: "a non-negative integer", 1: "a positive integer"}.get(
        lo, f"an integer >= {lo}"
    )
    return Of(words, lambda v: _is_int(v) and (lo is None or v >= lo))


def number(lo: float | None = None, hi: float | None = None) -> Of:
    words = "a finite number" if lo is None else f"a number in [{lo:g}, {hi:g}]"
    return Of(words, lambda v: _is_num(v) and (lo is None or lo <= v <= hi))


def one_of(*values: Any) -> Of:
    return Of(" or ".join(repr(v) for v in values), lambda v: any(v == x and type(v) is type(x) for x in values))


STRING = Of("a string", lambda v: isinstance(v, str))
NAME = Of("a non-empty string", lambda v: isinstance(v, str) and bool(v.strip()))
BOOL = Of("true or false", lambda v: isinstance(v, bool))
OBJECT = Of("an object", lambda v: isinstance(v, dict))
SHA256 = Null(Of("a SHA-256 (64 hex digits)", lambda v: isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v)))
IMAGE_SHAPE = List(integer(1), length=3, desc="[C, H, W]: three positive integers")
SHAPE = List(integer(1), lengths=(1, 3), desc="a shape: a list of one to three positive integers")
SIZE = Of(
    "a positive integer or [H, W] (two positive integers)",
    lambda v: (_is_int(v) and v > 0) or (isinstance(v, list) and len(v) == 2 and all(_is_int(s) and s > 0 for s in v)),
)
NEURONS = Null(List(integer(0), desc="a list of unit indices (non-negative integers)"))
CLASSES = Null(List(STRING, desc="a list of class names (strings)"))


def _input_norm_ok(v: Any) -> bool:

    check_input_norm(v)
    return True


INPUT_NORM = Null(Of("[mean, std]: two numbers or two equal-length lists of numbers, std > 0", _input_norm_ok))

_CHECKPOINT_ENTRY = Obj(
    {"type": one_of("checkpoint"), "path": NAME, "abs_path": Null(NAME), "weights_sha256": SHA256},
    required=("type", "path"),
)
_FACTORY_ENTRY = Obj(
    {
        "type": one_of("factory"),
        "factory": NAME,
        "weights": Null(NAME),
        "kwargs": Of("an object of keyword arguments", lambda v: isinstance(v, dict)),
        "input_norm": INPUT_NORM,
        "weights_sha256": SHA256,
    },
    required=("type", "factory"),
)

_SOURCE_ENTRY = Obj(
    {
        "type": one_of("source"),
        "source": NAME,
        "weights": Null(NAME),
        "num_classes": Null(integer(1)),
        "pretrained": BOOL,
        "kwargs": Of("an object of keyword arguments", lambda v: isinstance(v, dict)),
        "input_norm": INPUT_NORM,
        "weights_sha256": SHA256,
    },
    required=("type", "source"),
)

#: ``run.json``'s ``classifier`` entry.
CLASSIFIER_ENTRY = Tagged("type", {"checkpoint": _CHECKPOINT_ENTRY, "factory": _FACTORY_ENTRY, "source": _SOURCE_ENTRY})

#: ``run.json`` (written by :func:`cladec.runs.fit_run`).
RUN = Obj(
    {
        "format_version": one_of(1),
        "classifier": CLASSIFIER_ENTRY,
        "dataset": Obj(
            {
                "name": NAME,
                "size": Null(SIZE),
                "root": Null(STRING),
                "limit": Null(integer(1)),
                "n_train": Null(integer(0)),
                "classes": CLASSES,
                "image_shape": Null(IMAGE_SHAPE),
            }
        ),
        "image_shape": IMAGE_SHAPE,
        "input_norm": INPUT_NORM,
        "layer": NAME,
        "neurons": NEURONS,
        "alpha": number(0, 1),
        "epochs": Null(integer(1)),
        "refae_epochs": Null(integer(1)),
        "batch_size": Null(integer(1)),
        "lr": Null(number()),
        "recipe": Null(STRING),
        "seed": Null(integer()),
        "decoder_arch": one_of("auto", "paper", "scaled"),
        "metrics": OBJECT,
        "timings": OBJECT,
        "collapsed": OBJECT,
        "world_size": integer(1),
        "validation": Null(number(0, 1)),
        "until_mse": Null(number()),
        "patience": Null(integer(1)),
        "stopped": OBJECT,
        "epochs_run": OBJECT,
    },
    required=("classifier", "layer"),
    desc="a run file",
)

#: ``cladec.json`` (written by ``ClaDec.save`` / ``RefAE.save``).
EXPLAINER = Obj(
    {
        "format_version": one_of(1),
        "kind": one_of("cladec", "refae"),
        "layer": NAME,
        "layer_shape": SHAPE,
        "activation_shape": SHAPE,
        "image_shape": IMAGE_SHAPE,
        "neurons": NEURONS,
        "prefix_tokens": one_of("drop", "channels"),
        "num_prefix_tokens": Null(integer(0)),
        "layout": Null(one_of("nchw", "nhwc", "tokens", "flat")),
        "input_norm": INPUT_NORM,
        "decoder": OBJECT,
        "base_width": integer(1),
        "decoder_norm": Null(one_of("batch")),
        "decoder_arch": one_of("auto", "paper", "scaled"),
        "alpha": number(0, 1),
        "fitted": BOOL,
        "collapsed": BOOL,
        "fit_config": OBJECT,
        "history": List(OBJECT, desc="a list of objects (one per epoch)"),
        "weights_sha256": SHA256,
    },
    required=("kind", "layer", "layer_shape", "image_shape"),
    desc="an explainer configuration",
)

#: ``classifier.json`` (written by :func:`cladec.models.save_classifier`).
CLASSIFIER = Obj(
    {
        "arch": NAME,
        "arch_kwargs": Of("an object of the arguments that rebuild the model", lambda v: isinstance(v, dict)),
        "dataset": Null(
            Obj(
                {
                    "name": Null(STRING),
                    "image_shape": Null(IMAGE_SHAPE),
                    "classes": CLASSES,
                    "n_images": Null(integer(0)),
                    "size": Null(SIZE),
                    "root": Null(STRING),
                }
            )
        ),
        "input_norm": INPUT_NORM,
        "metrics": OBJECT,
        "history": OBJECT,
        "weights_sha256": SHA256,
    },
    required=("arch", "arch_kwargs"),
    desc="a classifier description",
)


def _show(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def validate(obj: Any, schema: Of, path: str | Path, hint: str = "", *, root: str = "") -> Any:
    """Check ``obj`` (read from ``path``) against ``schema``.

    Args:
        obj: The parsed JSON.
        schema: :data:`RUN`, :data:`EXPLAINER` or :data:`CLASSIFIER`.
        path: The file, for the message.
        hint: What to do about a damaged file, appended to the message.
        root: The name of ``obj`` in the file, when it is a part of it (``"classifier"``).

    Returns:
        ``obj``, unchanged.

    Raises:
        SaveFormatError: ``"<path>: 'base_width' must be a positive integer, got -4 (...)"``, one line.

    Examples:
        >>> run = {"layer": "conv2", "classifier": {"type": "checkpoint", "path": "../clf"}}
        >>> validate(run, RUN, "run.json")["layer"]
        'conv2'
    """
    try:
        schema.check(obj, root)
    except _Invalid as e:
        got = "it is missing" if e.missing else f"got {_show(e.value)}"
        where = f"field {e.field!r}" if e.field else "the file"
        raise SaveFormatError(
            f"{path}: {where} must be {e.expected}, {got} (the file is damaged or was edited by hand"
            + (f"; {hint})" if hint else ")")
        ) from None
    return obj
