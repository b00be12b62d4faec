"""How an explainer is fitted: :class:`FitMixin` (``fit`` and the steps :func:`~cladec.explainers.together.fit_together`
calls on each explainer), :class:`CollapseWarning`."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from .._errors import caller_level
from ..capture import LayerCapture
from ..data.adapt import Prepared, iterate_batches
from ..decoder import Decoder
from ..defaults import DEFAULT_RECIPE
from ..models.reinit import reinitialise, weight_marks
from ..training import distributed
from ..training.engine import LossFn, Task
from ..training.options import make_optimizer
from ..training.schedule import Recipe
from .together import fit_together

if TYPE_CHECKING:  # annotations only: base imports this module at run time
    from .base import DecoderExplainer

__all__ = ["CollapseWarning", "FitMixin"]


class CollapseWarning(UserWarning):
    """The decoder's output hardly varies across images: it has collapsed to one constant image."""


class FitMixin:
    """The fitting half of an explainer (:class:`~cladec.explainers.base.DecoderExplainer` inherits it)."""

    # set by DecoderExplainer.__init__, declared here for the type checker
    kind: str
    layer: str
    capture: LayerCapture
    decoder: nn.Module | None
    decoder_norm: str | None
    cache_budget: int
    image_shape: tuple[int, int, int] | None
    history: list[dict[str, Any]]
    fit_config: dict[str, Any]
    fitted: bool
    collapsed: bool
    _custom_decoder: bool
    _decoder_marks: tuple | None
    _bias_initialised: bool
    _placed: dict[int, tuple[torch.Tensor, torch.Tensor]] | None
    _loss: LossFn

    if TYPE_CHECKING:  # defined by DecoderExplainer

        @property
        def device(self) -> torch.device: ...

        @property
        def activation_shape(self) -> tuple[int, ...]: ...

        def _built_decoder(self) -> nn.Module: ...

        def _new_decoder(self, act_shape: tuple[int, ...], image_shape: tuple[int, int, int]) -> nn.Module: ...

        def _ensure_built(self, image_shape: tuple[int, ...]) -> None: ...

        def reconstruct(self, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor: ...

    # -- training ------------------------------------------------------------------------------
    def _parts(self) -> list[str]:
        return ["mse"]

    def fit(
        self,
        data: Any,
        epochs: int = 5,
        *,
        batch_size: int = 128,
        lr: float | None = None,
        weight_decay: float = 1e-5,
        lr_decay: str | None = None,
        seed: int | None = 0,
        verbose: bool = True,
        fast: bool = True,
        log_every: int = 50,
        channels_last: bool | None = None,
        compile: bool | str = False,
        amp: bool | None = None,
        workers: int = 0,
        recipe: str | Recipe = DEFAULT_RECIPE,
        validation: Any = None,
        until_mse: float | None = None,
        patience: int | None = None,
    ):
        """Train the decoder (and, for RefAE, the encoder).

        Args:
            data: A pair of tensors ``(images, labels)``, an image tensor (α = 0 only), a Dataset of
                ``(image, label)`` or a DataLoader. Images ``(N, C, H, W)`` in [0, 1].
            epochs: Passes over the data.
            batch_size: Minibatch size (authors: 128); under torchrun the global batch over all ranks.
            lr: Adam learning rate, the peak of a scheduled recipe (default: the recipe's; authors: 3e-4).
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
            workers: DataLoader worker processes that decode a lazily read data set
                (``load_dataset(..., lazy=True)``, always streamed); 0 decodes in this process.
            recipe: ``"paper"`` (Adam 3e-4, constant: the authors'), ``"fast"`` (3e-3 after a linear warm-up
                over 5 % of the steps), ``"fast-cosine"`` (the same, then a cosine decay to 0.05 × the peak),
                ``"warm-cosine"`` (fast-cosine with a 20 % warm-up), or a :class:`cladec.training.Recipe`
                (:mod:`cladec.training.schedule`).
            validation: Held-out images whose reconstruction MSE is recorded after every epoch (``val_mse`` in
                :attr:`history` and the progress bar): a fraction of ``data`` such as ``0.1`` (drawn by ``seed``; not
                trained on) or held-out data in any form ``data`` takes (:mod:`cladec.explainers.validation`).
            until_mse: Stop after the first epoch whose ``val_mse`` is at most this (needs ``validation``);
                ``epochs`` is then the most the fit may take. ``fit_config`` records why and when it stopped.
            patience: Stop once ``val_mse`` has not improved for this many epochs (needs ``validation``).

        Returns:
            ``self``, trained; per-epoch losses are in :attr:`history`.

        Examples:
            >>> data = cladec.data.load_dataset("fashion-mnist-mini", limit=500)
            >>> from cladec import ClaDec
            >>> exp = ClaDec(classifier, "conv2", alpha=0.001).fit(data, epochs=1, lr=3e-3, batch_size=32)
            >>> exp.fitted, sorted(exp.history[-1])
            (True, ['ce', 'epoch', 'loss', 'lr', 'mse', 'seconds'])
        """
        fit_together(
            [cast("DecoderExplainer", self)],
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
            workers=workers,
            recipe=recipe,
            validation=validation,
            until_mse=until_mse,
            patience=patience,
        )
        return self

    def _fit_begin(self, prepared: Prepared, *, seed, lr, weight_decay, fast, channels_last) -> Task:
        """Build, seed and make the optimiser for a fit; returns the engine task."""
        if seed is not None:
            torch.manual_seed(seed)
            self._seed_initial_weights(seed)
        self._ensure_built(prepared.image_shape)  # type: ignore[arg-type]  # prepare() always sets image_shape
        self._forget_initial_weights()  # trained from now on: a later fit never draws them again
        mean = prepared.x.mean(dim=(0, 2, 3)) if prepared.x is not None else prepared.mean_pixel  # lazy: a sample's
        if not self._bias_initialised and not self._custom_decoder and mean is not None:
            # start the output at the data's mean pixel (once, before the first fit)
            cast(Decoder, self.decoder).init_output_bias(mean)  # cladec's own: a Decoder
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
        if dec is None or self._decoder_marks is None or self._decoder_marks != weight_marks(dec):
            return
        if self._custom_decoder:  # a copy of a user's decoder (RefAE.like): reset as RefAE's encoder is
            reinitialise(dec)
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
            world_size=distributed.world()[1],
            **({"resumed_from_epoch": res.resumed_from} if res.resumed_from else {}),
            **({"stopped": res.stopped, "epochs_run": len(res.history)} if res.stopped else {}),
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
                stacklevel=caller_level(),
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
