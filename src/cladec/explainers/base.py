"""ClaDec and its reference auto-encoder (RefAE).

* :class:`ClaDec` trains a decoder on the activations of one layer of a frozen classifier to
  reconstruct the input: loss ``(1 − α)·MSE(x̂, x) + α·CE(C(x̂), y)``.
* :class:`RefAE` is the control: the classifier's modules up to the layer, freshly initialised and
  trainable, plus the same decoder architecture, trained on reconstruction only.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .._errors import ConfigError, DataError, caller_level
from .._io import atomic_dir, file_sha256, save_tensors, write_json
from .._tensors import image_tensor, model_device
from .._version import __version__
from ..capture import LayerCapture
from ..decoder import ARCHS, Decoder, build_decoder
from ..models.reinit import weight_marks
from ..normalize import model_input_norm
from ..training import distributed
from ..training.engine import LossFn
from .fitting import FitMixin

__all__ = ["DecoderExplainer"]

DEFAULT_CACHE_BUDGET = 2 * 1024**3


class DecoderExplainer(FitMixin):
    kind = "base"
    _loss: LossFn  # the training loss of one batch, defined by each kind (ClaDec, RefAE)

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        neurons: Sequence[int] | torch.Tensor | None = None,
        decoder: nn.Module | None = None,
        base_width: int = 64,
        decoder_norm: str | None = None,
        decoder_arch: str = "auto",
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        layout: str | None = None,
        cache_budget: int = DEFAULT_CACHE_BUDGET,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if decoder is not None:
            if not isinstance(decoder, nn.Module):
                raise ConfigError(f"decoder must be an nn.Module, got {type(decoder).__name__}")
            given = [
                f"{n}={v!r}"
                for n, v, default in (
                    ("base_width", base_width, 64),
                    ("decoder_norm", decoder_norm, None),
                    ("decoder_arch", decoder_arch, "auto"),
                )
                if v != default
            ]
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} configure{'s' if len(given) == 1 else ''} the decoder cladec "
                    "builds, which decoder= replaces: drop "
                    f"{'it' if len(given) == 1 else 'them'} or the custom decoder"
                )
        self.model = model
        if input_norm is None:  # a model from cladec.models.load_model names the normalisation it expects
            input_norm = model_input_norm(model)
        self.capture = LayerCapture(
            self._encoder_model(),
            layer,
            neurons=neurons,
            prefix_tokens=prefix_tokens,
            num_prefix_tokens=num_prefix_tokens,
            input_norm=input_norm,
            layout=layout,
        )
        self.layer = self.capture.layer
        self.base_width = int(base_width)
        self.decoder_norm = decoder_norm
        if decoder_arch not in ("auto", *ARCHS):
            raise ConfigError(f"decoder_arch must be 'auto', 'paper' or 'scaled', got {decoder_arch!r}")
        self.decoder_arch = decoder_arch
        self.cache_budget = int(cache_budget)
        self.decoder: nn.Module | None = decoder
        self._custom_decoder = decoder is not None
        # the decoder's parameter versions right after this explainer drew its initial weights (None: a decoder
        # the user gave, or weights already trained or loaded): the first fit with a seed draws them again from the
        # seed unless they were changed since (see _seed_initial_weights)
        self._decoder_marks: tuple | None = None
        self.image_shape: tuple[int, int, int] | None = None
        self.history: list[dict[str, Any]] = []
        self.fit_config: dict[str, Any] = {}
        self.fitted = False
        self.collapsed = False
        self._bias_initialised = False
        self._act_cache: tuple[torch.Tensor, tuple, torch.Tensor] | None = None
        self._placed: dict[int, tuple[torch.Tensor, torch.Tensor]] | None = None  # set by fit_together
        if image_shape is not None:
            self.build(image_shape)

    # -- structure -----------------------------------------------------------------------------
    def _encoder_model(self) -> nn.Module:
        return self.model

    @property
    def neurons(self) -> list[int] | None:
        """The selected unit indices (None = all units)."""
        return self.capture.neurons

    @property
    def input_norm(self) -> tuple[list[float], list[float]] | None:
        """The classifier's ``(mean, std)`` as two lists of floats, or None."""
        return self.capture.norm.pair

    @property
    def device(self) -> torch.device:
        """The device of the classifier; the decoder lives there too."""
        return model_device(self.model)

    @property
    def activation_shape(self) -> tuple[int, ...]:
        """Shape (without batch) of what the decoder sees: after token gridding and neuron selection."""
        if self.capture.output_shape is None:
            raise ConfigError("the explainer is not built yet: call fit() or pass image_shape=")
        return self.capture.output_shape

    def build(self, image_shape: Sequence[int]) -> None:
        """Probe the layer with a zero image of ``image_shape`` and build the decoder (a custom decoder: check that it
        maps the activations to images of ``image_shape``, else ConfigError)."""
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3:
            raise ConfigError(f"image_shape must be (C, H, W), got {image_shape}")
        if self.image_shape is not None and self.image_shape != image_shape:
            raise DataError(f"this explainer was built for images of shape {self.image_shape}, got {image_shape}")
        model = self.capture.model
        was = model.training
        model.eval()
        try:
            with torch.no_grad():
                act = self.capture(torch.zeros(2, *image_shape, device=self.capture.device)).to(self.device)
        finally:
            model.train(was)
        if self.decoder is None:
            self.decoder = self._new_decoder(tuple(act.shape[1:]), image_shape).to(self.device)
            self._decoder_marks = weight_marks(self.decoder)
        else:
            self.decoder.to(self.device)
            self._check_decoder_output(act, image_shape)
        self.image_shape = image_shape

    def _built_decoder(self) -> nn.Module:
        """``decoder``, where the explainer is built (build() sets it before anything runs it)."""
        assert self.decoder is not None, "the explainer is built before its decoder runs"
        return self.decoder

    def _new_decoder(self, act_shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> nn.Module:
        """A freshly drawn decoder of this explainer's architecture (from the global random generator)."""
        return build_decoder(
            act_shape, image_shape, base_width=self.base_width, norm=self.decoder_norm, arch=self.decoder_arch
        )

    def _check_decoder_output(self, act: torch.Tensor, image_shape: tuple[int, ...]) -> None:
        """A user's decoder must turn the layer's activations into images of ``image_shape`` (else the losses
        would broadcast and reconstruct would return another shape)."""
        dec = self._built_decoder()
        was = dec.training
        dec.eval()
        try:
            with torch.no_grad():
                out = dec(act)
        except RuntimeError as e:
            if "out of memory" in str(e):
                raise
            raise ConfigError(f"the decoder failed on the layer's activations of shape {tuple(act.shape)}: {e}") from e
        finally:
            dec.train(was)
        want = (act.shape[0], *image_shape)
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got != want:
            raise ConfigError(
                f"the decoder must map activations of shape {tuple(act.shape)} to images of shape "
                f"{want} (N, C, H, W: the data's), but it returned {got}"
            )

    @property
    def decoder_spec(self) -> dict[str, Any]:
        if isinstance(self.decoder, Decoder) and not self._custom_decoder:
            return self.decoder.spec.to_dict()
        return {"kind": "custom", "class": type(self.decoder).__qualname__}

    # -- running -------------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """The activations the decoder sees for images ``x`` (no gradient)."""
        x = image_tensor(x)
        self._ensure_built(tuple(x.shape[1:]))
        return self._batched(x, self._encode_batch)

    def decode(self, a: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Decode activations ``a`` (as returned by :meth:`encode`) into images."""
        self._require_built()
        self._warn_if_unfitted()
        outs = []
        dec = self._built_decoder()
        was = dec.training
        dec.eval()
        try:
            with torch.no_grad():
                for i in range(0, a.shape[0], batch_size):
                    outs.append(dec(a[i : i + batch_size].to(self.device)).to(a.device))
        finally:
            dec.train(was)
        return torch.cat(outs)

    def reconstruct(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Reconstruct images from the layer's activations.

        Args:
            x: Images ``(N, C, H, W)`` in [0, 1] (uint8 is scaled).
            batch_size: Images per internal batch (bounds memory for large inputs).

        Returns:
            A tensor shaped like ``x`` with values in [0, 1], on ``x``'s device.

        Examples:
            >>> x_hat = explainer.reconstruct(x)  # x: 16 test images (16, 1, 28, 28)
            >>> x_hat.shape, bool(0 <= x_hat.min() and x_hat.max() <= 1)
            (torch.Size([16, 1, 28, 28]), True)
        """
        x = image_tensor(x)
        self._ensure_built(tuple(x.shape[1:]))
        self._require_built()
        self._warn_if_unfitted()
        return self._decode_images(x, batch_size)

    def _decode_images(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Encode and decode images ``x`` of a built explainer, in eval mode (also while it is being fitted)."""

        def one(xb: torch.Tensor) -> torch.Tensor:
            return self._built_decoder()(self._encode_batch(xb))

        return self._batched(x, one, batch_size)

    def _warn_if_unfitted(self) -> None:
        """Warn (once per explainer) that reconstructions of an unfitted explainer come from an untrained decoder."""
        if self.fitted or getattr(self, "_warned_unfitted", False):
            return
        self._warned_unfitted = True
        warnings.warn(
            f"{type(self).__name__} for layer {self.layer!r} has not been fitted: its decoder is untrained, so "
            "its reconstructions show nothing the layer keeps; call fit() first (or load a fitted save)",
            UserWarning,
            stacklevel=caller_level(),
        )

    def _batched(self, x: torch.Tensor, fn, batch_size: int = 256) -> torch.Tensor:
        mods = [self.capture.model, self._built_decoder()]
        states = [m.training for m in mods]
        for m in mods:
            m.eval()
        outs = []
        try:
            with torch.no_grad():
                for i in range(0, x.shape[0], batch_size):
                    outs.append(fn(x[i : i + batch_size].to(self.device, non_blocking=True)).to(x.device))
        finally:
            for m, s in zip(mods, states, strict=True):
                m.train(s)
        return torch.cat(outs)

    def _encode_batch(self, xb: torch.Tensor) -> torch.Tensor:
        return self.capture(xb)

    def _ensure_built(self, image_shape: tuple[int, ...]) -> None:
        self._check_image_shape(image_shape)
        if self.image_shape is None:
            self.build(image_shape)

    def _check_image_shape(self, image_shape: tuple[int, ...]) -> None:
        """Images of ``image_shape`` fit this explainer: it is not built yet, or built for that shape."""
        if self.image_shape is not None and tuple(image_shape) != tuple(self.image_shape):
            raise DataError(
                f"images have shape {tuple(image_shape)} but this {self.kind} explainer was built for "
                f"{tuple(self.image_shape)} (C, H, W)"
            )

    def _require_built(self) -> None:
        if self.decoder is None or self.image_shape is None:
            raise ConfigError("the explainer is not built yet: call fit() first or pass image_shape=")

    # -- persistence ---------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._require_built()
        return {f"decoder.{k}": v for k, v in self._built_decoder().state_dict().items()}

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable configuration written by :meth:`save`."""

        self._require_built()
        return {
            "format": "cladec-explainer",
            "format_version": 1,
            "kind": self.kind,
            "cladec_version": __version__,
            "model_class": type(self.model).__name__,
            "layer": self.layer,
            "neurons": self.neurons,
            "prefix_tokens": self.capture.prefix_tokens,
            "num_prefix_tokens": self.capture.num_prefix_tokens,
            "layout": self.capture.layout,
            "input_norm": self.input_norm,
            "layer_shape": list(self.capture.raw_shape or ()),
            "activation_shape": list(self.activation_shape),
            "image_shape": list(self.image_shape or ()),
            "decoder": self.decoder_spec,
            "base_width": self.base_width,
            "decoder_norm": self.decoder_norm,
            "decoder_arch": self.decoder_arch,
            "fitted": self.fitted,
            "collapsed": self.collapsed,
            "fit_config": self.fit_config,
            "history": self.history,
        }

    def save(self, path) -> None:
        """Save weights (``weights.safetensors``) and configuration (``cladec.json``) to directory ``path``.

        The directory appears complete or not at all (written to a temporary directory, then renamed). Under
        ``torch.distributed`` only rank 0 writes; every rank returns once it is complete.
        ``cladec.json`` records the weights' SHA-256 (``weights_sha256``), which :func:`cladec.load` checks.

        Args:
            path: Target directory (replaced if it holds an earlier save; any other non-empty folder is
                refused with SaveFormatError, never deleted).

        Examples:
            >>> explainer.save("conv4-cladec")
            >>> sorted(p.name for p in Path("conv4-cladec").iterdir())
            ['cladec.json', 'weights.safetensors']
        """

        cfg = self.config()
        tensors = self.state_tensors()

        def write() -> None:
            with atomic_dir(path, "cladec.json", "saved explainer") as tmp:
                save_tensors(tmp / "weights.safetensors", tensors)
                # the weights' identity: cladec.load refuses weights changed or replaced since (one flipped byte,
                # or another save's weights copied in)
                cfg["weights_sha256"] = file_sha256(tmp / "weights.safetensors")
                write_json(tmp / "cladec.json", cfg)

        distributed.write_on_main(write)  # data-parallel: rank 0 writes, the others wait for it

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer={self.layer!r}, neurons={self.neurons}, "
            f"activation_shape={self.capture.output_shape}, image_shape={self.image_shape}, fitted={self.fitted})"
        )
