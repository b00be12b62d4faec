"""Classifier architectures registered by name (timm style), and training, predicting with and saving classifiers.

>>> from cladec.models import create_model, list_models
>>> list_models()
['resnet10', 'resnet18', 'vgg-paper']
>>> net = create_model("vgg-paper", in_channels=1, num_classes=10)
>>> net.default_layers
{'last': 'conv4', 'middle': 'conv2'}

Add your own with :func:`register_model`; each model module is short and readable. :func:`load_model` also builds
torchvision and timm models by name (``"torchvision:resnet50"``, ``"timm:convnext_tiny"``).
:func:`train_classifier` trains one, :func:`save_classifier` / :func:`load_classifier` keep it in a checkpoint
folder (safetensors weights and a JSON description).
"""

from __future__ import annotations

from . import resnet, vgg  # noqa: F401  (registers the models)
from ._registry import create_model, list_models, model_kwargs, register_model
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load_classifier, load_user_model, save_classifier
from .predict import accuracy, predict
from .resnet import BasicBlock, ResNet
from .roles import default_layers
from .sources import load_model
from .training import train_classifier
from .vgg import ConvBlock, VGGPaper

__all__ = [
    "create_model",
    "list_models",
    "load_model",
    "default_layers",
    "model_kwargs",
    "register_model",
    "VGGPaper",
    "ConvBlock",
    "ResNet",
    "BasicBlock",
    "train_classifier",
    "accuracy",
    "predict",
    "save_classifier",
    "load_classifier",
    "load_user_model",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
]
