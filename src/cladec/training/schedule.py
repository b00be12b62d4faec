"""Training recipes of the explainers' fits: a peak learning rate and its per-step schedule.

A :class:`Recipe` names a peak learning rate (at batch size 128), an optional linear warm-up over a fraction of
all steps and a decay (``"constant"`` or ``"cosine"`` to ``final`` × peak at the last step), and optionally a
rule that scales the peak with the batch size. ``"paper"`` is the authors' Adam 3e-4, constant: with it the
engine sets no learning rate at all (bit for bit the fit of earlier versions). :class:`LrSchedule` sets the
learning rate of every optimiser before each step, on every engine path: as a float on the eager and fast
paths, in place in a tensor learning rate between CUDA-graph replays (the graph reads the tensor; a float would
be baked into the graph).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._errors import ConfigError

__all__ = [
    "Recipe",
    "RECIPES",
    "LrSchedule",
    "resolve_recipe",
    "recipe_lr",
    "lr_factor",
    "steps_per_epoch",
    "loader_steps",
]

_DECAYS = ("constant", "cosine")
_SCALES = ("none", "sqrt", "linear")


@dataclass(frozen=True)
class Recipe:
    """A learning-rate recipe.

    Args:
        name: Recorded in ``fit_config`` and ``run.json``.
        lr: Peak learning rate at batch size ``ref_batch`` (used when a fit gives no ``lr``).
        warmup: Fraction of all steps over which the rate ramps linearly from ``start`` × peak to the peak.
        decay: ``"constant"`` or ``"cosine"`` (after the warm-up, down to ``final`` × peak at the last step).
        start: Where the warm-up starts, as a fraction of the peak.
        final: Where the cosine decay ends, as a fraction of the peak.
        scale: ``"none"``, ``"sqrt"`` or ``"linear"``: the recipe's own ``lr`` times ``(batch_size /
            ref_batch) ** p`` (p = ½ or 1); an ``lr`` given to the fit is used as it is.
        ref_batch: The batch size ``lr`` is meant for.

    Examples:
        >>> Recipe("mine", lr=1e-3, warmup=0.05, decay="cosine").scheduled
        True
    """

    name: str
    lr: float
    warmup: float = 0.0
    decay: str = "constant"
    start: float = 0.0
    final: float = 0.0
    scale: str = "none"
    ref_batch: int = 128

    def __post_init__(self) -> None:
        if self.decay not in _DECAYS or self.scale not in _SCALES or not 0 <= self.warmup <= 1:
            raise ConfigError(
                f"recipe {self.name!r}: decay must be one of {_DECAYS}, scale one of {_SCALES} and warmup in "
                f"[0, 1], got decay={self.decay!r}, scale={self.scale!r}, warmup={self.warmup!r}"
            )

    @property
    def scheduled(self) -> bool:
        """Whether the learning rate changes during a fit (else the engine never sets it)."""
        return self.warmup > 0 or self.decay != "constant"


#: The named recipes. ``paper``: the authors' Adam 3e-4, constant. ``fast``: 3e-3 after a 5 % warm-up, constant
#: (best at 1-2 epochs on a residual block). ``fast-cosine``: the same warm-up and peak, then cosine down to
#: 0.05 × the peak (best at 2 epochs on vgg-paper ``conv4``, ClaDec and RefAE; but on fits of ~50 steps its
#: 2-step warm-up can ruin the fit: MNIST ``conv4`` ClaDec and α = 0.9 collapsed). ``warm-cosine``: the same
#: with a 20 % warm-up, which kept those fits converged (the candidate default). Chosen by measurement
#: (``benchmarks/RESULTS.md``, "Time to quality (issue 19)" and "Time to quality at 10,000 images").
RECIPES: dict[str, Recipe] = {  # the names are defaults.RECIPE_NAMES
    "paper": Recipe("paper", lr=3e-4),
    "fast": Recipe("fast", lr=3e-3, warmup=0.05),
    "fast-cosine": Recipe("fast-cosine", lr=3e-3, warmup=0.05, decay="cosine", final=0.05),
    "warm-cosine": Recipe("warm-cosine", lr=3e-3, warmup=0.2, decay="cosine", final=0.05),
}


def resolve_recipe(recipe: str | Recipe) -> Recipe:
    """A recipe by name (one of :data:`RECIPES`) or as given.

    Args:
        recipe: A name or a :class:`Recipe`.

    Returns:
        The :class:`Recipe`.

    Raises:
        ConfigError: An unknown name (the message lists the valid ones).

    Examples:
        >>> resolve_recipe("paper").lr
        0.0003
    """
    if isinstance(recipe, Recipe):
        return recipe
    if isinstance(recipe, str) and recipe in RECIPES:
        return RECIPES[recipe]
    raise ConfigError(f"unknown recipe {recipe!r}; valid: {', '.join(RECIPES)} (or a cladec.training.Recipe)")


def recipe_lr(recipe: Recipe, lr: float | None, batch_size: int) -> float:
    """The peak learning rate of a fit: ``lr`` when given, else the recipe's, scaled to ``batch_size``.

    Examples:
        >>> recipe_lr(Recipe("s", lr=1e-3, scale="sqrt"), None, 512)
        0.002
    """
    if lr is not None:
        return lr
    p = {"none": 0.0, "sqrt": 0.5, "linear": 1.0}[recipe.scale]
    return recipe.lr * (batch_size / recipe.ref_batch) ** p if p else recipe.lr


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Steps of an epoch over ``n`` in-memory examples (a last batch of one image is skipped, as the engine does).

    Examples:
        >>> steps_per_epoch(257, 128), steps_per_epoch(258, 128)
        (2, 3)
    """
    return math.ceil(n / batch_size) if n % batch_size != 1 or n == 1 else n // batch_size


