"""Default settings shared by the library and the command line; importing this module needs no torch."""

from __future__ import annotations

from typing import Any

__all__ = ["DEMO_SETTINGS", "BASELINE_METHODS", "DEFAULT_METHODS", "DEFAULT_ALPHAS", "RECIPE_NAMES", "DEFAULT_RECIPE"]

#: The named training recipes of the explainers' fits (``cladec.training.schedule.RECIPES``; torch-free here
#: for the command line's choices).
RECIPE_NAMES = ("paper", "fast", "fast-cosine", "warm-cosine")

#: The recipe of a fit that names none (library, command line, sweeps).
DEFAULT_RECIPE = "paper"

#: Default settings, full and ``quick``. Sized by measurement on 2 CPU cores (see the README).
DEMO_SETTINGS: dict[str, dict[str, Any]] = {
    "full": {"limit": 6000, "test_limit": 1000, "epochs": 6, "decoder_epochs": 4, "width": 1.0, "batch_size": 64},
    "quick": {"limit": 3000, "test_limit": 500, "epochs": 3, "decoder_epochs": 3, "width": 0.25, "batch_size": 64},
}

#: The baseline saliency methods (captum's gradient methods, Grad-CAM, occlusion, and two references).
BASELINE_METHODS = (
    "saliency",
    "input-x-gradient",
    "integrated-gradients",
    "guided-backprop",
    "gradcam",
    "guided-gradcam",
    "occlusion",
    "random",
    "sobel",
)

#: What ``cladec compare-saliency`` compares by default: ClaDec's relevance map against every baseline.
DEFAULT_METHODS = ("cladec", *BASELINE_METHODS)

DEFAULT_ALPHAS = (0.0, 0.001, 0.01, 0.1, 0.5, 0.9, 0.99, 0.999, 1.0)
