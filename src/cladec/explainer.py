"""ClaDec and its reference auto-encoder (RefAE).

* :class:`ClaDec` trains a decoder on the activations of one layer of a frozen classifier to
  reconstruct the input: loss ``(1 − α)·MSE(x̂, x) + α·CE(C(x̂), y)``.
* :class:`RefAE` is the control: the classifier's modules up to the layer, freshly initialised and
  trainable, plus the same decoder architecture, trained on reconstruction only.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import image_tensor
from ._errors import ConfigError, DataError
from ._inputs import Prepared, iterate_batches, prepare
from ._training import Engine, EngineConfig, LossFn, Task, check_amp, check_compile, make_optimizer
from .capture import LayerCapture, _model_device
from .decoder import Decoder, build_decoder

__all__ = ["ClaDec", "RefAE", "CollapseWarning", "fit_together"]

DEFAULT_CACHE_BUDGET = 2 * 1024**3


class CollapseWarning(UserWarning):
    """The decoder's output hardly varies across images: it has collapsed to one constant image."""


class _DecoderExplainer:
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
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        cache_budget: int = DEFAULT_CACHE_BUDGET,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if decoder is not None:
            if not isinstance(decoder, nn.Module):
                raise ConfigError(f"decoder must be an nn.Module, got {type(decoder).__name__}")
            given = [
                f"{n}={v!r}"
                for n, v, default in (("base_width", base_width, 64), ("decoder_norm", decoder_norm, None))
                if v != default
            ]
            if given:
                raise ConfigError(
                    f"{' and '.join(given)} configure{'s' if len(given) == 1 else ''} the decoder cladec "
                    "builds, which decoder= replaces: drop "
                    f"{'it' if len(given) == 1 else 'them'} or the custom decoder"
                )
        self.model = model
        self.capture = LayerCapture(
            self._encoder_model(),
            layer,
            neurons=neurons,
            prefix_tokens=prefix_tokens,
            num_prefix_tokens=num_prefix_tokens,
            input_norm=input_norm,
        )
        self.layer = self.capture.layer
        self.base_width = int(base_width)
        self.decoder_norm = decoder_norm
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
    def input_norm(self):
        n = self.capture.input_norm
        return None if n is None else (n[0].tolist(), n[1].tolist())

    @property
    def device(self) -> torch.device:
        """The device of the classifier; the decoder lives there too."""
        return _model_device(self.model)

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
            self._decoder_marks = _marks(self.decoder)
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
        return build_decoder(act_shape, image_shape, base_width=self.base_width, norm=self.decoder_norm)

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
            stacklevel=_caller_level(),
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

    # -- training ------------------------------------------------------------------------------
    def _parts(self) -> list[str]:
        return ["mse"]

    def fit(
        self,
        data: Any,
        epochs: int = 5,
        *,
        batch_size: int = 128,
        lr: float = 3e-4,
        weight_decay: float = 1e-5,
        lr_decay: str | None = None,
        seed: int | None = 0,
        verbose: bool = True,
        fast: bool = True,
        log_every: int = 50,
        channels_last: bool | None = None,
        compile: bool | str = False,
        amp: bool | None = None,
    ):
        """Train the decoder (and, for RefAE, the encoder).

        Args:
            data: A pair of tensors ``(images, labels)``, an image tensor (α = 0 only), a Dataset of
                ``(image, label)`` or a DataLoader. Images ``(N, C, H, W)`` in [0, 1].
            epochs: Passes over the data.
            batch_size: Minibatch size (authors: 128).
            lr: Adam learning rate (authors: 3e-4).
            weight_decay: Adam weight decay (authors: 1e-5).
            lr_decay: ``None`` or ``"step"`` (× 0.1 every ``E//3 + E//10 + 2`` epochs, as the authors).
            seed: Seeds the shuffling order and, at the first fit, the initial weights this explainer drew
                itself (the built decoder; for a RefAE also its encoder unless ``init_seed`` was given, and
                a decoder :meth:`RefAE.like` copied), so two fits with the same seed give the same weights.
                A decoder you pass as ``decoder=`` keeps its weights, as do weights changed since they were
                drawn. None: not seeded.
            verbose: Show a progress bar with epoch, loss and its parts.
            fast: Use the fast path (no per-step host sync; on CUDA bf16, fused Adam, CUDA graphs).
                ``fast=False`` runs the plain eager loop, for debugging.
            log_every: Steps between progress updates on the fast path.
            channels_last: Channels-last memory format for the trained modules (default: on for the
                fast path on CUDA).
            compile: ``torch.compile`` the loss (full batches) before CUDA-graph capture. On an H200
                (Fashion-MNIST, conv4, batch 128) it cut an epoch from 0.41 to 0.31 s (ClaDec) and 0.54
                to 0.40 s (RefAE) but costs 7–9 s of compiling per fit (less with a warm compile
                cache), so it pays off for long fits; off by default. A string picks the mode:
                ``"default"`` (= ``True``) or ``"max-autotune-no-cudagraphs"`` (tunes kernels, compiles longer).
                Fast path only: with ``fast=False`` it is refused (ConfigError).
            amp: bf16 autocast (default: on CUDA, and on the fast path on CPUs with native bf16;
                ``False`` keeps everything in float32). ``True`` works on CUDA and CPU; on another device
                (such as ``mps``) it is refused (ConfigError).

        Returns:
            ``self``, trained; per-epoch losses are in :attr:`history`.

        Examples:
            >>> data = cladec.data.load_dataset("fashion-mnist-mini", limit=500)
            >>> exp = ClaDec(classifier, "conv2", alpha=0.001).fit(data, epochs=1, lr=3e-3, batch_size=32)
            >>> exp.fitted, sorted(exp.history[-1])
            (True, ['ce', 'epoch', 'loss', 'lr', 'mse', 'seconds'])
        """
        fit_together(
            [self],
            data,
            epochs,
            batch_size=batch_size,
            lr=lr,
            weight_decay=weight_decay,
            lr_decay=lr_decay,
            seed=seed,
            verbose=verbose,
            fast=fast,
            log_every=log_every,
            channels_last=channels_last,
            compile=compile,
            amp=amp,
        )
        return self

    def _fit_begin(self, prepared: Prepared, *, seed, lr, weight_decay, fast, channels_last) -> Task:
        """Build, seed and make the optimiser for a fit; returns the engine task."""
        if seed is not None:
            torch.manual_seed(seed)
            self._seed_initial_weights(seed)
        self._ensure_built(prepared.image_shape)  # type: ignore[arg-type]  # prepare() always sets image_shape
        self._forget_initial_weights()  # trained from now on: a later fit never draws them again
        if not self._bias_initialised and not self._custom_decoder and prepared.x is not None:
            # start the output at the data's mean pixel (once, before the first fit)
            cast(Decoder, self.decoder).init_output_bias(prepared.x.mean(dim=(0, 2, 3)))  # cladec's own: a Decoder
        self._bias_initialised = True
        dev = self.device
        if self.capture.input_norm is not None:
            # the normalisation's device copies made now: made by the first compiled step they forced a recompile
            for dt in (torch.float32, torch.bfloat16):
                channels = self.image_shape[0]  # type: ignore[index]  # built above
                self.capture.normalize(torch.zeros(1, channels, 1, 1, device=dev, dtype=dt))
        opt = make_optimizer("adam", self._trainable_params(), lr=lr, weight_decay=weight_decay, device=dev, fast=fast)
        self._fast = fast
        self._channels_last = (fast and dev.type == "cuda") if channels_last is None else channels_last
        return Task(self._loss, opt, self._train_modules(), self._parts(), self.kind)

    def _seed_initial_weights(self, seed: int) -> None:
        """Draw again from ``seed`` the initial weights this explainer drew itself and that are unchanged since.

        Called with the global generator just seeded with ``seed``; a decoder drawn here gets the same weights
        as one built by this fit (so ``image_shape=`` at construction changes nothing).
        """
        dec = self.decoder
        if dec is None or self._decoder_marks is None or self._decoder_marks != _marks(dec):
            return
        if self._custom_decoder:  # a copy of a user's decoder (RefAE.like): reset as RefAE's encoder is
            _reinitialise(dec)
        else:
            fresh = self._new_decoder(tuple(self.activation_shape), self.image_shape)  # type: ignore[arg-type]  # built
            with torch.no_grad():
                dec.load_state_dict(fresh.state_dict())

    def _forget_initial_weights(self) -> None:
        self._decoder_marks = None

    def _fit_end(self, res, prepared: Prepared, fit_config: dict[str, Any]) -> None:
        for m in self._train_modules():  # trained: the decoder (and RefAE's encoder) are used in eval mode
            m.eval()
        start = len(self.history)
        for i, h in enumerate(res.history):
            h["epoch"] = start + i + 1
        self.history.extend(res.history)
        self.fit_config = dict(
            fit_config,
            n_train=int(prepared.x.shape[0]) if prepared.x is not None else None,
            seconds=round(res.seconds, 3),
            steps=res.steps,
            device=str(self.device),
        )
        self.fitted = True
        self._check_collapse(prepared)

    def _needs_labels(self) -> bool:
        return False

    def _trainable_params(self) -> list[nn.Parameter]:
        return [p for p in self._built_decoder().parameters() if p.requires_grad]

    def _train_modules(self) -> list[nn.Module]:
        return [self._built_decoder()]

    def _training_mode(self):
        import contextlib

        return contextlib.nullcontext()

    def _stream(self, prepared: Prepared):
        assert prepared.loader is not None  # streamed: prepare() gave a loader
        for xb, yb in iterate_batches(prepared.loader, self._needs_labels()):
            batch = {"x": xb}
            if yb is not None and self._needs_labels():
                batch["y"] = yb
            yield batch

    def _place(self, t: torch.Tensor) -> torch.Tensor:
        """Move a training tensor to the device when it fits the budget (else keep it on the host).

        Within :func:`fit_together` the explainers share one placed copy of each tensor (``_placed``)."""
        memo = self._placed
        if memo is not None and id(t) in memo:
            return memo[id(t)][1]
        if self.device.type == "cpu":
            out = t.cpu()
        elif t.numel() * t.element_size() <= self.cache_budget:
            out = t.to(self.device)
        else:
            out = t.cpu().pin_memory()
        if memo is not None:
            memo[id(t)] = (t, out)  # the source is kept alive with its copy, so its id stays its own
        return out

    def _train_tensors(self, prepared: Prepared) -> dict[str, torch.Tensor]:
        assert prepared.x is not None  # called for in-memory data only
        return {"x": self._place(prepared.x)}

    def _check_collapse(self, prepared: Prepared) -> None:
        if prepared.x is not None:
            xs = prepared.x[:256]
        else:
            assert prepared.loader is not None  # not in memory: prepare() gave a loader
            xs, _ = next(iterate_batches(prepared.loader, False))
        if xs.shape[0] < 2:  # one image has no spread to compare
            self.collapsed = False
            return
        rec = self.reconstruct(xs)
        spread = float(rec.std(dim=0).mean())
        data_spread = float(xs.std(dim=0).mean())
        self.collapsed = spread < 0.02 * max(data_spread, 1e-6)
        if self.collapsed:
            warnings.warn(
                f"{self.kind} for layer {self.layer!r} collapsed: its reconstructions hardly vary across "
                f"images (mean per-pixel std {spread:.2e} vs {data_spread:.2e} in the data). "
                f"{self._collapse_advice()}",
                CollapseWarning,
                stacklevel=_caller_level(),
            )

    def _collapse_advice(self) -> str:
        """What could help this explainer escape a collapse: only advice that applies to its setup.

        ``decoder_norm='batch'`` is suggested only for a built decoder without it that has hidden stages to
        normalise (a decoder of one head and one output convolution has none: the option changes nothing);
        a higher learning rate only when the fit used one below 1e-3 (small fits at the paper's 3e-4 often
        stay at a constant image, ``FINDINGS.md``)."""
        tips = ["train longer", "on more images"]
        lr = self.fit_config.get("lr")
        if isinstance(lr, (int, float)) and lr < 1e-3:
            tips.append(f"with a higher learning rate (lr={lr:g} now; e.g. 1e-3)")
        dec = self.decoder
        if (
            isinstance(dec, Decoder)
            and not self._custom_decoder
            and dec.spec.norm is None
            and any(isinstance(m, nn.ReLU) for m in dec.up)
        ):
            tips.append("with decoder_norm='batch'")
        text = ", ".join(tips[:-1]) + " or " + tips[-1]
        return text[0].upper() + text[1:] + "."

    # -- persistence ---------------------------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        self._require_built()
        return {f"decoder.{k}": v for k, v in self._built_decoder().state_dict().items()}

    def config(self) -> dict[str, Any]:
        """The JSON-serialisable configuration written by :meth:`save`."""
        from ._version import __version__

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
            "input_norm": self.input_norm,
            "layer_shape": list(self.capture.raw_shape or ()),
            "activation_shape": list(self.activation_shape),
            "image_shape": list(self.image_shape or ()),
            "decoder": self.decoder_spec,
            "base_width": self.base_width,
            "decoder_norm": self.decoder_norm,
            "fitted": self.fitted,
            "collapsed": self.collapsed,
            "fit_config": self.fit_config,
            "history": self.history,
        }

    def save(self, path) -> None:
        """Save weights (``weights.safetensors``) and configuration (``cladec.json``) to directory ``path``.

        The directory appears complete or not at all (written to a temporary directory, then renamed).
        ``cladec.json`` records the weights' SHA-256 (``weights_sha256``), which :func:`cladec.load` checks.

        Args:
            path: Target directory (replaced if it holds an earlier save; any other non-empty folder is
                refused with SaveFormatError, never deleted).

        Examples:
            >>> explainer.save("conv4-cladec")
            >>> sorted(p.name for p in Path("conv4-cladec").iterdir())
            ['cladec.json', 'weights.safetensors']
        """
        from ._io import atomic_dir, file_sha256, save_tensors, write_json

        cfg = self.config()
        tensors = self.state_tensors()
        with atomic_dir(path, "cladec.json", "saved explainer") as tmp:
            save_tensors(tmp / "weights.safetensors", tensors)
            # the weights' identity: cladec.load refuses weights changed or replaced since (one flipped byte, or
            # another save's weights copied in)
            cfg["weights_sha256"] = file_sha256(tmp / "weights.safetensors")
            write_json(tmp / "cladec.json", cfg)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(layer={self.layer!r}, neurons={self.neurons}, "
            f"activation_shape={self.capture.output_shape}, image_shape={self.image_shape}, fitted={self.fitted})"
        )


