"""Explanations: the triplet original | RefAE | ClaDec for a batch of images."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ._errors import ConfigError, DataError
from ._io import atomic_path
from ._tensors import image_tensor, label_tensor, model_device

__all__ = ["Explanation", "explain"]


@dataclass
class Explanation:
    """Images, reconstructions, the classifier's predictions on each and per-image errors.

    Attributes:
        x: Originals ``(N, C, H, W)`` in [0, 1].
        x_cladec: ClaDec reconstructions (X̂_E).
        x_refae: RefAE reconstructions (X̂_R) or None.
        labels: True labels or None.
        pred_x, pred_cladec, pred_refae: The classifier's predicted classes.
        mse_cladec, mse_refae: Per-image mean squared error to the original.
        classes: Class names (index → name) or None.
        layer: The explained layer's name.
    """

    x: torch.Tensor
    x_cladec: torch.Tensor
    x_refae: torch.Tensor | None
    labels: torch.Tensor | None
    pred_x: torch.Tensor
    pred_cladec: torch.Tensor
    pred_refae: torch.Tensor | None
    mse_cladec: torch.Tensor
    mse_refae: torch.Tensor | None
    classes: list[str] | None = None
    layer: str = ""
    alpha: float | None = None

    def __len__(self) -> int:
        return self.x.shape[0]

    def class_name(self, i: int) -> str:
        i = int(i)
        return self.classes[i] if self.classes and 0 <= i < len(self.classes) else str(i)

    def summary(self) -> dict:
        """Mean errors and the classifier's accuracy / agreement on each image set."""
        out: dict = {
            "n": len(self),
            "layer": self.layer,
            "alpha": self.alpha,
            "mse_cladec": float(self.mse_cladec.mean()),
        }
        if self.mse_refae is not None:
            out["mse_refae"] = float(self.mse_refae.mean())
        out["agreement_cladec"] = float((self.pred_cladec == self.pred_x).float().mean())
        if self.pred_refae is not None:
            out["agreement_refae"] = float((self.pred_refae == self.pred_x).float().mean())
        if self.labels is not None:
            out["accuracy_original"] = float((self.pred_x == self.labels).float().mean())
            out["accuracy_cladec"] = float((self.pred_cladec == self.labels).float().mean())
            if self.pred_refae is not None:
                out["accuracy_refae"] = float((self.pred_refae == self.labels).float().mean())
        return out

    def format_summary(self, images: str = "") -> str:
        """:meth:`summary` as one line of text: mean errors, and the accuracies (without true labels: how often the
        classifier's prediction on a reconstruction agrees with the one on the original).

        Args:
            images: What the images are, the line's start (default: ``"16 images"``).

        Returns:
            ``"<images>, layer conv4: MSE ClaDec 0.0451, RefAE 0.0123; classifier accuracy originals ..."``.

        Examples:
            >>> cladec.explain(x, cladec=explainer, labels=y).format_summary("16 test images")
            '16 test images, layer conv4: MSE ClaDec ...; classifier accuracy originals ..., ClaDec ...'
        """
        s = self.summary()
        line = f"{images or f'{len(self)} images'}, layer {self.layer}: MSE ClaDec {s['mse_cladec']:.4f}"
        if "mse_refae" in s:
            line += f", RefAE {s['mse_refae']:.4f}"
        if "accuracy_original" in s:
            return line + (
                f"; classifier accuracy originals {s['accuracy_original']:.3f}, ClaDec {s['accuracy_cladec']:.3f}"
                + (f", RefAE {s['accuracy_refae']:.3f}" if "accuracy_refae" in s else "")
            )
        return line + (
            f"; classifier agrees with its prediction on the original for ClaDec's reconstructions "
            f"{s['agreement_cladec']:.3f}" + (f", RefAE's {s['agreement_refae']:.3f}" if "agreement_refae" in s else "")
        )

    def save_grid(self, path: str | Path, n: int | None = None, columns: int = 4, dpi: int = 110) -> Path:
        """Save a labelled grid (PNG, or the format the suffix names): for each image, original | RefAE | ClaDec.

        Under each image: the true class (if known) and the classifier's prediction on it.

        Args:
            path: Output file, written atomically: PNG, or the format its suffix names (``.pdf``, ``.svg``,
                ``.jpg``, ...). Matplotlib's global state (backend, open figures) is left untouched.
            n: Number of images (default: all).
            columns: Triplets per row.
            dpi: Resolution.

        Returns:
            The path written.

        Examples:
            >>> e = cladec.explain(x, cladec=explainer, refae=refae, labels=y, classes=train.classes)
            >>> e.save_grid("triplets.png", n=8, columns=4)
            PosixPath('triplets.png')
        """
        from matplotlib.figure import Figure  # no pyplot: the user's backend and open figures stay as they are

        path = Path(path)
        fmt = path.suffix.lower().lstrip(".")
        if fmt not in Figure().canvas.get_supported_filetypes():
            fmt = "png"  # no suffix, or one that names no image format (e.g. a dotted layer name): PNG

        n = len(self) if n is None else max(1, min(int(n), len(self)))
        cols = max(1, min(columns, n))
        rows = (n + cols - 1) // cols
        per = 3 if self.x_refae is not None else 2
        fig = Figure(figsize=(cols * per * 1.25, rows * 1.55))
        axes = fig.subplots(rows, cols * per, squeeze=False)
        for ax in axes.flat:
            ax.axis("off")
        for i in range(n):
            r, c = divmod(i, cols)
            panels = [("original", self.x[i], self.pred_x[i])]
            if self.x_refae is not None:
                panels.append(("RefAE", self.x_refae[i], self.pred_refae[i]))  # type: ignore[index]  # set with x_refae
            panels.append(("ClaDec", self.x_cladec[i], self.pred_cladec[i]))
            for j, (name, img, pred) in enumerate(panels):
                ax = axes[r, c * per + j]
                arr = img.detach().float().clamp(0, 1).cpu()
                if arr.shape[0] == 1:
                    ax.imshow(arr[0].numpy(), cmap="gray", vmin=0, vmax=1)
                else:
                    ax.imshow(arr.permute(1, 2, 0).numpy())
                title = name if r == 0 else ""
                ok = self.labels is None or int(pred) == int(self.labels[i])
                lines = []
                if j == 0 and self.labels is not None:
                    lines.append(f"true: {self.class_name(int(self.labels[i]))}"[:18])
                lines.append(f"pred: {self.class_name(int(pred))}"[:18])
                # parse_math=False: a class name such as "$\\frac{$" is text, not matplotlib mathtext
                ax.set_title(title, fontsize=7, pad=2, parse_math=False)
                ax.text(
                    0.5,
                    -0.04,
                    "\n".join(lines),
                    transform=ax.transAxes,
                    ha="center",
                    va="top",
                    fontsize=5.5,
                    color="black" if ok else "crimson",
                    parse_math=False,
                )
        head = f"layer {self.layer}" + (f", α = {self.alpha:g}" if self.alpha is not None else "")
        fig.suptitle(
            f"original | RefAE | ClaDec  ({head})" if per == 3 else f"original | ClaDec ({head})",
            fontsize=8,
            parse_math=False,
        )
        fig.tight_layout(rect=(0, 0, 1, 0.97), h_pad=1.6)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=dpi)
        return path


