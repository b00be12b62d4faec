"""Saliency maps of every method behind one entry point, :func:`saliency_maps` (the methods are listed in
:mod:`cladec.saliency`): captum's gradient methods, Grad-CAM (its layer chosen by :func:`gradcam_layer`), Sobel
edges, random maps, and ClaDec's relevance maps."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._errors import ConfigError
from .._tensors import image_tensor, model_device
from ..capture import list_layers, resolve_layer
from ..normalize import Normalized
from .methods import available_methods, canonical_method
from .relevance import relevance_map

__all__ = ["saliency_maps", "gradcam_layer", "sobel_map", "random_map"]


def sobel_map(x: torch.Tensor) -> torch.Tensor:
    """Sobel edge magnitude of the grey (channel-mean) image, a model-free sanity baseline.

    Args:
        x: Images ``(N, C, H, W)``.

    Returns:
        ``(N, H, W)`` non-negative edge magnitudes (replicate padding at the border).

    Examples:
        >>> x = torch.zeros(1, 1, 8, 8); x[..., 4:] = 1
        >>> m = sobel_map(x)
        >>> bool(m[0, :, 3:5].min() > 0) and float(m[0, :, 0].max()) == 0.0
        True
    """
    g = x.float().mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=x.device)
    k = torch.stack([kx, kx.t()]).unsqueeze(1)
    gp = F.pad(g, (1, 1, 1, 1), mode="replicate")
    d = F.conv2d(gp, k)
    return d.pow(2).sum(1).sqrt()


def random_map(x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A uniform random map, the sanity baseline every method must beat.

    Args:
        x: Images ``(N, C, H, W)`` (only the shape is used).
        seed: Seed of a private generator (the global RNG is untouched).

    Returns:
        ``(N, H, W)`` values in [0, 1), on the CPU.

    Examples:
        >>> random_map(torch.zeros(2, 3, 4, 5)).shape
        torch.Size([2, 4, 5])
    """
    gen = torch.Generator().manual_seed(int(seed))
    n, _, h, w = x.shape
    return torch.rand(n, h, w, generator=gen)


def gradcam_layer(model: nn.Module, x: torch.Tensor, layer: str | nn.Module | None = None) -> str:
    """The layer Grad-CAM uses: one whose output is a spatial map larger than 1×1.

    A map of 1×1 (e.g. the paper's VGG at 32×32 px after its last block) or a vector gives one value per
    image, so Grad-CAM's map would be constant and its ranking of pixels arbitrary.

    Args:
        model: The classifier.
        x: One or more valid input images (only the first is run).
        layer: A layer name or module; must have such a map. None: the model's ``default_layers["last"]`` if it
            has one, else the last layer of the forward pass that has one.

    Returns:
        The layer's dotted name.

    Raises:
        ConfigError: ``layer`` has no spatial map larger than 1×1, or no layer of the model has one.

    Examples:
        >>> from cladec.models import create_model
        >>> gradcam_layer(create_model("vgg-paper").eval(), torch.zeros(1, 1, 32, 32))
        'conv4a'
    """

    infos = list_layers(model, x[:1].to(model_device(model)))
    shapes = {i.name: tuple(i.shape) for i in infos}

    def spatial(name: str) -> bool:
        sh = shapes.get(name, ())
        return len(sh) == 3 and sh[1] * sh[2] > 1

    candidates = [i.name for i in infos if spatial(i.name)]
    if layer is not None:
        name = resolve_layer(model, layer)
        if not spatial(name):
            raise ConfigError(
                f"Grad-CAM needs a layer whose output is a spatial map larger than 1×1; {name!r} outputs "
                f"{shapes.get(name)}. Layers with one, last first: {', '.join(reversed(candidates[-6:])) or 'none'}"
            )
        return name
    default = (getattr(model, "default_layers", None) or {}).get("last")
    if default:
        name = resolve_layer(model, default)
        if spatial(name):
            return name
    if not candidates:
        raise ConfigError("Grad-CAM needs a layer whose output is a spatial map larger than 1×1; this model has none")
    name = candidates[-1]
    while "." in name and shapes.get(name.rsplit(".", 1)[0]) == shapes[name]:
        name = name.rsplit(".", 1)[0]  # the enclosing block with the same output (not e.g. its in-place ReLU)
    return name


