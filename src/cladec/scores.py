"""Scores for relevance maps: deletion / insertion (Petsiuk et al. 2018), ROAD (Rong et al. 2022) and
ROAR (Hooker et al. 2019).

Everything is batched and runs on the classifier's device (CPU or CUDA); long loops show tqdm bars.
Maps are ``(N, H, W)``, larger = more relevant. Pixels are ranked per image; ties (e.g. the zero
attributions of input×gradient on a black background) are broken in a seeded random order, never by
position.

Deletion and insertion (:func:`deletion`, :func:`insertion`)
    The target-class softmax probability while the most relevant pixels are progressively *deleted*
    from the image (replaced by a baseline) or *inserted* into a start image, at ``steps + 1`` equally
    spaced fractions of the pixels; the score is the area under that curve (trapezoid over the
    fraction of pixels in [0, 1]). Lower deletion AUC and higher insertion AUC are better.

    Choices: deletion replaces pixels with **black** (``baseline="zero"``: 0 in [0, 1] image space, as in
    RISE; the background of MNIST / Fashion-MNIST, so deleting relevant pixels removes the object).
    Insertion also starts from **black** (``start="zero"``), *not* from RISE's blurred image: measured on
    Fashion-MNIST (vgg-paper, 128 test images) a blurred start leaves a grey halo around every inserted
    pixel that the classifier never saw in training, and under it the object's own mask (``x > 0.1``)
    scores *below* a random map (insertion AUC 0.57 vs 0.65 with σ = H/8; likewise with σ = 2, 7, 14 px,
    the per-channel mean image and the data set's mean image), i.e. that variant rewards scattered
    pixels, not relevant ones. From black, the mask beats random (0.66 vs 0.44), and insertion at
    fraction f equals keeping only the f most relevant pixels — the least-relevant-first counterpart
    of deletion (as ROAD pairs MoRF with LeRF). ``"blur"`` (Gaussian σ = H / 8), ``"mean"`` (per-channel
    mean of the images) or an explicit image tensor can be chosen for either.

ROAD (:func:`road`, :func:`noisy_linear_impute`)
    Remove a fraction of pixels, most relevant first (MoRF) or least relevant first (LeRF), fill each
    removed pixel by the ROAD paper's *noisy linear imputation* — the value that equals the weighted
    average of its 8 neighbours (weights 1/6 for the direct, 1/12 for the diagonal neighbours), solved
    jointly for all removed pixels as a sparse linear system, plus Gaussian noise (σ = 0.01) — and
    measure, without retraining, the fraction of images still classified as the target class (and
    the mean target probability). A good map makes MoRF accuracy fall fast and LeRF accuracy stay
    high; ``road_gap = mean(LeRF) − mean(MoRF)`` summarises both (higher is better).

    The system ``(D − W_UU) v = W_UK x_K`` (``U`` removed, ``K`` kept pixels; ``D`` the in-image
    neighbour weight sums) is symmetric positive definite whenever any pixel is kept, so it is solved
    with batched conjugate gradients in torch — one 3×3 convolution per iteration for all images and
    channels at once, on the GPU when there is one; no scipy needed.

ROAR (:func:`roar_images`, :func:`roar_accuracy`)
    Replace the top-k % pixels of every training and test image (by the method's map) with the
    per-channel training-set mean, retrain a fresh classifier of the same architecture from scratch
    with the same seed and settings, and report its test accuracy. With ``k = 0`` nothing changes, so
    the same seed reproduces the plain accuracy exactly. A good map makes accuracy fall fastest.

Resuming (:class:`UnitStore`)
    Long comparisons are split into units ``(method, score, k, seed)``; each finished unit is written
    atomically as one JSON file and skipped when the comparison is run again.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import device as checked_device
from ._checks import image_tensor
from ._errors import ConfigError, DataError
from .capture import _model_device

__all__ = [
    "SCORES",
    "DEFAULT_ROAR_K",
    "DEFAULT_ROAD_FRACTIONS",
    "pixel_ranks",
    "perturbation_curve",
    "deletion",
    "insertion",
    "noisy_linear_impute",
    "road",
    "roar_images",
    "roar_accuracy",
    "check_scores",
    "check_roar_k",
    "UnitStore",
]

SCORES = ("deletion", "insertion", "road", "roar")
DEFAULT_ROAR_K = (10, 30, 50, 70, 90)
DEFAULT_ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
ROAD_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


# ------------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------------


def check_scores(scores: Sequence[str] | str) -> list[str]:
    """Validate score names.

    Args:
        scores: Names from :data:`SCORES`, as a list or comma-separated string.

    Returns:
        The lower-cased names, duplicates removed, in order.

    Raises:
        ConfigError: For an unknown or empty list; the message lists the valid names.

    Examples:
        >>> check_scores("deletion, ROAD")
        ['deletion', 'road']
    """
    if isinstance(scores, str):
        scores = scores.split(",")
    out = []
    for s in scores:
        k = str(s).strip().lower()
        if not k:
            continue
        if k not in SCORES:
            raise ConfigError(f"unknown score {s!r}; valid scores: {', '.join(SCORES)}")
        if k not in out:
            out.append(k)
    if not out:
        raise ConfigError(f"give at least one score; valid scores: {', '.join(SCORES)}")
    return out


def check_roar_k(ks: Sequence[float] | str) -> list[float]:
    """Validate ROAR percentages: numbers in [0, 100).

    Args:
        ks: Percentages of pixels to remove, as a list or comma-separated string.

    Returns:
        The sorted, de-duplicated values as ints where integral (``[10, 30, 50]``).

    Raises:
        ConfigError: For a non-number or a value outside [0, 100).

    Examples:
        >>> check_roar_k("50,10,30")
        [10, 30, 50]
    """
    items: Sequence[float | str] = ks
    if isinstance(ks, str):
        items = [k for k in ks.split(",") if k.strip()]
    out = []
    for k in items:
        try:
            v = float(k)
        except (TypeError, ValueError):
            raise ConfigError(f"ROAR k must be a percentage in [0, 100), got {k!r}") from None
        if not (0 <= v < 100) or math.isnan(v):
            raise ConfigError(f"ROAR k must be a percentage in [0, 100) (k=100 would remove every pixel), got {k!r}")
        out.append(int(v) if v == int(v) else v)
    if not out:
        raise ConfigError("give at least one ROAR k (percentages in [0, 100), e.g. 10,30,50,70,90)")
    return sorted(set(out))


def _check_maps(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor):
        raise ConfigError(f"maps must be a tensor (N, H, W), got {type(maps).__name__}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3 or maps.shape[0] != x.shape[0] or tuple(maps.shape[1:]) != tuple(x.shape[2:]):
        raise ConfigError(
            f"maps must be shaped (N, H, W) = {(x.shape[0],) + tuple(x.shape[2:])} to match the images, "
            f"got {tuple(maps.shape)}"
        )
    return torch.nan_to_num(maps.float(), nan=0.0, posinf=0.0, neginf=0.0)


def _norm_model(model: nn.Module, input_norm: Any) -> nn.Module:
    from .saliency import Normalized

    return Normalized(model, input_norm).eval()


def _targets(clf: nn.Module, x: torch.Tensor, target, batch_size: int) -> torch.Tensor:
    dev = _model_device(clf)
    n = x.shape[0]
    if target is None:
        with torch.no_grad():
            return torch.cat([clf(x[i : i + batch_size].to(dev)).argmax(1) for i in range(0, n, batch_size)])
    t = torch.as_tensor(target, dtype=torch.long).view(-1).to(dev)
    if t.numel() == 1 and n > 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ConfigError(f"target needs one class per image: got {t.numel()} for {n} images")
    return t


# ------------------------------------------------------------------------------------------------
# ranking
# ------------------------------------------------------------------------------------------------


def pixel_ranks(maps: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Rank of every pixel within its image: 0 = most relevant; ties broken in a seeded random order.

    Args:
        maps: ``(N, H, W)`` relevance maps.
        seed: Seed for the tie-breaking order.

    Returns:
        ``(N, H, W)`` long tensor with a permutation of ``0 .. H·W − 1`` per image.

    Examples:
        >>> pixel_ranks(torch.tensor([[[0.1, 0.9], [0.5, 0.0]]])).tolist()
        [[[2, 0], [1, 3]]]
    """
    n, h, w = maps.shape
    flat = maps.reshape(n, -1).float()
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.stack([torch.randperm(h * w, generator=gen) for _ in range(n)]).to(maps.device)
    shuffled = flat.gather(1, perm)
    order_in_perm = torch.sort(shuffled, dim=1, descending=True, stable=True).indices
    order = perm.gather(1, order_in_perm)  # pixel indices, most relevant first
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(h * w, device=maps.device).expand(n, -1).contiguous())
    return ranks.view(n, h, w)


