"""``cladec layers``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .._errors import ConfigError
from ._args import add_model_source, classifier_source, parse_image_shape

__all__ = ["register", "cmd_layers"]


def register(subparsers: Any) -> None:
    """Add ``layers`` to ``ArgumentParser.add_subparsers()`` (``func``: :func:`cmd_layers`).

    Examples:
        >>> p = argparse.ArgumentParser(prog="cladec"); register(p.add_subparsers(dest="command"))
        >>> p.parse_args(["layers", "--model", "clf"]).func.__name__
        'cmd_layers'
    """
    lay = subparsers.add_parser(
        "layers",
        help="list a classifier's layers with their types, output shapes and layouts",
        description="Run one zero image through the classifier and print every layer it reaches with the "
        "module type, output shape and layout (nchw, nhwc channels-last, tokens, flat: declared by the model "
        "family or measured at twice the image size; '?' where neither tells, see `cladec fit --layout`). The "
        "default layers ('last', 'middle': the model's own, a family rule, or the last and middle of the "
        "outermost layers with a spatial map or a token grid) are marked.",
    )
    add_model_source(lay)
    lay.add_argument(
        "--image-shape",
        metavar="C,H,W",
        help="input shape, e.g. 1,28,28 (default: the checkpoint's or the model's metadata; required with --factory)",
    )
    lay.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lay.set_defaults(func=cmd_layers)


def cmd_layers(args: argparse.Namespace) -> int:
    """Handler of ``cladec layers``: print the classifier's layers, types, output shapes and layouts.

    Examples:
        >>> from cladec.cli import main
        >>> main(["layers", "--model", str(clf_dir)])  # clf_dir: a checkpoint of vgg-paper at width 0.25
        /...clf: input 1×28×28, 36 layers
        layer        type               output shape  layout  default
        -----------  -----------------  ------------  ------  -------
        conv0        ConvBlock          8×14×14       nchw
        ...
        conv4        ConvBlock          128×1×1       nchw    last
        ...
        fc           Linear             10            flat
        <BLANKLINE>
        default layers: last = conv4, middle = conv2  (use them as `cladec fit --layer NAME`)
        0
    """
    import torch

    from ..capture import default_layer_roles, list_layers
    from ..models.roles import default_layers
    from ..models.spec import load_classifier_spec, recorded_image_shape

    model, info = load_classifier_spec(classifier_source(args), Path.cwd())
    shape = parse_image_shape(args.image_shape) if args.image_shape is not None else recorded_image_shape(info)
    if shape is None:
        raise ConfigError("give the input shape with --image-shape C,H,W (e.g. 1,28,28): the model does not record it")
    try:
        layers = list_layers(model, torch.zeros(1, *shape), measure=True)
    except RuntimeError as e:
        raise ConfigError(f"the model does not accept input of shape {shape} (C, H, W): {e}") from None
    marks = default_layer_roles(model)
    if not marks:  # a --factory model: its family's rule, else the probe (see cladec.models.roles)
        model.default_layers = default_layers(model, torch.zeros(1, *shape))
        marks = default_layer_roles(model)
    if args.json:
        rows = [
            dict(name=L.name, type=L.type, shape=list(L.shape), layout=L.layout, default=marks.get(L.name, []))
            for L in layers
        ]
        print(json.dumps(rows, indent=2))
        return 0
    table: list[tuple[str, ...]] = [("layer", "type", "output shape", "layout", "default")]
    table += [
        (
            L.name,
            L.type,
            "×".join(map(str, L.shape)) or "-",
            L.layout or ("?" if L.shape else "-"),
            ", ".join(marks.get(L.name, [])),
        )
        for L in layers
    ]
    widths = [max(len(r[i]) for r in table) for i in range(5)]
    table.insert(1, tuple("-" * w for w in widths))
    print(f"{args.model or args.factory}: input {'×'.join(map(str, shape))}, {len(layers)} layers")
    for line in table:
        print("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip())
    if marks:
        roles = ", ".join(f"{k} = {n}" for n, ks in marks.items() for k in ks)
        print(f"\ndefault layers: {roles}  (use them as `cladec fit --layer NAME`)")
    return 0
