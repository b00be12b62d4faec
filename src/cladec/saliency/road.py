"""ROAD (Rong et al. 2022): removal of the most relevant pixels by noisy linear imputation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ConfigError, DataError
from .._tensors import image_tensor, model_device
from .scores import check_maps, norm_model, pixel_ranks, target_classes

__all__ = ["DEFAULT_ROAD_FRACTIONS", "noisy_linear_impute", "road"]

DEFAULT_ROAD_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)

ROAD_WEIGHTS = ((1 / 12, 1 / 6, 1 / 12), (1 / 6, 0.0, 1 / 6), (1 / 12, 1 / 6, 1 / 12))


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
    maps = check_maps(x, maps)
    clf = norm_model(model, input_norm)
    dev = model_device(model)
    was = model.training
    model.eval()
    n = x.shape[0]
    hw = x.shape[-1] * x.shape[-2]
    acc = {o: torch.zeros(len(fr)) for o in orders}
    prob = {o: torch.zeros(len(fr)) for o in orders}
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    try:
        tgt = target_classes(clf, x, target, batch_size)
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