def _top_mask(ranks: torch.Tensor, fraction: float) -> torch.Tensor:
    hw = ranks.shape[-1] * ranks.shape[-2]
    k = int(round(fraction * hw))
    return ranks < k


# ------------------------------------------------------------------------------------------------
# deletion / insertion
# ------------------------------------------------------------------------------------------------


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    from .relevance import gaussian_smooth

    n, c, h, w = x.shape
    return gaussian_smooth(x.reshape(n * c, h, w), sigma).view(n, c, h, w)


def _substrate(x: torch.Tensor, kind: Any) -> torch.Tensor:
    if isinstance(kind, torch.Tensor):
        s = kind.to(x.device, torch.float32)
        if s.dim() == 1:
            s = s.view(1, -1, 1, 1)
        elif s.dim() == 3:
            s = s.unsqueeze(0)
        try:
            return torch.broadcast_to(s, x.shape)
        except RuntimeError:
            raise ConfigError(
                f"a baseline tensor must broadcast to the images' shape {tuple(x.shape)}, got {tuple(kind.shape)}"
            ) from None
    if kind == "zero":
        return torch.zeros_like(x)
    if kind == "mean":
        return x.mean((0, 2, 3), keepdim=True).expand_as(x)
    if kind == "blur":
        return _blur(x, x.shape[-2] / 8.0)
    raise ConfigError(f"baseline/start must be 'zero', 'mean', 'blur' or an image tensor, got {kind!r}")