class ClaDec(_DecoderExplainer):
    """Decode a frozen classifier's layer back into images (Schneider & Vlachos 2022).

    Args:
        model: The trained classifier; it is never modified (kept frozen in eval mode while fitting).
        layer: Dotted module name or the module itself (stored as the name).
        alpha: Weight of the classification loss in ``(1 − α)·MSE + α·CE``, in [0, 1]
            (authors: 0.001; 0 = pure reconstruction).
        neurons: Optional subset of the layer's units (channel indices or a boolean mask for maps and
            token grids, feature indices for vectors); the decoder sees only those.
        decoder: Optional user-supplied decoder module mapping activations to images in [0, 1] of the data's
            shape ``(N, C, H, W)`` (checked when the explainer is built); it keeps the weights it has.
        base_width: Width of the built decoder's last hidden stage (authors: 64); not with ``decoder``.
        decoder_norm: ``None`` (authors) or ``"batch"``; not with ``decoder``.
        input_norm: ``(mean, std)`` if the classifier expects normalised inputs; images and
            reconstructions (both in [0, 1]) are normalised so before they reach the classifier.
        image_shape: ``(C, H, W)``; builds the decoder now instead of at the first fit.
        prefix_tokens: For ``(N, T, D)`` token outputs: ``"drop"`` the class/register tokens or fold them into
            ``"channels"`` (see :mod:`cladec.capture`); a layer with another output refuses a non-default value.
        num_prefix_tokens: Number of tokens before the patch tokens, if it cannot be inferred.
        cache_budget: Bytes the activation cache (and device-resident images) may take; above it
            activations are computed per batch (streamed).

    Examples:
        >>> import cladec
        >>> ds = cladec.data.load_dataset("fashion-mnist-mini", limit=500)
        >>> exp = cladec.ClaDec(classifier, "conv2", alpha=0.001).fit(ds, epochs=1, lr=3e-3, batch_size=32)
        >>> exp
        ClaDec(layer='conv2', neurons=None, activation_shape=(32, 4, 4), image_shape=(1, 28, 28), fitted=True)
        >>> x_hat = exp.reconstruct(x)
        >>> x_hat.shape == x.shape
        True
    """

    kind = "cladec"

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        alpha: float = 0.001,
        *,
        neurons: Sequence[int] | torch.Tensor | None = None,
        decoder: nn.Module | None = None,
        base_width: int = 64,
        decoder_norm: str | None = None,
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        cache_budget: int = DEFAULT_CACHE_BUDGET,
    ) -> None:
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ConfigError(f"alpha must be a number in [0, 1], got {alpha!r}") from None
        if not 0.0 <= alpha <= 1.0 or math.isnan(alpha):
            raise ConfigError(f"alpha must lie in [0, 1] (0 = pure reconstruction), got {alpha}")
        self.alpha = alpha
        super().__init__(
            model,
            layer,
            neurons=neurons,
            decoder=decoder,
            base_width=base_width,
            decoder_norm=decoder_norm,
            input_norm=input_norm,
            image_shape=image_shape,
            prefix_tokens=prefix_tokens,
            num_prefix_tokens=num_prefix_tokens,
            cache_budget=cache_budget,
        )
        self._loss_model: nn.Module = model

    def _needs_labels(self) -> bool:
        return self.alpha > 0

    def _parts(self) -> list[str]:
        return ["mse", "ce"]

    def _training_mode(self):
        import contextlib

        @contextlib.contextmanager
        def frozen():
            model = self.model
            was = model.training
            flags = [(p, p.requires_grad) for p in model.parameters()]
            try:
                model.eval()
                for p, _ in flags:
                    p.requires_grad_(False)
                if self._fast and self.alpha > 0:
                    self._loss_model = _frozen_copy(model, channels_last=self._channels_last, probe=self._probe())
                yield
            finally:
                self._loss_model = model
                for p, f in flags:
                    p.requires_grad_(f)
                model.train(was)

        return frozen()

    def _probe(self) -> torch.Tensor:
        """A few fixed random images, normalised as the classifier sees them (drawn without the global generator)."""
        g = torch.Generator().manual_seed(0)
        x = torch.rand(4, *self.image_shape, generator=g).to(self.device)  # type: ignore[misc]  # probed once built
        return self.capture.normalize(x)

    def _train_tensors(self, prepared: Prepared) -> dict[str, torch.Tensor]:
        x = prepared.x
        assert x is not None  # called for in-memory data only
        t = {"x": self._place(x)}
        if self.alpha > 0:
            assert prepared.y is not None  # alpha > 0 needs labels: prepare() refused data without them
            self._check_labels(x, prepared.y)
            t["y"] = self._place(prepared.y)
        act = self._cached_activations(x)
        if act is not None:
            t["a"] = act
        return t

    def _check_labels(self, x: torch.Tensor, y: torch.Tensor) -> None:
        """Labels must index the classifier's outputs (else the loss fails deep inside training)."""
        was = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                n_out = self.model(self.capture.normalize(x[:2].to(self.device))).shape[-1]
        finally:
            self.model.train(was)
        lo, hi = int(y.min()), int(y.max())
        if lo < 0 or hi >= n_out:
            raise DataError(f"labels must lie in 0..{n_out - 1} (the classifier has {n_out} outputs), got {lo}..{hi}")

    def _cached_activations(self, x: torch.Tensor) -> torch.Tensor | None:
        """Activations for all of ``x``, computed once and kept while they fit ``cache_budget``."""
        shape = self.activation_shape
        nbytes = x.shape[0] * math.prod(shape) * 4
        if nbytes > self.cache_budget:
            return None
        # valid for this very tensor, unchanged since (its version), and an unchanged classifier: its parameters and
        # its buffers (BatchNorm statistics recalibrated between fits change the activations too)
        key = (x._version, self.layer, tuple(self.neurons or ()), _marks(self.model, buffers=True))
        if self._act_cache is not None and self._act_cache[0] is x and self._act_cache[1] == key:
            return self._act_cache[2]
        act = self._place(self.encode(x))
        self._act_cache = (x, key, act)
        return act

    def _loss(self, batch):
        x = batch["x"]
        if "a" in batch:
            a = batch["a"]
        else:
            with torch.no_grad():
                a = self.capture(x)
        x_hat = self._built_decoder()(a)
        mse = F.mse_loss(x_hat.float(), x)
        if self.alpha > 0:
            logits = self._loss_model(self.capture.normalize(x_hat))
            ce = F.cross_entropy(logits.float(), batch["y"])
            total = (1 - self.alpha) * mse + self.alpha * ce
        else:
            ce = torch.zeros((), device=x.device)
            total = mse
        return total, {"mse": mse, "ce": ce}

    def config(self) -> dict[str, Any]:
        cfg = super().config()
        cfg["alpha"] = self.alpha
        return cfg


