"""Turn a trained (or freshly built) network into the module the converters see, and turn images
into the float tensors the network expects.

Conv + BatchNorm pairs are folded into one conv with bias before conversion.  The converters
fold them anyway, but handing them a graph with a third fewer nodes cuts litert-torch's
conversion time by a third or more (its decomposition passes run per node; see BENCHMARKS.md).
(`Student` itself pools with ``mean((2, 3), keepdim=True).flatten(1)``, which keeps the NHWC
graph free of TRANSPOSE ops.)

Parity is always checked against the original module, so a rewrite that changed the function
could not go unnoticed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.export.common import ExportError


class _ChannelsLastInput(nn.Module):
    """NHWC input in, NCHW to the wrapped module (for ONNX files with NHWC input)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.permute(0, 3, 1, 2))


def fold_batch_norms(model: nn.Module) -> nn.Module:
    """Fold every BatchNorm2d that directly follows a Conv2d inside an `nn.Sequential` into the
    conv (in place; the model must be in eval mode).  Returns `model`."""
    for module in model.modules():
        if not isinstance(module, nn.Sequential):
            continue
        children = list(module.named_children())
        for (conv_name, conv), (bn_name, bn) in zip(children, children[1:], strict=False):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
    return model


def export_module(model: nn.Module, *, nhwc: bool = False) -> nn.Module:
    """An eval-mode copy of `model` ready for conversion: BN folded, and with ``nhwc=True`` an
    NHWC input (NCHW otherwise).  `model` itself is not touched."""
    module = fold_batch_norms(copy.deepcopy(model).eval())
    if nhwc:
        module = _ChannelsLastInput(module)
    return module.eval()


def preprocess(
    images: np.ndarray,
    input_size: int,
    mean: Sequence[float] | None,
    std: Sequence[float] | None,
) -> np.ndarray:
    """Images -> float32 NHWC network input of `input_size` x `input_size`.

    uint8 images (N, H, W, 3) are scaled to [0, 1] and normalised ``(x - mean) / std``;
    float images are taken as already normalised (mean/std ignored).  Images of another size
    are resized (bilinear, antialiased when shrinking), so CIFAR images can check a 224 px
    network.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ExportError(
            f"images must be (N, H, W, 3) NHWC RGB, got shape {images.shape}; "
            "convert NCHW arrays with array.transpose(0, 2, 3, 1)"
        )
    if len(images) == 0:
        raise ExportError("got an empty image array; give at least one image")
    if images.dtype == np.uint8:
        if mean is None or std is None or len(mean) != 3 or len(std) != 3 or min(std) <= 0:
            raise ExportError(f"uint8 images need 3 means and 3 positive stds, got {mean}, {std}")
        x = images.astype(np.float32) / 255.0
        x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    elif np.issubdtype(images.dtype, np.floating):
        x = images.astype(np.float32)
    else:
        raise ExportError(f"images must be uint8 pixels or normalised floats, got {images.dtype}")
    if x.shape[1:3] != (input_size, input_size):
        t = torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2)
        t = nn.functional.interpolate(
            t,
            size=(input_size, input_size),
            mode="bilinear",
            align_corners=False,
            antialias=input_size < x.shape[1],
        )
        x = t.permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(x, dtype=np.float32)


def torch_logits(model: nn.Module, images_nhwc: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """The reference: `model` (NCHW, eval mode, fp32) on float NHWC images."""
    was_training = model.training
    model.eval()
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images_nhwc), batch_size):
            batch = torch.from_numpy(images_nhwc[start : start + batch_size]).permute(0, 3, 1, 2)
            outputs.append(model(batch).float().numpy())
    model.train(was_training)
    return np.concatenate(outputs)