def perturbation_curve(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    *,
    mode: str,
    target: torch.Tensor | Sequence[int] | int | None = None,
    steps: int = 32,
    substrate: Any = None,
    input_norm: Any = None,
    batch_size: int = 64,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Deletion or insertion curve of the target-class probability.

    Args:
        model: The classifier.
        x: Images ``(N, C, H, W)`` in [0, 1].
        maps: Relevance maps ``(N, H, W)``.
        mode: ``"deletion"`` or ``"insertion"``.
        target: Class per image (default: the prediction on ``x``).
        steps: Number of steps; the curve has ``steps + 1`` points from 0 to all pixels.
        substrate: What deleted pixels become / what insertion starts from: ``"zero"``, ``"mean"``,
            ``"blur"`` or a tensor (per-image ``(N, C, H, W)`` or broadcastable). Default ``"zero"`` (black)
            for both (see the module docstring).
        input_norm: The classifier's ``(mean, std)``.
        batch_size: Images per batch (each expands to ``steps + 1`` perturbed images).
        seed: Tie-breaking seed.
        progress: Show a tqdm bar.

    Returns:
        ``{"fractions": (steps+1,), "curves": (N, steps+1) probabilities, "auc": (N,)}`` (CPU tensors).

    Examples:
        >>> from cladec.saliency import sobel_map
        >>> r = perturbation_curve(classifier, x, sobel_map(x), mode="deletion", target=y, steps=8)
        >>> r["fractions"].shape, r["curves"].shape, r["auc"].shape
        (torch.Size([9]), torch.Size([16, 9]), torch.Size([16]))
        >>> bool(((r["auc"] >= 0) & (r["auc"] <= 1)).all())
        True
    """
    if mode not in ("deletion", "insertion"):
        raise ConfigError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps must be a positive integer, got {steps!r}")
    x = image_tensor(x)
    maps = _check_maps(x, maps)
    clf = _norm_model(model, input_norm)
    dev = _model_device(model)
    was = model.training
    model.eval()
    substrate = "zero" if substrate is None else substrate
    if isinstance(substrate, str) and substrate == "mean":
        substrate = x.float().mean((0, 2, 3))
    fr = torch.linspace(0, 1, steps + 1)
    hw = x.shape[-1] * x.shape[-2]
    ks = torch.round(fr * hw).long().to(dev)
    curves = []
    try:
        tgt = _targets(clf, x, target, batch_size)
        ranks_all = pixel_ranks(maps, seed)
        rng = range(0, x.shape[0], batch_size)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc=mode, leave=False)
        chunk = max(1, batch_size)
        with torch.no_grad():
            for i in rng:
                xb = x[i : i + batch_size].to(dev).float()
                rb = ranks_all[i : i + batch_size].to(dev)
                per_image = (
                    isinstance(substrate, torch.Tensor) and substrate.dim() == 4 and substrate.shape[0] == x.shape[0]
                )
                sb = _substrate(xb, substrate[i : i + batch_size] if per_image else substrate)
                tb = tgt[i : i + batch_size]
                b = xb.shape[0]
                # mask[s, n, 1, H, W]: pixel among the first k_s
                mask = (rb.unsqueeze(0) < ks.view(-1, 1, 1, 1)).unsqueeze(2)
                if mode == "deletion":
                    imgs = torch.where(mask, sb.unsqueeze(0), xb.unsqueeze(0))
                else:
                    imgs = torch.where(mask, xb.unsqueeze(0), sb.unsqueeze(0))
                imgs = imgs.reshape(-1, *xb.shape[1:])  # (S*b, C, H, W), step-major
                probs = []
                for j in range(0, imgs.shape[0], chunk * 4):
                    probs.append(F.softmax(clf(imgs[j : j + chunk * 4]).float(), 1))
                p = torch.cat(probs).view(steps + 1, b, -1)
                curves.append(p.gather(2, tb.view(1, b, 1).expand(steps + 1, b, 1))[..., 0].t().cpu())
    finally:
        model.train(was)
    c = torch.cat(curves)
    auc = torch.trapezoid(c, fr.view(1, -1), dim=1)
    return {"fractions": fr, "curves": c, "auc": auc}


def deletion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
    """Deletion curve and AUC (lower is better): most relevant pixels first, replaced by black.

    Args:
        model: The classifier.
        x: Images ``(N, C, H, W)`` in [0, 1].
        maps: ``(N, H, W)`` relevance maps.
        **kwargs: As for :func:`perturbation_curve` (``target``, ``steps``, ``substrate``, ``input_norm``, ...).

    Returns:
        ``{"fractions", "curves", "auc"}`` (see :func:`perturbation_curve`).

    Examples:
        >>> from cladec.saliency import sobel_map
        >>> auc = deletion(classifier, x, sobel_map(x), target=y)["auc"]  # x, y: 16 test images, labels
        >>> auc.shape, 0 <= float(auc.mean()) <= 1
        (torch.Size([16]), True)
    """
    return perturbation_curve(model, x, maps, mode="deletion", **kwargs)


def insertion(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, **kwargs: Any) -> dict[str, Any]:
    """Insertion curve and AUC (higher is better): most relevant pixels first, into a black image.

    Args:
        model: The classifier.
        x: Images ``(N, C, H, W)`` in [0, 1].
        maps: ``(N, H, W)`` relevance maps.
        **kwargs: As for :func:`perturbation_curve`.

    Returns:
        ``{"fractions", "curves", "auc"}`` (see :func:`perturbation_curve`).

    Examples:
        >>> from cladec.saliency import sobel_map
        >>> auc = insertion(classifier, x, sobel_map(x), target=y)["auc"]  # x, y: 16 test images, labels
        >>> auc.shape, 0 <= float(auc.mean()) <= 1
        (torch.Size([16]), True)
    """
    return perturbation_curve(model, x, maps, mode="insertion", **kwargs)


# ------------------------------------------------------------------------------------------------
# ROAD
# ------------------------------------------------------------------------------------------------


def noisy_linear_impute(
    x: torch.Tensor,
    remove: torch.Tensor,
    *,
    noise: float = 0.01,
    generator: torch.Generator | None = None,
    tol: float = 1e-5,
    max_iter: int = 1000,
) -> torch.Tensor:
    """ROAD's noisy linear imputation: each removed pixel = weighted mean of its neighbours, + noise.

    Solves ``(D − W_UU) v = W_UK x_K`` per image and channel (see the module docstring) with batched
    conjugate gradients, then adds ``N(0, noise²)`` to the imputed pixels.

    Args:
        x: Images ``(N, C, H, W)``.
        remove: Boolean ``(N, H, W)`` (or ``(N, 1, H, W)``) mask of pixels to impute (True = remove).
        noise: Standard deviation of the Gaussian noise added to imputed pixels (ROAD: 0.01).
        generator: Optional generator for the noise (on ``x``'s device).
        tol: Relative residual at which conjugate gradients stops.
        max_iter: Iteration cap.

    Returns:
        Images like ``x`` with the removed pixels imputed (kept pixels unchanged).

    Raises:
        DataError: If an image has every pixel removed (nothing to impute from).

    Examples:
        >>> x = torch.zeros(1, 1, 5, 5); x[..., :, 3:] = 1.0
        >>> m = torch.zeros(1, 5, 5, dtype=torch.bool); m[0, 2, 2] = True
        >>> round(float(noisy_linear_impute(x, m, noise=0)[0, 0, 2, 2]), 3)  # 2 of 6 weight-units are bright
        0.333
    """
    if remove.dim() == 4:
        remove = remove[:, 0]
    if remove.shape != (x.shape[0],) + tuple(x.shape[2:]):
        raise ConfigError(
            f"remove mask must be (N, H, W) = {(x.shape[0],) + tuple(x.shape[2:])}, got {tuple(remove.shape)}"
        )
    n, c, h, w = x.shape
    remove = remove.to(x.device).bool()
    if bool(remove.flatten(1).all(1).any()):
        raise DataError("noisy linear imputation needs at least one kept pixel per image; every pixel was removed")
    xf = x.float().reshape(n * c, 1, h, w)
    u = remove.unsqueeze(1).expand(n, c, h, w).reshape(n * c, 1, h, w).float()
    k = torch.tensor(ROAD_WEIGHTS, device=x.device, dtype=torch.float32).view(1, 1, 3, 3)
    deg = F.conv2d(F.pad(torch.ones(1, 1, h, w, device=x.device), (1, 1, 1, 1)), k)  # in-image weight sums

    def nb(v: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(v, (1, 1, 1, 1)), k)

    def A(v: torch.Tensor) -> torch.Tensor:
        return u * (deg * v - nb(u * v))

    b = u * nb((1 - u) * xf)
    # start from the mean of the kept pixels (a good guess inside large holes)
    kept_mean = ((1 - u) * xf).sum((2, 3), keepdim=True) / (1 - u).sum((2, 3), keepdim=True).clamp_min(1)
    v = u * kept_mean
    r = b - A(v)
    p = r.clone()
    rs = (r * r).sum((1, 2, 3), keepdim=True)
    bnorm = (b * b).sum((1, 2, 3), keepdim=True).clamp_min(1e-20)
    for _ in range(max_iter):
        if bool((rs <= (tol * tol) * bnorm).all()):
            break
        ap = A(p)
        denom = (p * ap).sum((1, 2, 3), keepdim=True)
        alpha = torch.where(denom > 0, rs / denom.clamp_min(1e-30), torch.zeros_like(rs))
        v = v + alpha * p
        r = r - alpha * ap
        rs_new = (r * r).sum((1, 2, 3), keepdim=True)
        beta = torch.where(rs > 0, rs_new / rs.clamp_min(1e-30), torch.zeros_like(rs))
        p = r + beta * p
        rs = rs_new
    out = torch.where(u.bool(), v, xf)
    if noise > 0:
        eps = (
            torch.randn(out.shape, generator=generator, device=x.device, dtype=out.dtype)
            if generator is not None
            else torch.randn_like(out)
        )
        out = out + u * noise * eps
    return out.view(n, c, h, w).to(x.dtype)


def road(
    model: nn.Module,
    x: torch.Tensor,
    maps: torch.Tensor,
    *,
    target: torch.Tensor | Sequence[int] | int | None = None,
    fractions: Sequence[float] = DEFAULT_ROAD_FRACTIONS,
    orders: Sequence[str] = ("morf", "lerf"),
    noise: float = 0.01,
    input_norm: Any = None,
    batch_size: int = 128,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """ROAD: accuracy after removing a fraction of pixels (MoRF / LeRF) and imputing them, no retraining.

    Args:
        model: The classifier.
        x: Images ``(N, C, H, W)`` in [0, 1].
        maps: ``(N, H, W)`` relevance maps.
        target: Class per image (default: the prediction on ``x``); accuracy = prediction equals it.
        fractions: Fractions of pixels to remove, each in (0, 1).
        orders: ``"morf"`` (most relevant first) and/or ``"lerf"`` (least relevant first).
        noise: Imputation noise (ROAD: 0.01).
        input_norm: The classifier's ``(mean, std)``.
        batch_size: Images per batch.
        seed: Seed for tie-breaking and the imputation noise.
        progress: Show a tqdm bar.

    Returns:
        ``{"fractions": [...], "morf": {"accuracy": [...], "probability": [...]}, "lerf": {...},
        "road_gap": mean LeRF accuracy − mean MoRF accuracy}`` (for the orders asked for).

    Examples:
        >>> from cladec.saliency import sobel_map
        >>> r = road(classifier, x, sobel_map(x), target=y, fractions=(0.1, 0.5, 0.9))
        >>> sorted(r), r["fractions"], len(r["morf"]["accuracy"])
        (['fractions', 'lerf', 'morf', 'road_gap'], [0.1, 0.5, 0.9], 3)
    """
    fr = [float(f) for f in fractions]
    if not fr or any(not (0 < f < 1) for f in fr):
        raise ConfigError(f"ROAD fractions must lie in (0, 1), got {list(fractions)}")
    orders = [str(o).lower() for o in orders]
    for o in orders:
        if o not in ("morf", "lerf"):
            raise ConfigError(f"ROAD order must be 'morf' or 'lerf', got {o!r}")
    x = image_tensor(x)
    maps = _check_maps(x, maps)
    clf = _norm_model(model, input_norm)
    dev = _model_device(model)
    was = model.training
    model.eval()
    n = x.shape[0]
    hw = x.shape[-1] * x.shape[-2]
    acc = {o: torch.zeros(len(fr)) for o in orders}
    prob = {o: torch.zeros(len(fr)) for o in orders}
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    try:
        tgt = _targets(clf, x, target, batch_size)
        ranks_all = pixel_ranks(maps, seed)
        units = [(o, j) for o in orders for j in range(len(fr))]
        it = units
        if progress:
            from tqdm.auto import tqdm

            it = tqdm(units, desc="road", leave=False)
        with torch.no_grad():
            for o, j in it:
                kpix = int(round(fr[j] * hw))
                for i in range(0, n, batch_size):
                    xb = x[i : i + batch_size].to(dev).float()
                    rb = ranks_all[i : i + batch_size].to(dev)
                    rm = rb < kpix if o == "morf" else rb >= hw - kpix
                    xi = noisy_linear_impute(xb, rm, noise=noise, generator=gen)
                    p = F.softmax(clf(xi).float(), 1)
                    tb = tgt[i : i + batch_size]
                    acc[o][j] += float((p.argmax(1) == tb).sum())
                    prob[o][j] += float(p.gather(1, tb.view(-1, 1)).sum())
    finally:
        model.train(was)
    out: dict[str, Any] = {"fractions": fr}
    for o in orders:
        out[o] = {"accuracy": (acc[o] / n).tolist(), "probability": (prob[o] / n).tolist()}
    if "morf" in orders and "lerf" in orders:
        out["road_gap"] = float((acc["lerf"] / n).mean() - (acc["morf"] / n).mean())
    return out


# ------------------------------------------------------------------------------------------------
# ROAR
# ------------------------------------------------------------------------------------------------


def roar_images(
    x: torch.Tensor, maps: torch.Tensor, k: float, fill: torch.Tensor | Sequence[float], seed: int = 0
) -> torch.Tensor:
    """Replace the top-``k`` % pixels of each image (by its map) with a per-channel fill value.

    Args:
        x: Images ``(N, C, H, W)``.
        maps: ``(N, H, W)`` relevance maps.
        k: Percentage in [0, 100).
        fill: Per-channel values ``(C,)`` (ROAR: the training set's per-channel mean).
        seed: Tie-breaking seed.

    Returns:
        A new tensor like ``x``; ``k = 0`` returns an unchanged copy.

    Examples:
        >>> x = torch.ones(1, 1, 2, 2); m = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
        >>> roar_images(x, m, 50, [0.0]).tolist()
        [[[[0.0, 0.0], [1.0, 1.0]]]]
    """
    (k,) = check_roar_k([k])
    maps = _check_maps(x, maps)
    if k == 0:
        return x.clone()
    f = torch.as_tensor(fill, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    if f.shape[1] not in (1, x.shape[1]):
        raise ConfigError(f"fill needs one value per channel ({x.shape[1]}), got {f.shape[1]}")
    out = []
    for i in range(0, x.shape[0], 4096):
        xb = x[i : i + 4096]
        m = _top_mask(pixel_ranks(maps[i : i + 4096], seed + i).to(x.device), k / 100.0).unsqueeze(1)
        out.append(torch.where(m, f.expand_as(xb), xb))
    return torch.cat(out)


def roar_accuracy(
    build_model: Callable[[], nn.Module],
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    *,
    k: float,
    train_maps: torch.Tensor | None = None,
    test_maps: torch.Tensor | None = None,
    epochs: int = 2,
    seed: int = 0,
    input_norm: Any = None,
    fill: torch.Tensor | Sequence[float] | None = None,
    device: str | torch.device | None = None,
    train_kwargs: dict[str, Any] | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """ROAR for one (method, k, seed): degrade train and test images, retrain from scratch, test.

    Args:
        build_model: Returns a freshly initialised classifier (e.g.
            ``lambda: create_model("vgg-paper", 1, 10, width=0.25)``); it is called after seeding, so
            the initialisation is reproducible.
        train: ``(images, labels)`` for retraining.
        test: ``(images, labels)`` for the accuracy.
        k: Percentage of pixels removed per image, in [0, 100); with 0 the maps are not needed.
        train_maps: ``(N, H, W)`` maps for the train images.
        test_maps: ``(N, H, W)`` maps for the test images.
        epochs: Training epochs.
        seed: Seed for initialisation, shuffling and tie-breaking.
        input_norm: The classifier's ``(mean, std)``.
        fill: Per-channel fill value (default: the training images' per-channel mean).
        device: Training device (default CUDA if available).
        train_kwargs: Extra arguments for :func:`cladec.classifier.train_classifier` (``lr``, ``batch_size``...).
        verbose: Show the training progress bar.

    Returns:
        ``{"k": k, "seed": seed, "accuracy": test accuracy, "train_acc": last-epoch training accuracy}``.

    Examples:
        >>> from cladec.models import create_model
        >>> new_model = lambda: create_model("vgg-paper", 1, 10, width=0.25)
        >>> r = roar_accuracy(new_model, train.subset(range(500)).tensors(), test.tensors(), k=0, epochs=1)
        >>> sorted(r), r["k"], 0 <= r["accuracy"] <= 1
        (['accuracy', 'k', 'seed', 'train_acc'], 0, True)
    """
    from .classifier import accuracy, train_classifier

    (k,) = check_roar_k([k])
    xtr, ytr = train
    xte, yte = test
    if fill is None:
        fill = xtr.float().mean((0, 2, 3))
    if k > 0:
        if train_maps is None or test_maps is None:
            raise ConfigError("ROAR with k > 0 needs train_maps and test_maps")
        xtr = roar_images(xtr, train_maps, k, fill, seed)
        xte = roar_images(xte, test_maps, k, fill, seed + 1)
    dev = checked_device(device, "device")
    torch.manual_seed(seed)
    model = build_model().to(dev)
    hist = train_classifier(
        model, (xtr, ytr), epochs, input_norm=input_norm, seed=seed, device=dev, verbose=verbose, **(train_kwargs or {})
    )
    acc = accuracy(model, (xte, yte), input_norm=input_norm)
    return {"k": k, "seed": seed, "accuracy": float(acc), "train_acc": float(hist["train_acc"][-1])}


# ------------------------------------------------------------------------------------------------
# resumable units
# ------------------------------------------------------------------------------------------------


class UnitStore:
    """Finished units of a comparison, one atomic JSON file each under ``<dir>/units/``.

    Args:
        directory: The comparison's output directory.

    Examples:
        >>> import tempfile
        >>> s = UnitStore(tempfile.mkdtemp())
        >>> s.put(("gradcam", "roar", 50, 0), {"accuracy": 0.6})
        >>> s.get(("gradcam", "roar", 50, 0))
        {'accuracy': 0.6}
        >>> s.get(("gradcam", "roar", 70, 0)) is None
        True
    """

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory) / "units"

    @staticmethod
    def key_name(key: Sequence[Any]) -> str:
        """File name of a unit key.

        Args:
            key: ``(method, score, k, seed)`` or any sequence of simple values.

        Returns:
            The parts joined by ``__`` with unsafe characters replaced, plus ``.json``.

        Examples:
            >>> UnitStore.key_name(("gradcam", "roar", 50, 0))
            'gradcam__roar__50__0.json'
        """
        parts = [re.sub(r"[^A-Za-z0-9.+-]", "_", str(p)) for p in key]
        return "__".join(parts) + ".json"

    def path(self, key: Sequence[Any]) -> Path:
        """Where a unit is stored.

        Args:
            key: The unit key.

        Returns:
            ``<directory>/units/<key_name(key)>``.

        Examples:
            >>> UnitStore("cmp").path(("random", "deletion", 0, 0)).name
            'random__deletion__0__0.json'
        """
        return self.dir / self.key_name(key)

    def get(self, key: Sequence[Any]) -> Any | None:
        """The stored result of a finished unit.

        Args:
            key: The unit key.

        Returns:
            The result, or None if the unit is not finished (or its file is unreadable).

        Examples:
            >>> UnitStore("cmp").get(("never", "run", 0, 0)) is None
            True
        """
        p = self.path(key)
        if not p.is_file():
            return None
        try:
            return json.loads(p.read_text())["result"]
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def put(self, key: Sequence[Any], result: Any) -> None:
        """Store a unit's result atomically (written to a temporary file, then renamed).

        Args:
            key: The unit key.
            result: A JSON-serialisable result.

        Returns:
            None.

        Examples:
            >>> store = UnitStore("cmp")
            >>> store.put(("a", "deletion", 0, 0), {"auc": 0.2})
            >>> store.get(("a", "deletion", 0, 0)), store.path(("a", "deletion", 0, 0)).is_file()
            ({'auc': 0.2}, True)
        """
        from ._io import write_json

        write_json(self.path(key), {"key": list(key), "result": result})

    def run(self, key: Sequence[Any], fn: Callable[[], Any]) -> Any:
        """Return the stored result for ``key``, or compute it with ``fn()`` and store it.

        Args:
            key: The unit key.
            fn: Computes the result when the unit is not finished.

        Returns:
            The (stored or new) result.

        Examples:
            >>> store = UnitStore("cmp")
            >>> store.run(("gradcam", "roar", 50, 0), lambda: {"accuracy": 0.6})  # computed and stored
            {'accuracy': 0.6}
            >>> store.run(("gradcam", "roar", 50, 0), lambda: {"accuracy": 0.0})  # the stored result
            {'accuracy': 0.6}
        """
        got = self.get(key)
        if got is not None:
            return got
        res = fn()
        self.put(key, res)
        return res
