"""A run's batches: the dataset on the device, the per-epoch order, and augmentation.

Batch order and augmentation are drawn from generators that depend only on (seed, epoch), so a
resumed epoch replays exactly the draws an uninterrupted run would have made.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.data.splits import SplitData

TRANSLATE_PIXELS = 2  # augment='translate': random shift of up to ±2 px
# augment='erase': torchvision RandomErasing's defaults (probability, area fraction, aspect),
# drawn per image; the rectangle is set to 0, the background of these datasets.
ERASE_PROBABILITY, ERASE_AREA, ERASE_ASPECT = 0.5, (0.02, 0.33), (0.3, 3.3)

Batches = Iterator[tuple[torch.Tensor, torch.Tensor]]


def translate(images: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Shift each image (B, H, W) by its own random offset in [-max_shift, max_shift], zero-filled."""
    batch, height, width = images.shape
    padded = nn.functional.pad(images, (max_shift,) * 4)
    offsets = torch.randint(
        0, 2 * max_shift + 1, (2, batch), generator=generator, device=generator.device
    ).to(images.device)
    rows = torch.arange(height, device=images.device)[None, :] + offsets[0][:, None]
    cols = torch.arange(width, device=images.device)[None, :] + offsets[1][:, None]
    index = torch.arange(batch, device=images.device)[:, None, None]
    return padded[index, rows[:, :, None], cols[:, None, :]]


def hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image (B, H, W) left-right with probability 1/2."""
    draws = torch.rand(len(images), generator=generator, device=generator.device)
    return torch.where((draws < 0.5).to(images.device)[:, None, None], images.flip(-1), images)


def erase(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random erasing (Zhong et al., 2020), each image (B, H, W) on its own draw: with
    probability ERASE_PROBABILITY a rectangle of ERASE_AREA of the image, of aspect (h/w) in
    ERASE_ASPECT (log-uniform), is blanked."""
    batch, height, width = images.shape
    draws = torch.rand(5, batch, generator=generator, device=generator.device).to(images.device)
    area = height * width * (ERASE_AREA[0] + draws[0] * (ERASE_AREA[1] - ERASE_AREA[0]))
    low, high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(low + draws[1] * (high - low))
    rows = torch.sqrt(area * aspect).round().clamp(1, height)
    cols = torch.sqrt(area / aspect).round().clamp(1, width)
    top = (draws[2] * (height - rows + 1)).floor()
    left = (draws[3] * (width - cols + 1)).floor()
    y = torch.arange(height, device=images.device)[None, :]
    x = torch.arange(width, device=images.device)[None, :]
    in_rows = (y >= top[:, None]) & (y < (top + rows)[:, None])
    in_cols = (x >= left[:, None]) & (x < (left + cols)[:, None])
    chosen = (draws[4] < ERASE_PROBABILITY)[:, None, None]
    return images.masked_fill(in_rows[:, :, None] & in_cols[:, None, :] & chosen, 0)


def make_augment(
    name: str, generator: torch.Generator
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The spec's augmentation as one function of a uint8 batch, drawing from `generator`."""
    if name == "none":
        return None
    parts = name.split("+")

    def augment(images: torch.Tensor) -> torch.Tensor:
        if "translate" in parts:
            images = translate(images, TRANSLATE_PIXELS, generator)
        if "flip" in parts:
            images = hflip(images, generator)
        if "erase" in parts:
            images = erase(images, generator)
        return images

    return augment


def epoch_generator(seed: int, epoch: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator that depends only on (seed, epoch): resumed epochs replay the same draws."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch)


def batch_indices(
    n: int, batch_size: int, generator: torch.Generator, device: torch.device
) -> Iterator[torch.Tensor]:
    """Each batch's indices into n images (on `device`), in a seeded random order.

    A final batch of one image is dropped: BatchNorm cannot train on it.
    """
    order = torch.randperm(n, generator=generator).to(device)
    for start in range(0, n, batch_size):
        index = order[start : start + batch_size]
        if len(index) > 1:
            yield index


def memory_batches(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Batches:
    """Batches sliced by index from device-resident tensors, in a seeded random order."""
    for index in batch_indices(len(labels), batch_size, generator, images.device):
        yield images[index], labels[index]


def dataloader_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    spec: RunSpec,
    generator: torch.Generator,
    device: torch.device,
) -> Batches:
    """The same batches through torch's DataLoader: pinned host memory and workers as the spec
    says, with non_blocking copies (which only overlap with compute from pinned memory).

    The order is the memory loader's permutation, given as the sampler, so that the two loaders
    differ only in how the data moves (DataLoader's own shuffle would draw a different order).
    """
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(images, labels),
        batch_size=spec.batch_size,
        sampler=torch.randperm(len(labels), generator=generator).tolist(),
        generator=generator,  # its workers' base seed: not from the process-wide RNG
        num_workers=spec.num_workers,
        pin_memory=spec.pin_memory and device.type == "cuda",
        drop_last=False,
    )
    for batch_images, batch_labels in loader:
        if len(batch_labels) > 1:
            yield (
                batch_images.to(device, non_blocking=True),
                batch_labels.to(device, non_blocking=True),
            )


def count_batches(n: int, batch_size: int) -> int:
    """How many batches an epoch of n images has (a final batch of one image is dropped)."""
    full, rest = divmod(n, batch_size)
    return full + (rest > 1)


def warm_up_shapes(n_train: int, batch_size: int) -> list[int]:
    """The batch sizes a run's steps will see: the full batch and the last partial one (a
    final batch of one image is dropped, see memory_batches)."""
    full, rest = min(batch_size, n_train), n_train % batch_size if n_train > batch_size else 0
    return [full] + ([rest] if rest > 1 else [])


@dataclass
class DeviceData:
    """A run's images (uint8) and labels, moved to the device once: 55 MB for a whole dataset."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    eval_images: torch.Tensor
    eval_labels: torch.Tensor
    eval_name: str  # "val" when the split has a validation part, else "test"

    @classmethod
    def from_split(cls, split: SplitData, device: torch.device) -> DeviceData:
        has_val = len(split.val_labels) > 0
        eval_images = split.val_images if has_val else split.test_images
        eval_labels = split.val_labels if has_val else split.test_labels
        return cls(
            split.train_images.to(device),
            split.train_labels.to(device),
            eval_images.to(device),
            eval_labels.to(device),
            "val" if has_val else "test",
        )


def epoch_batches(
    spec: RunSpec, split: SplitData, data: DeviceData, epoch: int, device: torch.device
) -> Batches:
    """This epoch's batches from the spec's loader, in an order drawn from (seed, epoch)."""
    generator = epoch_generator(spec.seed, epoch)
    if spec.loader == "memory":
        return memory_batches(data.train_images, data.train_labels, spec.batch_size, generator)
    return dataloader_batches(split.train_images, split.train_labels, spec, generator, device)


def epoch_indices(spec: RunSpec, data: DeviceData, epoch: int) -> Iterator[torch.Tensor]:
    """This epoch's batches as indices into data's train split: memory_batches' order."""
    generator = epoch_generator(spec.seed, epoch)
    n = len(data.train_labels)
    return batch_indices(n, spec.batch_size, generator, data.train_labels.device)


def epoch_augment(
    spec: RunSpec, epoch: int, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """This epoch's augmentation, drawing on the device from (seed, epoch) apart from the order."""
    return make_augment(spec.augment, epoch_generator(spec.seed + 7919, epoch, device))