def _frozen_copy(model: nn.Module, channels_last: bool, probe: torch.Tensor | None = None) -> nn.Module:
    """A frozen, faster copy of the classifier for the classification loss (same function).

    BatchNorm layers in eval mode are folded into the preceding convolutions and linear layers (``torch.fx``
    fusion) and, on CUDA, the copy is made channels-last. The fused copy is kept only if it computes the
    classifier's function: its outputs on ``probe`` (normalised images) must match the classifier's in float32
    (TF32 off) to a tight tolerance. Fusion can change the function (a Linear followed by a BatchNorm1d that
    normalises another dimension of a 3-D input; forward hooks that tracing drops); then, and for models that
    cannot be traced, the copy stays unfused.
    """
    m = copy.deepcopy(model).eval()
    for p in m.parameters():
        p.requires_grad_(False)
    try:
        from torch.fx.experimental.optimization import fuse

        fused = fuse(m, inplace=False)  # a copy: m stays the unfused fallback
    except Exception:  # noqa: BLE001 - untraceable models simply stay unfused
        fused = None
    if fused is not None and (probe is None or _same_function(model, fused, probe)):
        m = fused
    if channels_last:
        m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs omit memory_format
    return m


def _same_function(model: nn.Module, other: nn.Module, probe: torch.Tensor) -> bool:
    """Whether ``other`` gives ``model``'s outputs on ``probe`` (float32, TF32 off; both in eval mode)."""
    import contextlib

    @contextlib.contextmanager
    def exact_float32():
        saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        try:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
            yield
        finally:
            torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved

    was = model.training
    model.eval()
    try:
        with torch.no_grad(), exact_float32():
            want, got = model(probe), other(probe)
    except Exception:  # noqa: BLE001 - a copy that fails where the classifier runs is not the same function
        return False
    finally:
        model.train(was)
    if not (isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor)) or want.shape != got.shape:
        return False
    want, got = want.float(), got.float()
    scale = float(want.abs().nan_to_num(0, 0, 0).max()) if want.numel() else 0.0
    return bool(torch.allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, scale), equal_nan=True))


