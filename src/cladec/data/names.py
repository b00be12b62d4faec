"""Data set names, aliases and class names."""

from __future__ import annotations

__all__ = ["available_datasets", "MNIST_CLASSES", "FASHION_MNIST_CLASSES", "CIFAR10_CLASSES"]

MNIST_CLASSES = [str(i) for i in range(10)]

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]

SPLITS = ("train", "test")

_CANONICAL_NAMES = ("mnist", "fashion-mnist", "cifar10", "fashion-mnist-mini")

ALIASES = {
    "mnist": "mnist",
    "fashion-mnist": "fashion-mnist",
    "fashion_mnist": "fashion-mnist",
    "fashionmnist": "fashion-mnist",
    "fmnist": "fashion-mnist",
    "cifar10": "cifar10",
    "cifar-10": "cifar10",
    "cifar_10": "cifar10",
    "fashion-mnist-mini": "fashion-mnist-mini",
    "fashion_mnist_mini": "fashion-mnist-mini",
    "fashionmnist-mini": "fashion-mnist-mini",
    "fmnist-mini": "fashion-mnist-mini",
}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load_dataset`.

    Returns:
        The canonical names plus the pattern ``"imagefolder:PATH"``.

    Examples:
        >>> "mnist" in available_datasets()
        True
    """
    return list(_CANONICAL_NAMES) + ["imagefolder:PATH"]


def valid_names_text() -> str:
    return ", ".join(repr(n) for n in available_datasets()) + " (aliases: 'fashionmnist', 'fmnist', 'cifar-10')"
