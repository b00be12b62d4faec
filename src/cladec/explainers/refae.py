"""RefAE: the reference autoencoder (the classifier's architecture up to the layer, freshly initialised and trained)."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import resolve_layer
from ..models.reinit import redraw, reinitialise, weight_marks
from .base import DEFAULT_CACHE_BUDGET, DecoderExplainer

__all__ = ["RefAE"]


class RefAE(DecoderExplainer):
    """Reference auto-encoder: the classifier's modules up to the layer, freshly initialised and
    trainable, plus the same decoder architecture, trained on reconstruction only.

    Args:
        model: The classifier whose architecture is copied (its weights are not used or changed): every
            parameter of the copy is drawn afresh — for a model made by :func:`cladec.models.create_model` as a
            new one of its architecture (its own initialisation), else by each module's reset and, for what no
            reset covers (class and position tokens, scales), the rule of ``reinitialise``.
        layer: Dotted module name or module of ``model``.
        init_seed: Seeds the encoder's initialisation now. None: drawn from the global random generator,
            and drawn again from ``fit``'s ``seed`` at the first fit (as ``init_seed=seed`` would).
        neurons: As for :class:`ClaDec`.
        decoder: As for :class:`ClaDec`.
        base_width: As for :class:`ClaDec`.
        decoder_norm: As for :class:`ClaDec`.
        decoder_arch: As for :class:`ClaDec`.
        input_norm: As for :class:`ClaDec`.
        image_shape: As for :class:`ClaDec`.
        prefix_tokens: As for :class:`ClaDec`.
        num_prefix_tokens: As for :class:`ClaDec`.
        layout: As for :class:`ClaDec`.
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
        decoder_arch: str = "auto",
        input_norm: tuple[Sequence[float], Sequence[float]] | None = None,
        image_shape: tuple[int, int, int] | None = None,
        prefix_tokens: str = "drop",
        num_prefix_tokens: int | None = None,
        layout: str | None = None,
        cache_budget: int = DEFAULT_CACHE_BUDGET,
    ) -> None:
        if isinstance(layer, nn.Module):
            layer = resolve_layer(model, layer)
        self.encoder = redraw(copy.deepcopy(model), init_seed)
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
        self.encoder.to(self.device)
        self._encoder_params: list[nn.Parameter] | None = None
        # without init_seed the encoder was drawn from the global generator: the first fit with a seed draws it again
        self._encoder_marks: tuple | None = weight_marks(self.encoder) if init_seed is None else None

    def _encoder_model(self) -> nn.Module:
        return self.encoder

    def _seed_initial_weights(self, seed: int) -> None:
        # the encoder as init_seed=seed would have drawn it, then the decoder from the same seed as with init_seed
        if self._encoder_marks is not None and self._encoder_marks == weight_marks(self.encoder):
            redraw(self.encoder, seed)
            torch.manual_seed(seed)
        super()._seed_initial_weights(seed)

    def _forget_initial_weights(self) -> None:
        self._encoder_marks = None
        super()._forget_initial_weights()

    @classmethod
    def like(cls, explainer: DecoderExplainer, **overrides: Any) -> RefAE:
        """A RefAE matching ``explainer``: same model architecture, layer, layout, neurons and decoder architecture.

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
            decoder = reinitialise(copy.deepcopy(explainer.decoder))  # drawn again from fit's seed (unless changed)
        cap = explainer.capture
        kwargs: dict[str, Any] = dict(
            neurons=explainer.neurons if explainer.neurons is not None else cap._raw_neurons,
            decoder=decoder,
            base_width=explainer.base_width,
            decoder_norm=explainer.decoder_norm,
            decoder_arch=explainer.decoder_arch,  # "auto" picks as for the explainer: the layer's shape is the same
            input_norm=explainer.input_norm,
            image_shape=explainer.image_shape,
            prefix_tokens=cap.prefix_tokens,
            num_prefix_tokens=cap.num_prefix_tokens,
            layout=cap.layout or cap.given_layout,
            cache_budget=explainer.cache_budget,
        )
        kwargs.update(overrides)
        if kwargs.get("decoder") is not None:  # the built decoder's settings mean nothing beside a custom one
            for k in ("base_width", "decoder_norm", "decoder_arch"):
                if k not in overrides:
                    kwargs.pop(k)
        ref = cls(explainer.model, explainer.layer, **kwargs)
        if decoder is not None and ref.decoder is decoder:  # the copy is this RefAE's own draw, not a user's decoder
            ref._decoder_marks = weight_marks(decoder)
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