def _marks(module: nn.Module, buffers: bool = False) -> tuple:
    """Identity, version and storage of every parameter (and buffer) of ``module``: an in-place change alters
    the version, a ``param.data = ...`` assignment (as ``vector_to_parameters`` makes) the storage."""
    tensors = list(module.parameters()) + (list(module.buffers()) if buffers else [])
    return tuple((id(t), t._version, t.data_ptr()) for t in tensors)


_BIAS_LIKE = ("bias", "beta", "shift", "offset")


def _reinitialise(module: nn.Module, seed: int | None = None) -> nn.Module:
    """Re-draw every parameter of ``module`` in place, as for a new, untrained module of its architecture.

    Used for RefAE's encoder, for a custom decoder :meth:`RefAE.like` copies and for evaluation
    classifiers of a user's architecture. Modules are reset children first, then their parents (the order
    in which they are constructed, so a parent's own initialisation wins, as in ``nn.MultiheadAttention``):
    ``reset_parameters()``, or ``_reset_parameters()`` where a module has only that
    (``nn.MultiheadAttention``, ``nn.Transformer``); BatchNorm running statistics are reset. A parameter
    that no method re-drew keeps its value after that pass. Such a parameter is kept as it is when it is an
    untrained constant (one value in all its elements, or a single 0 or 1: an architecture's own starting value
    that training never changed, as a ReZero gate of 0, a LayerScale of 1e-4 or BatchNorm's weight of ones).
    Otherwise it was trained and is drawn by a fixed rule: tensors of two or more dimensions (class, register
    and position tokens) from N(0, 0.02²), the usual initialisation of tokens in vision transformers; vectors and
    scalars (scales, gates, temperatures) set to ones, or to zeros when their name ends in ``bias``, ``beta``,
    ``shift`` or ``offset``. An architecture's own initialisation of such trained parameters (e.g. a LayerScale's
    1e-6) cannot be recovered from trained weights. All parameters end trainable (also those the source froze:
    RefAE's encoder is trained as a whole).

    Args:
        module: The module, changed in place (pass a copy to keep the original).
        seed: Seeds the draws (``torch.manual_seed``); None: the global random generator as it stands.

    Returns:
        ``module``.

    Examples:
        >>> from torch import nn
        >>> lin = nn.Linear(3, 2)
        >>> before = lin.weight.detach().clone()
        >>> _reinitialise(lin, seed=0) is lin and not torch.equal(lin.weight, before)
        True
    """
    if seed is not None:
        torch.manual_seed(seed)
    before = {id(p): p.detach().clone() for p in module.parameters()}
    order: list[nn.Module] = []
    seen: set[int] = set()

    def visit(m: nn.Module) -> None:  # children first (post-order), each module once
        if id(m) in seen:
            return
        seen.add(id(m))
        for c in m.children():
            visit(c)
        order.append(m)

    visit(module)
    has_reset: set[int] = set()
    for m in order:
        reset = getattr(m, "reset_parameters", None)
        if not callable(reset):
            reset = getattr(m, "_reset_parameters", None)
        if callable(reset):
            reset()
            has_reset.add(id(m))
        if isinstance(m, nn.modules.batchnorm._NormBase):
            m.reset_running_stats()
    done: set[int] = set()
    with torch.no_grad():
        for m in order:
            for name, p in m.named_parameters(recurse=False):
                if id(p) in done:
                    continue
                done.add(id(p))
                if not torch.equal(p, before[id(p)]):
                    continue  # re-drawn
                if _untrained_constant(p):
                    continue  # the architecture's own starting value (or one its module's reset set)
                if p.dim() >= 2:
                    p.normal_(0.0, 0.02)
                elif name.lower().endswith(_BIAS_LIKE):
                    p.zero_()
                else:
                    p.fill_(1.0)
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def _untrained_constant(p: torch.Tensor) -> bool:
    """Whether a parameter holds what an architecture sets and training would not leave: one value in every
    element of a tensor of several, or a single 0 or 1 (a trained scalar, as a gate at 0.37, is not)."""
    if p.numel() > 1:
        return bool((p == p.flatten()[0]).all())
    return p.numel() == 1 and float(p.detach().flatten()[0]) in (0.0, 1.0)


