"""ClaDec: a decoder trained on a frozen classifier's layer."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ConfigError, DataError
from ..data.adapt import Prepared
from ..models.reinit import weight_marks
from ..training import distributed
from .base import DEFAULT_CACHE_BUDGET, DecoderExplainer

__all__ = ["ClaDec"]


class ClaDec(DecoderExplainer):
    """Decode a frozen classifier's layer back into images (Schneider & Vlachos 2022).

    Args:
        model: The trained classifier; it is never modified (kept frozen in eval mode while fitting).
        layer: Dotted module name, the module itself (stored as the name), or a role the model names
            (``"last"``, ``"middle"``: ``model.default_layers``, set by :func:`cladec.models.load_model` and
            cladec's own architectures).
        alpha: Weight of the classification loss in ``(1 − α)·MSE + α·CE``, in [0, 1]
            (authors: 0.001; 0 = pure reconstruction).
        neurons: Optional subset of the layer's units (channel indices or a boolean mask for maps and
            token grids, feature indices for vectors); the decoder sees only those.
        decoder: Optional user-supplied decoder module mapping activations to images in [0, 1] of the data's
            shape ``(N, C, H, W)`` (checked when the explainer is built); it keeps the weights it has.
        base_width: Width of the built decoder's last hidden stage (authors: 64); not with ``decoder``.
        decoder_norm: ``None`` (authors) or ``"batch"``; not with ``decoder``.
        decoder_arch: The built decoder's architecture (:func:`cladec.decoder.build_decoder`): ``"paper"``,
            ``"scaled"`` or ``"auto"`` (default: the paper decoder for images up to 32 px from layers of up to 512
            channels, else the scaled one); not with ``decoder``.
        input_norm: ``(mean, std)`` if the classifier expects normalised inputs; images and
            reconstructions (both in [0, 1]) are normalised so before they reach the classifier. Default: the
            model's metadata for a model from :func:`cladec.models.load_model` (timm's ``pretrained_cfg``,
            torchvision's weights transforms), else none.
        image_shape: ``(C, H, W)``; builds the decoder now instead of at the first fit.
        prefix_tokens: For ``(N, T, D)`` token outputs: ``"drop"`` the class/register tokens or fold them into
            ``"channels"`` (see :mod:`cladec.capture`); a layer with another output refuses a non-default value.
        num_prefix_tokens: Number of tokens before the patch tokens, if it cannot be inferred.
        layout: The layer output's layout, ``"nchw"``, ``"nhwc"`` (channels-last), ``"tokens"`` or ``"flat"``;
            None (default) detects it when the explainer is built (:mod:`cladec.layouts`) and refuses a shape it
            cannot tell apart. The decoder always sees ``(N, C, H, W)`` maps or ``(N, D)`` vectors.
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
        decoder_arch: str = "auto",
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        layout: str | None = None,
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
            decoder_arch=decoder_arch,
            input_norm=input_norm,
            image_shape=image_shape,
            prefix_tokens=prefix_tokens,
            num_prefix_tokens=num_prefix_tokens,
            layout=layout,
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
        key = (x._version, self.layer, tuple(self.neurons or ()), weight_marks(self.model, buffers=True))
        if self._act_cache is not None and self._act_cache[0] is x and self._act_cache[1] == key:
            return self._act_cache[2]
        act = self._place(distributed.gather_rows(self.encode, x))  # data-parallel: each rank encodes its share
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
        m = m.to(memory_format=torch.channels_last)  # type: ignore[call-overload, unused-ignore]  # torch 2.13 stubs omit memory_format
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
