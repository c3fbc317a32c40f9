"""Batch preprocessing as tensor operations, run on whatever device the batch is on.

uint8 (B, H, W) or (B, 1, H, W) -> float (B, channels, size, size): scale to [0, 1], bilinear
resize, normalise, repeat channels. Resizing a whole batch on the device replaces the notebook
way (PIL Resize per image in DataLoader workers), which is the bottleneck at 224 px.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

# The published study's normalisation (mean = std = 0.5 on every channel).
ASSIGNMENT_MEAN_STD = (0.5, 0.5)


def normalization_stats(images: torch.Tensor) -> tuple[float, float]:
    """Mean and std of uint8 images scaled to [0, 1] (computed on the train split only)."""
    pixels = images.to(torch.float64) / 255.0
    return float(pixels.mean()), float(pixels.std())


@dataclass(frozen=True)
class Preprocess:
    """The per-batch transform from stored uint8 images to model input."""

    mean: float
    std: float
    image_size: int = 28
    channels: int = 1
    dtype: torch.dtype = torch.float32
    channels_last: bool = False
    """Return NHWC-strided batches (the model must be converted to channels_last too)."""

    def __post_init__(self) -> None:
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")
        if self.channels not in (1, 3):
            raise ValueError(f"channels must be 1 or 3, got {self.channels}")
        if self.image_size < 1:
            raise ValueError(f"image_size must be positive, got {self.image_size}")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() == 3:
            images = images.unsqueeze(1)
        x = images.to(self.dtype).div_(255.0)
        if x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = x.sub_(self.mean).div_(self.std)
        # expand() shares memory across channels: no copy until a kernel needs contiguity.
        x = x.expand(-1, self.channels, -1, -1) if self.channels != x.shape[1] else x
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x