def _redraw(module: nn.Module, seed: int | None = None) -> nn.Module:
    """Re-draw ``module``'s parameters in place as a new model of its architecture would have them.

    A model made by :func:`cladec.models.create_model` (it carries ``arch`` and ``arch_kwargs``) gets the weights
    of a freshly created one — its architecture's own initialisation (e.g. ResNet's Kaiming fan-out) — when its
    parameters and buffers have the same names and shapes; any other module goes through :func:`_reinitialise`.

    Args:
        module: The module, changed in place (pass a copy to keep the original).
        seed: Seeds the draws; None: the global random generator as it stands.

    Returns:
        ``module``.

    Examples:
        >>> from cladec.models import create_model
        >>> net = create_model("resnet10", width=0.25)
        >>> _ = _redraw(net, seed=0)
        >>> _ = torch.manual_seed(0)
        >>> torch.equal(net.fc.weight, create_model("resnet10", width=0.25).fc.weight)
        True
    """
    arch, kwargs = getattr(module, "arch", None), getattr(module, "arch_kwargs", None)
    if isinstance(arch, str) and isinstance(kwargs, dict):
        from .models import create_model

        try:
            if seed is not None:
                torch.manual_seed(seed)
            fresh = create_model(arch, **kwargs)
        except Exception:  # noqa: BLE001 - an architecture that no longer builds: the generic way below
            fresh = None
        own = module.state_dict()
        if fresh is not None:
            new = fresh.state_dict()
            if new.keys() == own.keys() and all(new[k].shape == own[k].shape for k in own):
                with torch.no_grad():
                    module.load_state_dict(new)
                for p in module.parameters():
                    p.requires_grad_(True)
                return module
    return _reinitialise(module, seed)


