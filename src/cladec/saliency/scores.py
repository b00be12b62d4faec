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

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ConfigError
from .._tensors import image_tensor, model_device
from ..normalize import Normalized
from .relevance import gaussian_smooth

__all__ = ["SCORES", "pixel_ranks", "perturbation_curve", "deletion", "insertion", "check_scores"]

SCORES = ("deletion", "insertion", "road", "roar")


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


def check_maps(x: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
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


def norm_model(model: nn.Module, input_norm: Any) -> nn.Module:

    return Normalized(model, input_norm).eval()


def target_classes(clf: nn.Module, x: torch.Tensor, target, batch_size: int) -> torch.Tensor:
    dev = model_device(clf)
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


def top_mask(ranks: torch.Tensor, fraction: float) -> torch.Tensor:
    hw = ranks.shape[-1] * ranks.shape[-2]
    k = int(round(fraction * hw))
    return ranks < k


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:

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
    maps = check_maps(x, maps)
    clf = norm_model(model, input_norm)
    dev = model_device(model)
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
        tgt = target_classes(clf, x, target, batch_size)
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
