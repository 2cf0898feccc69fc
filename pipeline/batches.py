"""Batches of an in-memory dataset (`pipeline.data.ImageArrays`): augmentation, normalisation
and the `BatchLoader` every trainer uses.

`BatchLoader` keeps the whole set as one uint8 tensor, on the training device, and builds each
training batch there with a single gather that does the random crop and horizontal flip for every
image at once.  The randomness is always drawn on the CPU, in the same order whatever the device,
so a CPU loader gives the same batches bit for bit as before devices existed, and a GPU loader
sees the same crops and flips.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from models.normalisation import CIFAR10_MEAN, CIFAR10_STD
from pipeline.data import DataError, ImageArrays

# --------------------------------------------------------------------------------------------
# Batched augmentation and normalisation (torch, on the device of the images)


def crop_and_flip(
    images_nhwc_uint8: torch.Tensor,
    top_px: torch.Tensor,
    left_px: torch.Tensor,
    flip: torch.Tensor,
    pad: int,
) -> torch.Tensor:
    """Zero-pad every image by `pad` pixels on each side, cut image i's H x W window whose
    top-left corner is (`top_px[i]`, `left_px[i]`) in the padded image, and mirror it left-right
    where `flip[i]`.  One gather for the whole batch; returns uint8 (N, H, W, C)."""
    for name, offsets in (("top_px", top_px), ("left_px", left_px)):
        if len(offsets) and (offsets.min() < 0 or offsets.max() > 2 * pad):
            raise DataError(f"{name} must lie in [0, {2 * pad}] for pad={pad}")
    return _gather_windows(images_nhwc_uint8, top_px, left_px, flip, pad)


def _gather_windows(images_nhwc_uint8, top_px, left_px, flip, pad) -> torch.Tensor:
    """`crop_and_flip` without the range check (which would wait for the device)."""
    n, height, width, channels = images_nhwc_uint8.shape
    device = images_nhwc_uint8.device
    padded = images_nhwc_uint8.new_zeros((n, height + 2 * pad, width + 2 * pad, channels))
    padded[:, pad : pad + height, pad : pad + width] = images_nhwc_uint8
    rows = top_px[:, None] + torch.arange(height, device=device)  # (N, H)
    cols = torch.arange(width, device=device).expand(n, width)
    cols = torch.where(flip[:, None], width - 1 - cols, cols) + left_px[:, None]  # (N, W)
    # Flat pixel index into `padded` viewed as (N * H' * W', C): one index_select gathers every
    # output pixel's C bytes (~3x faster than the equivalent 3-tensor advanced indexing).
    padded_height, padded_width = padded.shape[1:3]
    batch = torch.arange(n, device=device)[:, None, None]
    pixel = (batch * padded_height + rows[:, :, None]) * padded_width + cols[:, None, :]
    out = padded.view(-1, channels).index_select(0, pixel.view(-1))
    return out.view(n, height, width, channels)


def draw_crops(
    count: int, generator: torch.Generator, pad: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(top_px, left_px, flip)`` for `count` images, drawn from `generator` (CPU) in this
    order: crop offsets in [0, 2 * pad], then a flip with probability 1/2."""
    top_px = torch.randint(0, 2 * pad + 1, (count,), generator=generator)
    left_px = torch.randint(0, 2 * pad + 1, (count,), generator=generator)
    flip = torch.rand(count, generator=generator) < 0.5
    return top_px, left_px, flip


def augment_batch(
    images_nhwc_uint8: torch.Tensor, generator: torch.Generator, pad: int
) -> torch.Tensor:
    """CIFAR training augmentation for a whole batch: random crop with `pad` pixels of zero
    padding, then random horizontal flip with probability 1/2.  uint8 NHWC in and out."""
    if pad < 0:
        raise DataError(f"pad must be >= 0 pixels, got {pad}")
    crops = draw_crops(images_nhwc_uint8.shape[0], generator, pad)
    device = images_nhwc_uint8.device
    return _gather_windows(images_nhwc_uint8, *(t.to(device) for t in crops), pad)


def normalize(
    images_nhwc_uint8: torch.Tensor,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
) -> torch.Tensor:
    """uint8 NHWC pixels -> float32 ``(x / 255 - mean) / std``, shaped NCHW and stored
    channels_last (the NHWC buffer itself, permuted).  `mean`/`std` are per channel in [0, 1]."""
    _check_normalization(images_nhwc_uint8, mean, std)
    scale, shift = _scale_and_shift(mean, std, images_nhwc_uint8.device)
    return _normalize(images_nhwc_uint8, scale, shift)


def _check_normalization(images_nhwc_uint8, mean, std) -> None:
    if images_nhwc_uint8.dtype != torch.uint8 or images_nhwc_uint8.ndim != 4:
        raise DataError(
            f"expected uint8 NHWC images, got {images_nhwc_uint8.dtype} "
            f"{tuple(images_nhwc_uint8.shape)}"
        )
    channels = images_nhwc_uint8.shape[-1]
    if len(mean) != channels or len(std) != channels or min(std) <= 0:
        raise DataError(f"need {channels} means and {channels} positive stds, got {mean}, {std}")


