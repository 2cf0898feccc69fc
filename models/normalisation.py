"""The input normalisations Pearl knows by name: per-channel mean and standard deviation of RGB
pixels in [0, 1], applied as ``x = (pixel / 255 - mean) / std``.

Plain constants (no torch), so `pipeline.data` (training) and `models.export` (the fallback
when a checkpoint does not say how it was normalised) share one definition.
"""

from __future__ import annotations

# Per-channel mean and (population) standard deviation of the CIFAR-10 training set.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
# torchvision's ImageNet constants (what its pretrained networks expect).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

SMALL_INPUT_MAX_PX = 64  # inputs up to this size are taken to be CIFAR-like, larger ImageNet-like


def default_normalisation(input_size_px: int) -> tuple[str, tuple[float, ...], tuple[float, ...]]:
    """``(name, mean, std)`` to assume for a network whose normalisation is unknown: CIFAR-10's
    for inputs of at most 64 px, ImageNet's above."""
    if input_size_px <= SMALL_INPUT_MAX_PX:
        return "CIFAR-10", CIFAR10_MEAN, CIFAR10_STD
    return "ImageNet", IMAGENET_MEAN, IMAGENET_STD