class RefAE(_DecoderExplainer):
    """Reference auto-encoder: the classifier's modules up to the layer, freshly initialised and
    trainable, plus the same decoder architecture, trained on reconstruction only.

    Args:
        model: The classifier whose architecture is copied (its weights are not used or changed): every
            parameter of the copy is drawn afresh — for a model made by :func:`cladec.models.create_model` as a
            new one of its architecture (its own initialisation), else by each module's reset and, for what no
            reset covers (class and position tokens, scales), the rule of ``_reinitialise``.
        layer: Dotted module name or module of ``model``.
        init_seed: Seeds the encoder's initialisation now. None: drawn from the global random generator,
            and drawn again from ``fit``'s ``seed`` at the first fit (as ``init_seed=seed`` would).
        neurons: As for :class:`ClaDec`.
        decoder: As for :class:`ClaDec`.
        base_width: As for :class:`ClaDec`.
        decoder_norm: As for :class:`ClaDec`.
        input_norm: As for :class:`ClaDec`.
        image_shape: As for :class:`ClaDec`.
        prefix_tokens: As for :class:`ClaDec`.
        num_prefix_tokens: As for :class:`ClaDec`.
        cache_budget: As for :class:`ClaDec`.

    Examples:
        >>> ds = cladec.data.load_dataset("fashion-mnist-mini", limit=500)
        >>> exp = cladec.ClaDec(classifier, "conv2", alpha=0.001)
        >>> ref = cladec.RefAE.like(exp).fit(ds, epochs=1, lr=3e-3, batch_size=32)
        >>> ref.layer, ref.fitted, ref.reconstruct(x).shape
        ('conv2', True, torch.Size([16, 1, 28, 28]))
    """

    kind = "refae"

    def __init__(
        self,
        model: nn.Module,
        layer: str | nn.Module,
        *,
        init_seed: int | None = None,
        neurons: Sequence[int] | torch.Tensor | None = None,
        decoder: nn.Module | None = None,
        base_width: int = 64,
        decoder_norm: str | None = None,
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        cache_budget: int = DEFAULT_CACHE_BUDGET,
    ) -> None:
        if isinstance(layer, nn.Module):
            from .capture import resolve_layer

            layer = resolve_layer(model, layer)
        self.encoder = _redraw(copy.deepcopy(model), init_seed)
        super().__init__(
            model,
            layer,
            neurons=neurons,
            decoder=decoder,
            base_width=base_width,
            decoder_norm=decoder_norm,
            input_norm=input_norm,
            image_shape=image_shape,
            prefix_tokens=prefix_tokens,
            num_prefix_tokens=num_prefix_tokens,
            cache_budget=cache_budget,
        )
        self.encoder.to(self.device)
        self._encoder_params: list[nn.Parameter] | None = None
        # without init_seed the encoder was drawn from the global generator: the first fit with a seed draws it again
        self._encoder_marks: tuple | None = _marks(self.encoder) if init_seed is None else None

    def _encoder_model(self) -> nn.Module:
        return self.encoder

    def _seed_initial_weights(self, seed: int) -> None:
        # the encoder as init_seed=seed would have drawn it, then the decoder from the same seed as with init_seed
        if self._encoder_marks is not None and self._encoder_marks == _marks(self.encoder):
            _redraw(self.encoder, seed)
            torch.manual_seed(seed)
        super()._seed_initial_weights(seed)

    def _forget_initial_weights(self) -> None:
        self._encoder_marks = None
        super()._forget_initial_weights()

    @classmethod
    def like(cls, explainer: _DecoderExplainer, **overrides: Any) -> RefAE:
        """A RefAE matching ``explainer``: same model architecture, layer, neurons and decoder architecture.

        Args:
            explainer: A :class:`ClaDec` (built or not).
            **overrides: Constructor arguments to change.

        Returns:
            An untrained :class:`RefAE`.

        Examples:
            >>> ref = RefAE.like(explainer)  # explainer: a ClaDec fitted for conv4
            >>> ref.layer, ref.activation_shape, ref.fitted
            ('conv4', (128, 1, 1), False)
        """
        decoder = None
        if explainer._custom_decoder and explainer.decoder is not None:
            decoder = _reinitialise(copy.deepcopy(explainer.decoder))  # drawn again from fit's seed (unless changed)
        cap = explainer.capture
        kwargs: dict[str, Any] = dict(
            neurons=explainer.neurons if explainer.neurons is not None else cap._raw_neurons,
            decoder=decoder,
            base_width=explainer.base_width,
            decoder_norm=explainer.decoder_norm,
            input_norm=explainer.input_norm,
            image_shape=explainer.image_shape,
            prefix_tokens=cap.prefix_tokens,
            num_prefix_tokens=cap.num_prefix_tokens,
            cache_budget=explainer.cache_budget,
        )
        kwargs.update(overrides)
        if kwargs.get("decoder") is not None:  # the built decoder's settings mean nothing beside a custom one
            for k in ("base_width", "decoder_norm"):
                if k not in overrides:
                    kwargs.pop(k)
        ref = cls(explainer.model, explainer.layer, **kwargs)
        if decoder is not None and ref.decoder is decoder:  # the copy is this RefAE's own draw, not a user's decoder
            ref._decoder_marks = _marks(decoder)
        return ref

    def _reached_params(self) -> list[nn.Parameter]:
        """Encoder parameters that the forward pass up to the layer actually uses."""
        if self._encoder_params is None:
            for p in self.encoder.parameters():
                p.grad = None
            was = self.encoder.training
            self.encoder.eval()
            try:
                x = torch.rand(2, *self.image_shape, device=self.device)  # type: ignore[misc]  # probed once built
                self.capture(x).float().sum().backward()
            finally:
                self.encoder.train(was)
            self._encoder_params = [p for p in self.encoder.parameters() if p.grad is not None]
            for p in self.encoder.parameters():
                p.grad = None
        return self._encoder_params

    def _trainable_params(self) -> list[nn.Parameter]:
        return self._reached_params() + super()._trainable_params()

    def _train_modules(self) -> list[nn.Module]:
        return [self.encoder, self._built_decoder()]

    def _training_mode(self):
        # the encoder is RefAE's own and is only run through the capture: its hook stays attached for all
        # steps, so none is added or removed inside a step (torch.compile then traces the step as one graph)
        return self.capture.attached()

    def _loss(self, batch):
        x = batch["x"]
        x_hat = self._built_decoder()(self.capture.run_attached(x))  # the hook is attached by _training_mode
        mse = F.mse_loss(x_hat.float(), x)
        return mse, {"mse": mse}

    def state_tensors(self) -> dict[str, torch.Tensor]:
        t = super().state_tensors()
        t.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        return t