def _scale_and_shift(mean, std, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 / (255 std), -mean / std)`` per channel, computed on the CPU, then moved."""
    scale = 1.0 / (255.0 * torch.tensor(std, dtype=torch.float32))
    shift = -torch.tensor(mean, dtype=torch.float32) / torch.tensor(std, dtype=torch.float32)
    return scale.to(device), shift.to(device)


def _normalize(images_nhwc_uint8, scale, shift) -> torch.Tensor:
    # x * scale + shift in one fused op, broadcasting over the trailing (channel) dimension.
    x = torch.addcmul(shift, images_nhwc_uint8.contiguous().to(torch.float32), scale)
    x = x.permute(0, 3, 1, 2)
    assert x.is_contiguous(memory_format=torch.channels_last)
    return x


class BatchLoader:
    """Iterate an in-memory `ImageArrays` as ``(x, y)`` batches on `device` (default CPU): x
    float32 (B, 3, H, W) in channels_last memory format, normalised with `mean`/`std`; y int64
    (B,).  The images are copied to the device once, as uint8; each batch is cut, augmented and
    normalised there.

    With ``train=True`` each epoch visits the examples in a fresh random order and applies
    `augment_batch` (random crop with `pad` pixels of zero padding, random horizontal flip).
    Everything random comes from a CPU generator seeded with ``(seed, epoch)``, so a given epoch
    is identical on every run and every device.  Each pass over the loader uses the next epoch
    number (0, 1, 2, ...); ``set_epoch(e)`` makes the next pass epoch `e` (to resume a run).
    `drop_last` defaults to `train`.
    """

    def __init__(
        self,
        arrays: ImageArrays,
        batch_size: int,
        *,
        train: bool,
        seed: int = 0,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        pad: int = 4,
        drop_last: bool | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        if batch_size < 1:
            raise DataError(f"batch_size must be >= 1, got {batch_size}")
        if pad < 0:
            raise DataError(f"pad must be >= 0 pixels, got {pad}")
        if seed < 0:
            raise DataError(f"seed must be >= 0, got {seed}")
        self.batch_size = batch_size
        self.train = train
        self.seed = seed
        self.mean = tuple(mean)
        self.std = tuple(std)
        self.pad = pad
        self.drop_last = train if drop_last is None else drop_last
        self.epoch = 0
        self.device = torch.device(device or "cpu")
        # uint8 (N, H, W, 3), converted (and on a GPU copied) once; on the CPU shares memory
        self.images = _as_tensor(arrays.images).to(self.device)
        self.labels = _as_tensor(arrays.labels).to(self.device)
        if self.drop_last and len(self.labels) < batch_size:
            raise DataError(
                f"batch_size {batch_size} exceeds the {len(self.labels)} examples and drop_last "
                "is set, so an epoch would be empty; use a smaller batch or drop_last=False"
            )
        _check_normalization(self.images, self.mean, self.std)
        self._scale, self._shift = _scale_and_shift(self.mean, self.std, self.device)

    def set_epoch(self, epoch: int) -> None:
        """Make the next pass epoch `epoch`."""
        if epoch < 0:
            raise DataError(f"epoch must be >= 0, got {epoch}")
        self.epoch = epoch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.labels) // self.batch_size
        return math.ceil(len(self.labels) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        if not self.train:
            for start in range(0, len(self) * self.batch_size, self.batch_size):
                images = self.images[start : start + self.batch_size]
                labels = self.labels[start : start + self.batch_size]
                yield _normalize(images, self._scale, self._shift), labels
            return
        if len(self) == 0:
            return
        order, top_px, left_px, flip = self._draw_epoch(epoch)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            window = slice(start, start + self.batch_size)
            index = order[window]
            images = _gather_windows(
                self.images.index_select(0, index),
                top_px[window],
                left_px[window],
                flip[window],
                self.pad,
            )
            labels = self.labels.index_select(0, index)
            yield _normalize(images, self._scale, self._shift), labels

    def _draw_epoch(self, epoch: int) -> tuple[torch.Tensor, ...]:
        """``(order, top_px, left_px, flip)`` of a training epoch, each one tensor on the device
        (one copy per epoch, none per batch).  Drawn on the CPU batch by batch, in the order a
        batch-at-a-time loop draws them: the order, then each batch's `draw_crops`."""
        generator = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        count = len(self.labels)
        order = torch.randperm(count, generator=generator)
        sizes = [min(self.batch_size, count - start) for start in range(0, count, self.batch_size)]
        crops = [draw_crops(size, generator, self.pad) for size in sizes[: len(self)]]
        top_px, left_px, flip = (torch.cat([c[i] for c in crops]) for i in range(3))
        return tuple(t.to(self.device) for t in (order, top_px, left_px, flip))


def _as_tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor sharing `array`'s memory (copied only when not C-contiguous).  The loader only
    reads it, so a read-only array (Ray's object store hands those to every worker) is shared
    too instead of copied: at ImageNet sizes a copy per candidate would cost gigabytes."""
    array = np.ascontiguousarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(array)


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 64-bit generator seed that differs for every (seed, epoch) pair."""
    return int(np.random.SeedSequence((seed, epoch)).generate_state(1, dtype=np.uint64)[0])
