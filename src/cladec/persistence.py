"""Loading saved explainers (``ClaDec.save`` / ``RefAE.save`` write them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import SaveFormatError
from ._io import load_tensors, read_json

__all__ = ["load"]


def load(path: str | Path, model: nn.Module, *, decoder: nn.Module | None = None):
    """Restore a saved :class:`~cladec.ClaDec` or :class:`~cladec.RefAE`.

    Args:
        path: Directory written by ``.save(path)`` (holds ``cladec.json`` and ``weights.safetensors``).
        model: The classifier the explainer was made for. Its layer must still produce the recorded
            shape. For a RefAE only its architecture is used.
        decoder: The decoder module, needed only when the explainer was made with a custom decoder.

    Returns:
        The explainer, on the model's device, ready for ``reconstruct`` (its decoder, and a RefAE's encoder,
        in eval mode as after ``fit``).

    Raises:
        SaveFormatError: If ``path`` is not a cladec save, the weights do not match, or the model's
            layer now produces a different shape.

    Example:
        >>> exp = cladec.load("runs/conv4-cladec", classifier)  # doctest: +SKIP
    """
    from .explainer import ClaDec, RefAE

    path = Path(path)
    cfg_path = path / "cladec.json"
    if not path.is_dir() or not cfg_path.is_file():
        raise SaveFormatError(
            f"{path} is not a cladec save: expected a directory with cladec.json and weights.safetensors "
            "(made by ClaDec.save / RefAE.save or `cladec fit`)"
        )
    cfg = read_json(cfg_path, "cladec save configuration")
    if cfg.get("format") != "cladec-explainer":
        raise SaveFormatError(f"{cfg_path} is not a cladec explainer save (format is {cfg.get('format')!r})")
    version = cfg.get("format_version", 1)
    if version != 1:
        raise SaveFormatError(f"{cfg_path} has format version {version!r}; this cladec reads version 1 "
                              "(a newer cladec wrote it: upgrade cladec)")
    kind = cfg.get("kind")
    if kind not in ("cladec", "refae"):
        raise SaveFormatError(f"{cfg_path}: unknown explainer kind {kind!r} (valid: 'cladec', 'refae')")
    spec = cfg.get("decoder", {})
    if not isinstance(spec, dict):
        raise SaveFormatError(f"{cfg_path} is malformed: 'decoder' must be an object, got {type(spec).__name__}")
    if spec.get("kind") == "custom" and decoder is None:
        raise SaveFormatError(
            f"{path} was made with a custom decoder ({spec.get('class')}); pass it as load(..., decoder=...)"
        )
    try:
        image_shape = tuple(cfg["image_shape"])
        layer = cfg["layer"]
        recorded = tuple(cfg["layer_shape"])
        kwargs: dict[str, Any] = dict(neurons=cfg.get("neurons"), decoder=decoder, input_norm=cfg.get("input_norm"))
        if decoder is None:  # the built decoder's settings (a custom decoder refuses them; older saves may record
            # values that were ignored then)
            kwargs.update(base_width=int(cfg.get("base_width", 64)), decoder_norm=cfg.get("decoder_norm"))
        if len(recorded) == 2:  # token outputs only (other layers refuse them; older saves may record ignored values)
            kwargs.update(prefix_tokens=cfg.get("prefix_tokens", "drop"), num_prefix_tokens=cfg.get("num_prefix_tokens"))
    except (KeyError, TypeError, ValueError) as e:
        raise SaveFormatError(f"{cfg_path} is incomplete or malformed: {e}") from None
    if kind == "cladec":
        exp = ClaDec(model, layer, alpha=float(cfg.get("alpha", 0.0)), **kwargs)
    else:
        exp = RefAE(model, layer, **kwargs)
    # probe the model's layer before building the decoder, to report a shape change clearly
    probe_model = exp.capture.model
    was = probe_model.training
    probe_model.eval()
    try:
        with torch.no_grad():
            raw = exp.capture.raw(torch.zeros(2, *image_shape, device=exp.device))
    finally:
        probe_model.train(was)
    if tuple(raw.shape[1:]) != recorded:
        raise SaveFormatError(
            f"{path} was made for layer {layer!r} with output shape {recorded}, but this model's layer "
            f"produces {tuple(raw.shape[1:])}; load it with the model it was made for"
        )
    exp.build(image_shape)
    tensors = load_tensors(path / "weights.safetensors", device=exp.device)
    _load_part(exp.decoder, tensors, "decoder.", path)
    if kind == "refae":
        _load_part(exp.encoder, tensors, "encoder.", path)
    # as after fit: the trained modules in eval mode (batch statistics and dropout off); the loaded weights are never
    # drawn again by a later fit's seed
    for m in exp._train_modules():
        m.eval()
    exp._forget_initial_weights()
    exp.history = list(cfg.get("history", []))
    exp.fit_config = dict(cfg.get("fit_config", {}))
    exp.fitted = bool(cfg.get("fitted", False))
    exp._bias_initialised = exp.fitted
    exp.collapsed = bool(cfg.get("collapsed", False))
    return exp


def _load_part(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path) -> None:
    part = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(part))
    unexpected = sorted(set(part) - set(own))
    bad = [k for k in own if k in part and tuple(own[k].shape) != tuple(part[k].shape)]
    if missing or unexpected or bad:
        raise SaveFormatError(
            f"{path}: the saved {prefix.rstrip('.')} weights do not fit: missing {missing[:5]}, "
            f"unexpected {unexpected[:5]}, wrong shape {bad[:5]}"
        )
    module.load_state_dict(part)
