"""Classifier architectures, registered by name (timm style).

>>> from cladec.models import create_model, list_models
>>> list_models()
['resnet10', 'resnet18', 'vgg-paper']
>>> net = create_model("vgg-paper", in_channels=1, num_classes=10)
>>> net.default_layers
{'last': 'conv4', 'middle': 'conv2'}

Add your own with :func:`register_model`; each model module is short and readable.
"""

from __future__ import annotations

from . import resnet, vgg  # noqa: F401  (registers the models)
from ._registry import create_model, list_models, model_kwargs, register_model
from .resnet import BasicBlock, ResNet
from .vgg import ConvBlock, VGGPaper

__all__ = [
    "create_model",
    "list_models",
    "model_kwargs",
    "register_model",
    "VGGPaper",
    "ConvBlock",
    "ResNet",
    "BasicBlock",
]