def _predict(model, x: torch.Tensor, normalize, batch_size: int, with_outputs: bool = False):
    """The classifier's predicted classes for ``x``; with ``with_outputs``, also its number of outputs."""

    dev = model_device(model)
    was = model.training
    model.eval()
    out = []
    n_out = 0
    try:
        with torch.no_grad():
            for i in range(0, x.shape[0], batch_size):
                logits = model(normalize(x[i : i + batch_size].to(dev)))
                n_out = int(logits.shape[1])
                out.append(logits.argmax(1).cpu())
    finally:
        model.train(was)
    pred = torch.cat(out)
    return (pred, n_out) if with_outputs else pred


def explain(
    x: torch.Tensor,
    *,
    cladec,
    refae=None,
    labels: torch.Tensor | Sequence[int] | None = None,
    classes: Sequence[str] | None = None,
    batch_size: int = 256,
) -> Explanation:
    """Explain images: reconstruct them with ClaDec (and RefAE) and classify all of them.

    Args:
        x: Images ``(N, C, H, W)`` in [0, 1].
        cladec: A fitted :class:`~cladec.ClaDec`.
        refae: An optional fitted :class:`~cladec.RefAE` for the same layer.
        labels: Optional true labels: ``N`` integers in ``0..outputs-1`` (shaped ``(N,)`` or ``(N, 1)``).
        classes: Optional class names.
        batch_size: Images per internal batch.

    Returns:
        An :class:`Explanation`.

    Raises:
        DataError: Bad images, or labels that are not ``N`` non-negative integers below the classifier's
            number of outputs.
        ConfigError: ``refae`` explains another layer than ``cladec``.

    Examples:
        >>> e = cladec.explain(x, cladec=explainer, refae=refae, labels=y)  # x, y: 16 test images and labels
        >>> len(e), e.layer, e.x_cladec.shape, e.pred_cladec.shape
        (16, 'conv4', torch.Size([16, 1, 28, 28]), torch.Size([16]))
        >>> sorted(e.summary())  # doctest: +NORMALIZE_WHITESPACE
        ['accuracy_cladec', 'accuracy_original', 'accuracy_refae', 'agreement_cladec', 'agreement_refae', 'alpha',
         'layer', 'mse_cladec', 'mse_refae', 'n']
        >>> e.save_grid("triplets.png").is_file()
        True
    """
    x = image_tensor(x).cpu()
    if refae is not None and refae.layer != cladec.layer:
        raise ConfigError(f"the RefAE explains layer {refae.layer!r}, the ClaDec {cladec.layer!r}: use one layer")
    for e in (cladec, refae):  # images of another shape: a clear error before the classifier sees them
        if e is not None:
            e._check_image_shape(tuple(x.shape[1:]))
    y = label_tensor(labels, x.shape[0], "explain").cpu() if labels is not None else None
    model, norm = cladec.model, cladec.capture.normalize
    pred_x, n_out = _predict(model, x, norm, batch_size, with_outputs=True)
    if y is not None and len(y) and int(y.max()) >= n_out:
        raise DataError(
            f"labels must lie in 0..{n_out - 1} (the classifier has {n_out} outputs), "
            f"got {int(y.min())}..{int(y.max())}"
        )
    x_e = cladec.reconstruct(x, batch_size=batch_size).cpu()
    x_r = refae.reconstruct(x, batch_size=batch_size).cpu() if refae is not None else None
    return Explanation(
        x=x,
        x_cladec=x_e,
        x_refae=x_r,
        labels=y,
        pred_x=pred_x,
        pred_cladec=_predict(model, x_e, norm, batch_size),
        pred_refae=_predict(model, x_r, norm, batch_size) if x_r is not None else None,
        mse_cladec=(x_e - x).pow(2).flatten(1).mean(1),
        mse_refae=(x_r - x).pow(2).flatten(1).mean(1) if x_r is not None else None,
        classes=list(classes) if classes is not None else None,
        layer=cladec.layer,
        alpha=getattr(cladec, "alpha", None),
    )