def loader_steps(loader: Any) -> int | None:
    """Batches per epoch of a loader when it tells (``len``), else None.

    Examples:
        >>> loader_steps([1, 2, 3]), loader_steps(iter([1]))
        (3, None)
    """
    try:
        return len(loader) if loader is not None else None
    except TypeError:  # no length (a generator, an IterableDataset's loader)
        return None


def lr_factor(recipe: Recipe, step: int, total: int) -> float:
    """The learning rate of step ``step`` (0-based) of ``total``, as a fraction of the peak.

    Examples:
        >>> r = Recipe("r", lr=1e-3, warmup=0.2, decay="cosine")
        >>> [round(lr_factor(r, i, 10), 3) for i in (0, 1, 5, 9)]
        [0.5, 1.0, 0.611, 0.0]
    """
    warm = round(recipe.warmup * total)
    if step < warm:
        return recipe.start + (1.0 - recipe.start) * (step + 1) / warm
    if recipe.decay == "constant":
        return 1.0
    span = max(1, total - warm - 1)
    p = min(1.0, (step - warm) / span)
    return recipe.final + (1.0 - recipe.final) * 0.5 * (1.0 + math.cos(math.pi * p))


class LrSchedule:
    """Sets the learning rate of ``optimizers`` before each step, from their learning rates at the start (the peaks).

    Args:
        recipe: The recipe (a scheduled one).
        optimizers: The optimisers (each param group keeps its own peak).
        total: All steps of the fit; None while unknown (streamed batches without a length: the warm-up counts
            ``recipe.warmup`` × 100 steps until :meth:`set_total` is called after the first epoch).
        device: Make each learning rate a tensor on this device (for a CUDA graph: updated in place between
            replays, read by the captured fused optimiser), or None to keep floats.

    Examples:
        >>> p = torch.nn.Parameter(torch.zeros(1)); opt = torch.optim.SGD([p], lr=0.1)
        >>> s = LrSchedule(Recipe("r", lr=0.1, decay="cosine"), [opt], total=3)
        >>> [round(s.step(), 3) for _ in range(3)]
        [0.1, 0.05, 0.0]
    """

    def __init__(
        self,
        recipe: Recipe,
        optimizers: Sequence[torch.optim.Optimizer],
        total: int | None,
        device: torch.device | None = None,
    ) -> None:
        self.recipe = recipe
        self.groups = [g for opt in optimizers for g in opt.param_groups]
        self.peaks = [float(g["lr"]) for g in self.groups]
        if device is not None:
            for g in self.groups:
                if not isinstance(g["lr"], torch.Tensor):
                    g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=device)
        self.total = total
        self.count = 0
        #: whether a float learning rate changed at the last step (a CUDA graph that baked it must be captured again)
        self.float_changed = False

    def resume(self, optimizers: Sequence[torch.optim.Optimizer], count: int, total: int | None) -> None:
        """Go on after ``count`` steps of a resumed fit, whose optimisers' state (and param groups) was loaded.

        The peaks stay those this schedule started with (a loaded group holds the last step's rate, not its peak).
        """
        devices = [g["lr"].device for g in self.groups if isinstance(g["lr"], torch.Tensor)]
        self.groups = [g for opt in optimizers for g in opt.param_groups]
        for g in self.groups if devices else []:  # a tensor rate (CUDA graphs) is one again, on the same device
            g["lr"] = torch.tensor(float(g["lr"]), dtype=torch.float32, device=devices[0])
        self.count = count
        if total is not None:
            self.set_total(total)

    def set_total(self, total: int) -> None:
        """Set the number of all steps once known."""
        if self.total is None:
            self.total = max(total, self.count)

    def step(self) -> float:
        """Set the learning rates of the next step; returns the first group's."""
        if self.total is None:  # unknown length: warm up over a fixed number of steps, then hold the peak
            f = lr_factor(Recipe("warm", 1.0, warmup=self.recipe.warmup, start=self.recipe.start), self.count, 100)
            f = f if self.count < round(self.recipe.warmup * 100) else 1.0
        else:
            f = lr_factor(self.recipe, self.count, self.total)
        self.count += 1
        self.float_changed = False
        for g, peak in zip(self.groups, self.peaks, strict=True):
            lr = peak * f
            if isinstance(g["lr"], torch.Tensor):
                g["lr"].fill_(lr)  # in place: a CUDA graph reads this tensor at its next replay
            elif g["lr"] != lr:
                g["lr"] = lr
                self.float_changed = True
        return self.peaks[0] * f if self.peaks else 0.0
