"""Loading saved explainers (``ClaDec.save`` / ``RefAE.save`` write them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from ._errors import ConfigError, SaveFormatError
from ._io import check_inside, file_sha256, load_tensors, read_json
from ._limits import check_fits, tensor_bytes, weight_bytes_on_meta
from ._schema import EXPLAINER, validate
from .explainers.cladec import ClaDec
from .explainers.refae import RefAE

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
        SaveFormatError: If ``path`` is not a cladec save, a field of ``cladec.json`` is missing or malformed
            (:data:`cladec._schema.EXPLAINER`) or describes a decoder too large for this machine, a file of the
            save is a link out of its folder, the weights are not those the save recorded (``weights_sha256``;
            saves of earlier versions record none) or hold keys the explainer does not have, or the model's
            layer now produces a different shape.

    Examples:
        >>> explainer.save("conv4-cladec")
        >>> exp = cladec.load("conv4-cladec", classifier)
        >>> exp
        ClaDec(layer='conv4', neurons=None, activation_shape=(128, 1, 1), image_shape=(1, 28, 28), fitted=True)
        >>> torch.equal(exp.reconstruct(x), explainer.reconstruct(x))
        True
    """

    path = Path(path)
    cfg_path = path / "cladec.json"
    if not path.is_dir() or not cfg_path.is_file():
        raise SaveFormatError(
            f"{path} is not a cladec save: expected a directory with cladec.json and weights.safetensors "
            "(made by ClaDec.save / RefAE.save or `cladec fit`)"
        )
    check_inside(cfg_path, path, "the save's configuration")
    cfg = read_json(cfg_path, "cladec save configuration")
    if cfg.get("format") != "cladec-explainer":
        raise SaveFormatError(f"{cfg_path} is not a cladec explainer save (format is {cfg.get('format')!r})")
    version = cfg.get("format_version", 1)
    if version != 1:
        raise SaveFormatError(
            f"{cfg_path} has format version {version!r}; this cladec reads version 1 "
            "(a newer cladec wrote it: upgrade cladec)"
        )
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
    if spec.get("kind") != "custom" and spec.get("arch", "paper") not in ("paper", "scaled"):
        raise SaveFormatError(
            f"{cfg_path} is malformed: 'decoder.arch' must be 'paper' or 'scaled', got {spec.get('arch')!r}"
        )
    validate(cfg, EXPLAINER, cfg_path, "save the explainer again, e.g. fit the run again with `cladec fit`")
    image_shape = tuple(cfg["image_shape"])
    layer = cfg["layer"]
    recorded = tuple(cfg["layer_shape"])
    kwargs: dict[str, Any] = dict(
        neurons=cfg.get("neurons"), decoder=decoder, input_norm=cfg.get("input_norm"), layout=cfg.get("layout")
    )
    if decoder is None:  # the built decoder's settings (a custom decoder refuses them; older saves may record
        # values that were ignored then)
        kwargs.update(base_width=cfg.get("base_width", 64), decoder_norm=cfg.get("decoder_norm"))
        kwargs["decoder_arch"] = spec.get("arch", "paper")  # the one built (saves without it: the paper decoder's)
    if len(recorded) == 2:  # token outputs only (other layers refuse them; older saves may record ignored values)
        kwargs.update(prefix_tokens=cfg.get("prefix_tokens", "drop"), num_prefix_tokens=cfg.get("num_prefix_tokens"))
    _check_affordable(
        tensor_bytes(2, *image_shape), f"{cfg_path}: 'image_shape' {list(image_shape)}", "the probe images"
    )
    exp: ClaDec | RefAE
    try:
        if kind == "cladec":
            exp = ClaDec(model, layer, alpha=float(cfg.get("alpha", 0.0)), **kwargs)
        else:
            exp = RefAE(model, layer, **kwargs)
    except ConfigError as e:  # e.g. a layer the model does not have, units it does not have
        raise SaveFormatError(f"{cfg_path} does not fit this classifier: {e}") from None
    # probe the model's layer before building the decoder, to report a shape change clearly
    probe_model = exp.capture.model
    was = probe_model.training
    probe_model.eval()
    try:
        with torch.no_grad():
            zeros = torch.zeros(2, *image_shape, device=exp.device)
            raw = exp.capture.raw(zeros)
            act_shape = tuple(exp.capture(zeros).shape[1:]) if tuple(raw.shape[1:]) == recorded else None
    except RuntimeError as e:
        if "out of memory" in str(e).lower():
            raise
        raise SaveFormatError(
            f"{cfg_path}: this classifier does not take images of 'image_shape' "
            f"{list(image_shape)}: {str(e).splitlines()[0] if str(e) else e!r}"
        ) from None
    finally:
        probe_model.train(was)
    if tuple(raw.shape[1:]) != recorded:
        raise SaveFormatError(
            f"{path} was made for layer {layer!r} with output shape {recorded}, but this model's layer "
            f"produces {tuple(raw.shape[1:])}; load it with the model it was made for"
        )
    if decoder is None:  # a decoder of an absurd base_width would ask the allocator for terabytes
        assert act_shape is not None  # the layer's output shape is the recorded one (checked above)
        nbytes = weight_bytes_on_meta(lambda: exp._new_decoder(act_shape, image_shape))
        if nbytes is not None:
            _check_affordable(nbytes, f"{cfg_path}: the decoder of 'base_width' {kwargs['base_width']}", "its weights")
    exp.build(image_shape)
    weights = check_inside(path / "weights.safetensors", path, "the save's weights")
    tensors = load_tensors(weights, device=exp.device)
    digest = cfg.get("weights_sha256")  # saves of earlier versions record none: not checked
    if digest is not None and file_sha256(weights) != digest:
        raise SaveFormatError(
            f"{weights} is not the weights file {cfg_path} was saved with (its SHA-256 differs from the recorded "
            "'weights_sha256'): it was changed or replaced since (damaged on disk, or another save's weights "
            "copied in); save the explainer again (e.g. `cladec fit`)"
        )
    parts = ("decoder.", "encoder.") if kind == "refae" else ("decoder.",)
    stray = sorted(k for k in tensors if not k.startswith(parts))
    if stray:
        raise SaveFormatError(
            f"{weights} holds weights a {'RefAE' if kind == 'refae' else 'ClaDec'} save does not have: "
            f"{', '.join(stray[:5])}{' ...' if len(stray) > 5 else ''} ({len(stray)} unexpected key(s); a "
            f"{kind} save holds only {' and '.join(p + '*' for p in parts)}): the weights of another kind of "
            "save were copied in; save the explainer again"
        )
    _load_part(exp._built_decoder(), tensors, "decoder.", weights, cfg_path)
    if kind == "refae":
        assert isinstance(exp, RefAE)
        _load_part(exp.encoder, tensors, "encoder.", weights, cfg_path)
    # as after fit: the trained modules in eval mode (batch statistics and dropout off); the loaded weights are never
    # drawn again by a later fit's seed
    for m in exp._train_modules():
        m.eval()
    exp._forget_initial_weights()
    exp.history = list(cfg.get("history", []))  # types checked by the schema
    exp.fit_config = dict(cfg.get("fit_config", {}))
    exp.fitted = bool(cfg.get("fitted", False))
    exp._bias_initialised = exp.fitted
    exp.collapsed = bool(cfg.get("collapsed", False))
    return exp


def _check_affordable(nbytes: float, what: str, of: str) -> None:

    try:
        check_fits(nbytes, f"{what} ({of})", hint="the file is damaged or was edited by hand; save it again")
    except ConfigError as e:
        raise SaveFormatError(str(e)) from None


def _load_part(module: nn.Module, tensors: dict[str, torch.Tensor], prefix: str, path: Path, cfg_path: Path) -> None:
    part = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    own = module.state_dict()
    missing = sorted(set(own) - set(part))
    unexpected = sorted(set(part) - set(own))
    bad = [k for k in own if k in part and tuple(own[k].shape) != tuple(part[k].shape)]
    if missing or unexpected or bad:
        found = [
            f"missing {', '.join(missing[:5])}" if missing else "",
            f"unexpected {', '.join(prefix + k for k in unexpected[:5])}" if unexpected else "",
            f"wrong shape {', '.join(bad[:5])}" if bad else "",
        ]
        raise SaveFormatError(
            f"{path}: the saved {prefix.rstrip('.')} weights do not fit the {prefix.rstrip('.')} {cfg_path} describes "
            f"(its layer_shape, image_shape, base_width, decoder_norm): {'; '.join(f for f in found if f)}; "
            "save the explainer again"
        )
    module.load_state_dict(part)
