"""Per-pixel relevance maps from a ClaDec / RefAE pair.

ClaDec (``x̂_E``) decodes what one layer of the frozen classifier keeps about an image; the RefAE
(``x̂_R``) decodes what an equally shaped, freshly trained encoder *can* keep. What ClaDec loses but
RefAE keeps is what the classifier discards. The paper does not give a formula for a pixel map, so
this module offers several principled variants (``VARIANTS``); all return ``(N, H, W)`` maps on the
input's pixel grid, larger = more relevant.

``kept`` — *the part of a pixel's information that the classifier keeps*
    With the per-pixel errors ``e_E = |x − x̂_E|``, ``e_R = |x − x̂_R|`` and the pixel's information
    ``|x − m|`` relative to an uninformative reference ``m`` (the data set's mean image; default the
    mean of the images given), a reconstruction explains ``|x − m| − e`` of it. Pixels the classifier
    discards have a high ClaDec error but a low RefAE error; pixels that nobody reconstructs (high
    ``e_R``) are limited by the decoder, not by the classifier. Taking the worse of the two errors,

        kept = relu(|x − m| − max(e_E, e_R)),     summed over channels, Gaussian-smoothed (σ = H/28)

    equals "information RefAE reproduces" minus "what ClaDec loses beyond RefAE" (``relu(e_E − e_R)``),
    i.e. high only where the pixel deviates from the mean *and* ClaDec reproduces it about as well as
    RefAE. Constant background (``x ≈ m``) scores 0, however well it is reconstructed.

``evidence`` — *class evidence of what ClaDec keeps over what RefAE keeps*
    Integrated gradients of the classifier's target logit along the straight path from ``x̂_R`` to
    ``x̂_E`` (captum ``IntegratedGradients`` with ``baselines=x̂_R``, 16 steps), summed over channels and
    smoothed. By completeness the map sums to ``logit_t(x̂_E) − logit_t(x̂_R)``: it places the extra
    class evidence of the classifier-shaped reconstruction on the pixels where it arises.

``swap`` — *class-evidence drop when a region of x̂_E is replaced by x̂_R's*
    captum ``Occlusion`` on ``x̂_E`` with ``x̂_R`` as the baseline (square window ``max(2, H // 7)``,
    stride half of it): the drop of the target logit when that region of the ClaDec reconstruction
    is swapped for the RefAE's. A finite-difference version of ``evidence``.

``roundtrip`` — *input × gradient through the ClaDec filter*
    ``x ⊙ ∂ logit_t(C(D(E(x)))) / ∂x`` summed over channels: the classifier sees the input only through
    the information its layer keeps (encoder ``E`` = the classifier up to the layer, ``D`` = ClaDec's
    decoder), which smooths away gradient noise from discarded detail.

Default (:data:`DEFAULT_VARIANT` = ``"roundtrip"``)
    Chosen by deletion / insertion AUC on real data: ``benchmarks/compare_saliency.py --config reduced``
    (width-0.25 classifiers on 4,000 training images, ClaDec/RefAE on the middle layer, 200 test images,
    deletion to black and insertion from black, 32 steps; run on an H200, 2026-11-26). Deletion AUC /
    insertion AUC (lower / higher is better):

    =========================  ===========  ===========  ===========  ===========
    data set / classifier      kept         evidence     swap         roundtrip
    =========================  ===========  ===========  ===========  ===========
    Fashion-MNIST / vgg-paper  0.308/0.500  0.370/0.367  0.341/0.410  0.135/0.701
    Fashion-MNIST / resnet10   0.351/0.429  0.317/0.344  0.301/0.352  0.181/0.611
    CIFAR-10 / vgg-paper       0.243/0.261  0.226/0.276  0.214/0.284  0.149/0.366
    CIFAR-10 / resnet10        0.386/0.370  0.385/0.381  0.371/0.381  0.353/0.415
    =========================  ===========  ===========  ===========  ===========

    ``roundtrip`` is best on both scores in all four cells (the 2-core CPU run of the same config gave
    0.100/0.694 against kept's 0.307/0.504 on Fashion-MNIST / vgg-paper), so it is the default. It does
    not beat the best gradient baselines (integrated gradients: 0.038–0.332 deletion, 0.458–0.839
    insertion). On ROAD, the reconstruction-based variants do better: ``kept`` and ``evidence`` have
    the largest MoRF/LeRF gaps of the ClaDec variants (up to 0.31), ``roundtrip`` a small one. See
    "Saliency comparison" in ``benchmarks/RESULTS.md`` for every method and score. With a black
    reference (``reference=[0.0]``) ``kept`` improves to 0.176/0.667 on Fashion-MNIST / vgg-paper,
    but that reference coincides with the deletion baseline, so the data set's mean image stays the
    documented choice.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .._errors import ConfigError
from .._tensors import image_tensor, model_device
from ..normalize import Normalized
from .methods import DEFAULT_VARIANT, VARIANTS

__all__ = ["relevance_map", "kept_map", "gaussian_smooth", "reconstruct_pair"]


def gaussian_smooth(maps: torch.Tensor, sigma: float) -> torch.Tensor:
    """Smooth maps ``(N, H, W)`` with a Gaussian of standard deviation ``sigma`` pixels (reflect padding).

    Args:
        maps: ``(N, H, W)`` tensor.
        sigma: Standard deviation in pixels; ``<= 0`` returns the maps unchanged.

    Returns:
        The smoothed maps, same shape, dtype float32.

    Examples:
        >>> m = torch.zeros(1, 9, 9); m[0, 4, 4] = 1
        >>> s = gaussian_smooth(m, 1.0)
        >>> round(float(s.sum()), 4), bool(s[0, 4, 4] < 1)
        (1.0, True)
    """
    maps = maps.float()
    if sigma is None or sigma <= 0:
        return maps
    r = max(1, int(math.ceil(3 * sigma)))
    r = min(r, maps.shape[-1] - 1, maps.shape[-2] - 1)
    if r < 1:
        return maps
    t = torch.arange(-r, r + 1, device=maps.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    m = maps.unsqueeze(1)
    m = F.pad(m, (r, r, r, r), mode="reflect")
    m = F.conv2d(m, k.view(1, 1, 1, -1))
    m = F.conv2d(m, k.view(1, 1, -1, 1))
    return m.squeeze(1)


def _reference(x: torch.Tensor, reference: torch.Tensor | Sequence[float] | None) -> torch.Tensor:
    if reference is None:
        ref = x.mean(0, keepdim=True) if x.shape[0] >= 16 else x.mean((0, 2, 3), keepdim=True)
        return ref
    ref = torch.as_tensor(reference, dtype=torch.float32, device=x.device)
    c = x.shape[1]
    if ref.dim() == 1 and ref.numel() in (1, c):
        return ref.view(1, -1, 1, 1)
    if ref.dim() == 3 and tuple(ref.shape) in {(c,) + tuple(x.shape[2:]), (1,) + tuple(x.shape[2:])}:
        return ref.unsqueeze(0)
    if ref.dim() == 4 and ref.shape[0] == 1 and tuple(ref.shape[1:]) == tuple(x.shape[1:]):
        return ref
    raise ConfigError(
        f"reference must be a mean image (C, H, W) = {tuple(x.shape[1:])} or per-channel values ({c},), "
        f"got shape {tuple(ref.shape)}"
    )


def kept_map(
    x: torch.Tensor,
    x_cladec: torch.Tensor,
    x_refae: torch.Tensor,
    *,
    reference: torch.Tensor | Sequence[float] | None = None,
    sigma: float | None = None,
) -> torch.Tensor:
    """The ``kept`` map: ``relu(|x − m| − max(|x − x̂_E|, |x − x̂_R|))``, summed over channels and smoothed.

    Args:
        x: Originals ``(N, C, H, W)`` in [0, 1].
        x_cladec: ClaDec reconstructions, same shape.
        x_refae: RefAE reconstructions, same shape.
        reference: Uninformative reference ``m``: a mean image ``(C, H, W)`` or per-channel values; default
            the per-pixel mean of ``x`` (per-channel mean for fewer than 16 images).
        sigma: Gaussian smoothing in pixels (default ``H / 28``; 0 = none).

    Returns:
        ``(N, H, W)`` non-negative maps.

    Examples:
        >>> x = torch.zeros(1, 1, 4, 4); x[..., 1:3, 1:3] = 1
        >>> kept_map(x, x, x, reference=[0.0], sigma=0)[0].sum().item()  # perfect reconstructions
        4.0
        >>> kept_map(x, torch.zeros_like(x), x, reference=[0.0], sigma=0)[0].sum().item()  # ClaDec lost it
        0.0
    """
    if x_cladec.shape != x.shape or x_refae.shape != x.shape:
        raise ConfigError(
            f"reconstructions must have the images' shape {tuple(x.shape)}, got {tuple(x_cladec.shape)} and "
            f"{tuple(x_refae.shape)}"
        )
    x = x.float()
    m = _reference(x, reference)
    info = (x - m).abs()
    err = torch.maximum((x - x_cladec.float().to(x.device)).abs(), (x - x_refae.float().to(x.device)).abs())
    r = F.relu(info - err).sum(1)
    return gaussian_smooth(r, x.shape[-2] / 28.0 if sigma is None else sigma)


def reconstruct_pair(
    x: torch.Tensor, cladec: Any, refae: Any, batch_size: int = 256
) -> tuple[torch.Tensor, torch.Tensor]:
    """ClaDec and RefAE reconstructions of ``x``.

    Args:
        x: Images ``(N, C, H, W)`` in [0, 1].
        cladec: A fitted :class:`~cladec.ClaDec`.
        refae: A fitted :class:`~cladec.RefAE` for the same layer.
        batch_size: Images per internal batch.

    Returns:
        ``(x̂_E, x̂_R)``, each shaped like ``x`` on ``x``'s device.

    Examples:
        >>> x_e, x_r = reconstruct_pair(x, explainer, refae)  # a fitted ClaDec and its RefAE
        >>> x_e.shape == x_r.shape == x.shape
        True
    """
    _check_pair(cladec, refae)
    return cladec.reconstruct(x, batch_size=batch_size), refae.reconstruct(x, batch_size=batch_size)


def _check_pair(cladec: Any, refae: Any) -> None:
    if cladec is None or refae is None:
        raise ConfigError("ClaDec relevance maps need both a fitted ClaDec and its RefAE")
    if getattr(refae, "layer", None) != getattr(cladec, "layer", None):
        raise ConfigError(
            f"the RefAE explains layer {getattr(refae, 'layer', None)!r} "
            f"but the ClaDec {getattr(cladec, 'layer', None)!r}; "
            "use a pair fitted for one layer"
        )


def _classifier(cladec: Any, input_norm: Any):

    norm = cladec.input_norm if cladec.input_norm is not None else input_norm
    return Normalized(cladec.model, norm).eval()


def relevance_map(
    x: torch.Tensor,
    *,
    cladec: Any,
    refae: Any,
    variant: str | None = None,
    target: torch.Tensor | Sequence[int] | int | None = None,
    input_norm: Any = None,
    reference: torch.Tensor | Sequence[float] | None = None,
    sigma: float | None = None,
    batch_size: int = 64,
    x_cladec: torch.Tensor | None = None,
    x_refae: torch.Tensor | None = None,
) -> torch.Tensor:
    """A ClaDec relevance map for each image (see the module docstring for the variants).

    Args:
        x: Images ``(N, C, H, W)`` in [0, 1].
        cladec: A fitted :class:`~cladec.ClaDec`.
        refae: A fitted :class:`~cladec.RefAE` for the same layer.
        variant: One of :data:`VARIANTS`; default :data:`DEFAULT_VARIANT`.
        target: Class per image for the class-specific variants (default: the classifier's prediction).
        input_norm: The classifier's normalisation if the explainers were made without it.
        reference: Reference image for ``kept`` (see :func:`kept_map`).
        sigma: Gaussian smoothing in pixels (default ``H / 28`` for ``kept`` and ``evidence``, none for
            the others).
        batch_size: Images per internal batch.
        x_cladec: Precomputed ClaDec reconstructions (skips recomputing them).
        x_refae: Precomputed RefAE reconstructions (skips recomputing them).

    Returns:
        ``(N, H, W)`` float32 maps on ``x``'s device, larger = more relevant.

    Raises:
        ConfigError: Unknown variant (lists the valid ones) or mismatched explainers.

    Examples:
        >>> from cladec.runs import load_run
        >>> run = load_run(run_dir)  # run_dir: a run directory (ClaDec and RefAE for conv2)
        >>> r = relevance_map(x, cladec=run.cladec, refae=run.refae, variant="kept")
        >>> r.shape == (x.shape[0],) + x.shape[2:]
        True
    """
    variant = DEFAULT_VARIANT if variant is None else str(variant).strip().lower()
    if variant not in VARIANTS:
        raise ConfigError(f"unknown ClaDec relevance variant {variant!r}; valid variants: {', '.join(VARIANTS)}")
    _check_pair(cladec, refae)
    x = image_tensor(x)
    if x_cladec is None or x_refae is None:
        x_cladec, x_refae = reconstruct_pair(x, cladec, refae, batch_size=max(batch_size, 1))
    h = x.shape[-2]
    if variant == "kept":
        return kept_map(x, x_cladec, x_refae, reference=reference, sigma=sigma).to(x.device)

    model = cladec.model
    dev = model_device(model)
    clf = _classifier(cladec, input_norm)
    was = model.training
    model.eval()
    try:
        n = x.shape[0]
        if target is None:
            with torch.no_grad():
                target = torch.cat([clf(x[i : i + batch_size].to(dev)).argmax(1) for i in range(0, n, batch_size)])
        tgt = torch.as_tensor(target, dtype=torch.long, device=dev).view(-1)
        if tgt.numel() == 1 and n > 1:
            tgt = tgt.expand(n).clone()
        if tgt.numel() != n:
            raise ConfigError(f"target needs one class per image: got {tgt.numel()} for {n} images")
        parts = []
        for i in range(0, n, batch_size):
            sl = slice(i, i + batch_size)
            xe, xr, t = x_cladec[sl].to(dev), x_refae[sl].to(dev), tgt[sl]
            parts.append(_variant_batch(variant, clf, cladec, x[sl].to(dev), xe, xr, t).detach())
        r = torch.cat(parts).float()
    finally:
        model.train(was)
    default_sigma = h / 28.0 if variant == "evidence" else 0.0
    r = gaussian_smooth(r, default_sigma if sigma is None else sigma)
    return torch.nan_to_num(r).to(x.device)


def _variant_batch(variant, clf, cladec, xb, xe, xr, t) -> torch.Tensor:
    import captum.attr as ca

    if variant == "evidence":
        ig = ca.IntegratedGradients(clf)
        a = ig.attribute(xe, baselines=xr, target=t, n_steps=16, internal_batch_size=xe.shape[0] * 4)
        return a.sum(1)
    if variant == "swap":
        c, h = xe.shape[1], xe.shape[2]
        win = max(2, h // 7)
        occ = ca.Occlusion(clf)
        a = occ.attribute(
            xe,
            sliding_window_shapes=(c, win, win),
            strides=(c, max(1, win // 2), max(1, win // 2)),
            baselines=xr,
            target=t,
            perturbations_per_eval=16,
        )
        return a.sum(1)
    if variant == "roundtrip":
        dec = cladec.decoder
        dec_was = dec.training
        dec.eval()
        try:
            with torch.enable_grad():
                xg = xb.detach().clone().requires_grad_(True)
                rec = dec(cladec.capture(xg))
                logit = clf(rec).gather(1, t.view(-1, 1)).sum()
                (g,) = torch.autograd.grad(logit, xg)
        finally:
            dec.train(dec_was)
        return (g * xb).sum(1)
    raise ConfigError(f"unknown variant {variant!r}")  # pragma: no cover
