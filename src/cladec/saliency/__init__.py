"""Saliency baselines (via captum) and ClaDec relevance maps behind one entry point.

:func:`saliency_maps` returns one per-pixel map ``(N, H, W)`` per method, on the same pixel grid as
the input, so that every method can be scored the same way by :mod:`cladec.saliency.scores`.

Methods (canonical names; aliases in parentheses)

=====================  =====================================================================================
``saliency``           captum ``Saliency``: ``|∂ logit_t / ∂x|``, max over channels (Simonyan et al. 2014)
``input-x-gradient``   captum ``InputXGradient``, summed over channels (signed) (``ixg``, ``inputxgradient``)
``integrated-gradients`` captum ``IntegratedGradients`` from a black image, 32 steps, summed (``ig``)
``guided-backprop``    captum ``GuidedBackprop``, summed over channels (``gbp``, ``guidedbackprop``)
``gradcam``            captum ``LayerGradCam`` on ``layer`` (ReLU'd), upsampled bilinearly with
                       ``LayerAttribution.interpolate`` (``grad-cam``, ``layergradcam``)
``guided-gradcam``     captum ``GuidedGradCam`` on ``layer``, summed over channels (``guidedgradcam``)
``occlusion``          captum ``Occlusion``: a black square of side ``max(2, H // 7)``, stride half of it
``random``             uniform noise (sanity baseline; seeded)
``sobel``              Sobel edge magnitude of the grey image (sanity baseline) (``edge``)
``cladec``             the default ClaDec relevance map (see :mod:`cladec.saliency.relevance`); needs ``cladec=``
                       and ``refae=``
``cladec-<variant>``   a named ClaDec variant, e.g. ``cladec-kept``, ``cladec-evidence``
=====================  =====================================================================================

Signs: maps are oriented so that *larger = more relevant for the target class*. Signed methods
(input×gradient, IG, guided backprop, guided Grad-CAM, occlusion) keep their sign, so evidence *against*
the class ranks last, as in Petsiuk et al.'s deletion/insertion protocol.

All gradients are taken on the classifier's logits for ``target`` with inputs in ``[0, 1]``; a
classifier normalisation ``input_norm=(mean, std)`` is applied inside the differentiated function, so
attributions are with respect to the unnormalised image.
"""

from __future__ import annotations

from ..defaults import DEFAULT_METHODS
from ..normalize import Normalized
from .baselines import gradcam_layer, random_map, saliency_maps, sobel_map
from .compare import compare_saliency
from .methods import DEFAULT_VARIANT, VARIANTS, available_methods, canonical_method
from .relevance import gaussian_smooth, kept_map, reconstruct_pair, relevance_map
from .results import format_table
from .road import DEFAULT_ROAD_FRACTIONS, noisy_linear_impute, road
from .roar import DEFAULT_ROAR_K, check_roar_k, roar_accuracy, roar_images
from .scores import SCORES, check_scores, deletion, insertion, perturbation_curve, pixel_ranks
from .units import UnitStore

__all__ = [
    "saliency_maps",
    "available_methods",
    "canonical_method",
    "gradcam_layer",
    "sobel_map",
    "random_map",
    "Normalized",
    "VARIANTS",
    "DEFAULT_VARIANT",
    "relevance_map",
    "kept_map",
    "gaussian_smooth",
    "reconstruct_pair",
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
    "compare_saliency",
    "format_table",
    "DEFAULT_METHODS",
]