def _caller_level() -> int:
    """``stacklevel`` for a warning raised here that points at the first frame outside this package."""
    import os
    import sys
    import types

    pkg = os.path.dirname(os.path.abspath(__file__))
    frame: types.FrameType | None = sys._getframe(2)  # 1 is the function that warns
    level = 2
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(pkg + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _has_batchnorm(e: _DecoderExplainer) -> bool:
    """Whether an explainer trains BatchNorm layers (RefAE's encoder, a decoder with decoder_norm='batch')."""
    mods = [m for m in (e.decoder, getattr(e, "encoder", None)) if m is not None]
    if e.decoder is None and e.decoder_norm == "batch":
        return True
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for mod in mods for m in mod.modules())


def _check_fit_args(epochs, batch_size, lr, weight_decay, lr_decay, log_every, compile, fast=True, seed=None) -> None:
    from . import _checks

    _checks.seed(seed, "seed", optional=True)  # torch.manual_seed would fail with an overflow traceback
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be a positive integer, got {epochs!r}")
    for name, val in (("lr", lr), ("weight_decay", weight_decay)):
        if (
            isinstance(val, bool)
            or not isinstance(val, (int, float))
            or not math.isfinite(val)
            or val < 0
            or (name == "lr" and val == 0)
        ):
            raise ConfigError(f"{name} must be a {'positive' if name == 'lr' else 'non-negative'} number, got {val!r}")
    if isinstance(log_every, bool) or not isinstance(log_every, int) or log_every < 1:
        raise ConfigError(f"log_every must be a positive integer, got {log_every!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    if lr_decay not in (None, "step"):
        raise ConfigError(f"lr_decay must be None or 'step', got {lr_decay!r}")
    check_compile(compile, fast)  # a bad value is an error before any work


def fit_together(
    explainers: Sequence[_DecoderExplainer],
    data: Any,
    epochs: int = 5,
    *,
    batch_size: int = 128,
    lr: float = 3e-4,
    weight_decay: float = 1e-5,
    lr_decay: str | None = None,
    seed: int | None = 0,
    verbose: bool = True,
    fast: bool = True,
    log_every: int = 50,
    channels_last: bool | None = None,
    compile: bool | str = False,
    amp: bool | None = None,
) -> list[_DecoderExplainer]:
    """Fit several explainers (typically a :class:`ClaDec` and its :class:`RefAE`) on the same data at once.

    They train in lockstep over one shuffled batch order with the same settings. On CUDA each one's
    training step runs on its own stream inside one CUDA graph, so the GPU overlaps their small kernels
    and the pair finishes sooner than two fits in a row (about 1.4× on an H200); elsewhere the steps simply
    alternate. Images and labels are placed on the device once for all of them. Each explainer ends up as
    :meth:`ClaDec.fit` with the same arguments would leave it (identical weights when the trained modules
    have no random layers such as dropout; otherwise the random draws differ); the ``seconds`` in its
    ``fit_config`` and ``history`` are those of the joint fit. Data that is streamed batch by batch (a
    DataLoader, or a Dataset too large to materialise) is fitted one explainer after the other.

    Args:
        explainers: The explainers to fit (distinct objects on the same device).
        data: As for :meth:`ClaDec.fit` (labels are needed if any explainer needs them).
        epochs: As for :meth:`ClaDec.fit`, shared by all explainers.
        batch_size: As for :meth:`ClaDec.fit`, shared by all explainers.
        lr: As for :meth:`ClaDec.fit`, shared by all explainers.
        weight_decay: As for :meth:`ClaDec.fit`, shared by all explainers.
        lr_decay: As for :meth:`ClaDec.fit`, shared by all explainers.
        seed: As for :meth:`ClaDec.fit`, shared by all explainers.
        verbose: As for :meth:`ClaDec.fit`, shared by all explainers.
        fast: As for :meth:`ClaDec.fit`, shared by all explainers.
        log_every: As for :meth:`ClaDec.fit`, shared by all explainers.
        channels_last: As for :meth:`ClaDec.fit`, shared by all explainers.
        compile: As for :meth:`ClaDec.fit`, shared by all explainers.
        amp: As for :meth:`ClaDec.fit`, shared by all explainers.

    Returns:
        The list of explainers, trained.

    Raises:
        ConfigError: For an empty list, a repeated explainer, explainers on different devices or sharing
            trainable parameters, or a bad setting (also ``compile`` with ``fast=False`` and ``amp=True`` on a
            device other than CUDA or CPU, which would be ignored).
        DataError: If an explainer was built for images of another shape, or a BatchNorm layer being trained
            would see one image (a single training image, a streamed batch of one).

    Examples:
        >>> ds = cladec.data.load_dataset("fashion-mnist-mini", limit=500)
        >>> e = cladec.ClaDec(classifier, "conv2", alpha=0.001)
        >>> r = cladec.RefAE.like(e, init_seed=0)
        >>> cladec.fit_together([e, r], ds, epochs=1, lr=3e-3, batch_size=32)
        [ClaDec(layer='conv2', ..., fitted=True), RefAE(layer='conv2', ..., fitted=True)]
    """
    import contextlib

    explainers = list(explainers)
    if not explainers:
        raise ConfigError("fit_together needs at least one explainer (e.g. [ClaDec(...), RefAE.like(...)])")
    for e in explainers:
        if not isinstance(e, _DecoderExplainer):
            raise ConfigError(f"fit_together takes ClaDec and RefAE explainers, got {type(e).__name__}")
    if len({id(e) for e in explainers}) != len(explainers):
        raise ConfigError("fit_together got the same explainer twice; pass each one once")
    devices = {str(e.device) for e in explainers}
    if len(devices) > 1:
        raise ConfigError(f"explainers fitted together must share a device, got {sorted(devices)}")
    _check_fit_args(epochs, batch_size, lr, weight_decay, lr_decay, log_every, compile, fast, seed)
    check_amp(amp, explainers[0].device)
    if batch_size < 2 and any(_has_batchnorm(e) for e in explainers):
        raise ConfigError(
            "batch_size must be at least 2 here: the trained modules have BatchNorm layers, which in "
            "training mode need more than one value per channel"
        )
    kw = dict(
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        lr_decay=lr_decay,
        seed=seed,
        verbose=verbose,
        fast=fast,
        log_every=log_every,
        channels_last=channels_last,
        compile=compile,
        amp=amp,
    )
    owners: dict[int, int] = {}
    for i, e in enumerate(explainers):  # one decoder trained by two explainers would be updated by both at once
        for p in e.decoder.parameters() if e.decoder is not None else []:
            if owners.setdefault(id(p), i) != i:
                raise ConfigError(
                    f"explainers {owners[id(p)]} ({explainers[owners[id(p)]].kind}) and {i} ({e.kind}) "
                    "share trainable parameters (the same decoder module?); give each its own"
                )
    needs_labels = any(e._needs_labels() for e in explainers)
    budget = min(e.cache_budget for e in explainers)
    prepared = prepare(data, need_labels=needs_labels, max_bytes=budget * 4, batch_size=batch_size)
    for e in explainers:  # before any of them is built or trained
        e._check_image_shape(prepared.image_shape)  # type: ignore[arg-type]  # prepare() always sets image_shape
    if prepared.x is not None and prepared.x.shape[0] < 2 and any(_has_batchnorm(e) for e in explainers):
        raise DataError(
            f"training needs at least 2 images here, got {prepared.x.shape[0]}: the trained modules have "
            "BatchNorm layers, which in training mode need more than one value per channel"
        )
    if len(explainers) > 1 and not prepared.in_memory:
        for e in explainers:  # streamed batches come one at a time: fit one explainer after the other
            fit_together([e], data, epochs, **kw)  # type: ignore[arg-type]  # kw holds fit_together's own keywords
        return explainers
    tasks = [
        e._fit_begin(prepared, seed=seed, lr=lr, weight_decay=weight_decay, fast=fast, channels_last=channels_last)
        for e in explainers
    ]
    kinds = [e.kind for e in explainers]
    for i, t in enumerate(tasks):  # names shown in the progress bar and in errors: unique
        if kinds.count(t.name) > 1:
            t.name = f"{t.name}{kinds[: i + 1].count(t.name)}"
    dev = explainers[0].device
    cfg = EngineConfig(
        epochs=epochs,
        batch_size=batch_size,
        fast=fast,
        log_every=log_every,
        verbose=verbose,
        desc="+".join(e.kind for e in explainers),
        seed=seed,
        lr_decay=lr_decay,
        channels_last=channels_last,
        compile=compile,
        amp=amp,
    )
    placed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    with contextlib.ExitStack() as stack:
        for e in explainers:
            stack.enter_context(e._training_mode())
            e._placed = placed  # images and labels placed on the device (or pinned) once for all of them

        def unplace() -> None:
            for e in explainers:
                e._placed = None

        stack.callback(unplace)
        engine = Engine.joint(tasks, dev, cfg)
        try:
            if prepared.in_memory:
                results = engine.run_all(tensors=[e._train_tensors(prepared) for e in explainers])
            else:
                first = explainers[0]
                results = engine.run_all(batches=lambda: first._stream(prepared))
        except ValueError as err:  # torch's BatchNorm check, for a streamed first batch of one image
            if "Expected more than 1 value per channel" not in str(err):
                raise
            raise DataError(
                "a batch of one image reached a BatchNorm layer in training mode, which needs more than "
                "one value per channel: give batches of at least 2 images"
            ) from err
    base = dict(
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, lr_decay=lr_decay, seed=seed, fast=fast
    )
    for e, res in zip(explainers, results, strict=True):
        extra = {"fitted_with": [o.kind for o in explainers if o is not e]} if len(explainers) > 1 else {}
        e._fit_end(res, prepared, dict(base, **extra))
    return explainers