def _layer_module(model: nn.Module, layer: str | nn.Module | None, method: str) -> nn.Module:
    if layer is None:
        layers = getattr(model, "default_layers", None)
        if isinstance(layers, dict) and layers.get("last"):
            layer = layers["last"]
        else:
            raise ConfigError(f"method {method!r} needs layer= (a dotted module name of the classifier)")
    name = resolve_layer(model, layer)
    return dict(model.named_modules())[name]


def _as_target(target, n: int, model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    if target is None:
        with torch.no_grad():
            return torch.cat([model(x[i : i + batch_size]).argmax(1) for i in range(0, n, batch_size)])
    t = torch.as_tensor(target, dtype=torch.long).to(x.device).view(-1)
    if t.numel() == 1 and n > 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ConfigError(f"target needs one class per image: got {t.numel()} targets for {n} images")
    return t


def _reduce(attr: torch.Tensor, how: str) -> torch.Tensor:
    if how == "absmax":
        return attr.abs().amax(1)
    return attr.sum(1)


def saliency_maps(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor | Sequence[int] | int | None,
    methods: Sequence[str] | str,
    *,
    layer: str | nn.Module | None = None,
    input_norm: Any = None,
    cladec: Any = None,
    refae: Any = None,
    batch_size: int = 64,
    ig_steps: int = 32,
    occlusion_window: int | None = None,
    seed: int = 0,
    reference: torch.Tensor | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-pixel relevance maps of several methods for the same images and classes.

    Args:
        model: The classifier (taking normalised images if ``input_norm`` is given).
        x: Images ``(N, C, H, W)`` in [0, 1].
        target: Class to explain per image (a tensor/list of N ints, one int for all, or None for the
            classifier's prediction on ``x``).
        methods: Method names (see the module docstring), as a list or comma-separated string.
        layer: Layer for ``gradcam`` / ``guided-gradcam``; it must output a spatial map larger than 1×1
            (default: see :func:`gradcam_layer`: the model's last default layer if it has one, else the last
            layer that has one).
            ClaDec maps use the explainers' own layer.
        input_norm: The classifier's ``(mean, std)``; applied inside the model.
        cladec: The fitted ClaDec, needed by ``cladec*`` methods.
        refae: The fitted RefAE, needed by ``cladec*`` methods that use it.
        batch_size: Images per captum call.
        ig_steps: Integration steps for integrated gradients.
        occlusion_window: Side of the occluding square (default ``max(2, H // 7)``), stride half of it.
        seed: Seed of the random map.
        reference: Optional reference image ``(C, H, W)`` or ``(C,)`` for ClaDec maps (see
            :func:`cladec.saliency.relevance_map`).
        progress: Show a tqdm bar per method.

    Returns:
        ``{canonical name: (N, H, W) float32 tensor on x's device}``, in the order asked for.

    Raises:
        ConfigError: Unknown method names (the message lists the valid ones), a ``cladec`` method
            without explainers, or bad targets.

    Examples:
        >>> maps = saliency_maps(classifier, x, None, ["saliency", "gradcam", "random"], layer="conv3")
        >>> sorted(maps), maps["gradcam"].shape == x.shape[:1] + x.shape[2:]
        (['gradcam', 'random', 'saliency'], True)
        >>> maps = saliency_maps(classifier, x, y, "cladec", cladec=explainer, refae=refae)  # ClaDec's relevance
        >>> maps["cladec"].shape
        torch.Size([16, 28, 28])
    """
    if isinstance(methods, str):
        methods = [m for m in methods.split(",") if m.strip()]
    names = [canonical_method(m) for m in methods]
    if not names:
        raise ConfigError(f"give at least one saliency method; valid methods: {', '.join(available_methods())}")
    names = list(dict.fromkeys(names))
    x = image_tensor(x)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    dev = model_device(model)
    out_dev = x.device
    xd = x.to(dev)
    was = model.training
    model.eval()
    wrapped = Normalized(model, input_norm).eval()
    n = x.shape[0]
    try:
        tgt = _as_target(target, n, wrapped, xd, batch_size)
        maps: dict[str, torch.Tensor] = {}
        gc_layer: str | None = None
        for name in names:
            if name.startswith("cladec"):
                if cladec is None or refae is None:
                    raise ConfigError(
                        f"method {name!r} needs a fitted ClaDec and RefAE "
                        "(cladec=, refae=; e.g. from cladec.runs.load_run)"
                    )
                variant = None if name == "cladec" else name[len("cladec-") :]
                m = relevance_map(
                    x,
                    cladec=cladec,
                    refae=refae,
                    variant=variant,
                    target=tgt,
                    input_norm=input_norm,
                    reference=reference,
                    batch_size=batch_size,
                )
            elif name == "random":
                m = random_map(x, seed)
            elif name == "sobel":
                m = sobel_map(xd)
            else:
                lay = layer
                if name in ("gradcam", "guided-gradcam"):
                    if gc_layer is None:
                        gc_layer = gradcam_layer(model, xd[:1], layer)
                    lay = gc_layer
                fn = _captum_fn(name, wrapped, model, lay, x.shape, ig_steps, occlusion_window)
                parts = []
                rng = range(0, n, batch_size)
                if progress:
                    from tqdm.auto import tqdm

                    rng = tqdm(rng, desc=name, leave=False)
                for i in rng:
                    xb = xd[i : i + batch_size].clone().requires_grad_(True)
                    parts.append(fn(xb, tgt[i : i + batch_size]).detach())
                m = torch.cat(parts)
            m = m.detach().float().to(out_dev)
            if m.shape != (n,) + tuple(x.shape[2:]):
                raise RuntimeError(f"internal error: map {name} has shape {tuple(m.shape)}")  # pragma: no cover
            maps[name] = torch.nan_to_num(m, nan=0.0, posinf=0.0, neginf=0.0)
        return maps
    finally:
        model.train(was)


def _captum_fn(name, wrapped, model, layer, shape, ig_steps, occlusion_window) -> Callable:
    try:
        import captum.attr as ca
    except ImportError:  # pragma: no cover - dependency
        raise ConfigError(
            "saliency baselines need captum (a dependency of cladec, missing here): pip install 'captum>=0.7'"
        ) from None
    _, c, h, w = shape
    if name == "saliency":
        s = ca.Saliency(wrapped)
        return lambda xb, t: _reduce(s.attribute(xb, target=t, abs=True), "absmax")
    if name == "input-x-gradient":
        s = ca.InputXGradient(wrapped)
        return lambda xb, t: _reduce(s.attribute(xb, target=t), "sum")
    if name == "integrated-gradients":
        s = ca.IntegratedGradients(wrapped)
        return lambda xb, t: _reduce(
            s.attribute(
                xb,
                baselines=torch.zeros_like(xb),
                target=t,
                n_steps=ig_steps,
                internal_batch_size=max(1, xb.shape[0]) * 8,
            ),
            "sum",
        )
    if name == "guided-backprop":
        s = ca.GuidedBackprop(wrapped)
        return lambda xb, t: _reduce(s.attribute(xb, target=t), "sum")
    if name == "gradcam":
        mod = _layer_module(model, layer, name)
        s = ca.LayerGradCam(wrapped, mod)

        def gc(xb, t):
            a = s.attribute(xb, target=t, relu_attributions=True)
            if a.dim() == 2:  # vector layer: one value per image
                a = a.view(-1, 1, 1, 1)
            a = ca.LayerAttribution.interpolate(a, (h, w), interpolate_mode="bilinear")
            return a.sum(1)

        return gc
    if name == "guided-gradcam":
        mod = _layer_module(model, layer, name)
        s = ca.GuidedGradCam(wrapped, mod)
        return lambda xb, t: _reduce(s.attribute(xb, target=t, interpolate_mode="bilinear"), "sum")
    if name == "occlusion":
        win = int(occlusion_window or max(2, h // 7))
        if win < 1 or win > min(h, w):
            raise ConfigError(f"occlusion_window must lie in 1..{min(h, w)}, got {win}")
        stride = max(1, win // 2)
        s = ca.Occlusion(wrapped)
        return lambda xb, t: _reduce(
            s.attribute(
                xb,
                sliding_window_shapes=(c, win, win),
                strides=(c, stride, stride),
                baselines=0.0,
                target=t,
                perturbations_per_eval=16,
            ),
            "sum",
        )
    raise ConfigError(f"unknown saliency method {name!r}")  # pragma: no cover
