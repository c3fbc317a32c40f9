"""Model names -> torchvision ResNets (random init) adapted to MNIST-family input."""

from __future__ import annotations

from collections.abc import Callable

import torchvision
from torch import nn

from mnistbench.specfields import ENGINES, SMALL_STEM_STRIDES, STEMS

# The torch engine's models (specfields.ENGINES) are torchvision's builders of the same name.
RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    name: getattr(torchvision.models, name) for name in ENGINES["torch"]
}


def build_resnet(
    name: str, *, channels: int = 1, stem: str = "imagenet", num_classes: int = 10
) -> torchvision.models.ResNet:
    """torchvision's ResNet (random init) with its stem adapted to the input.

    stem='imagenet' keeps the 7x7/2 conv and 3x3/2 max-pool (right for 224 px; at 28 px it leaves
    a 1x1 map after layer4, cheap but coarse); stem='cifar' uses a 3x3/1 conv and no max-pool, so
    28 px input keeps 4x4 at layer4 (better accuracy, ~16x the FLOPs of the imagenet stem at 28);
    stem='halve', in between, a 3x3/2 conv and no max-pool: 14x14 maps at layer1 and 2x2 at
    layer4 from 28 px (~4x the imagenet stem's FLOPs).
    conv1 is replaced whenever the channels or the stem differ from ImageNet's.
    """
    if name not in RESNETS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(RESNETS)}")
    model = RESNETS[name](weights=None, num_classes=num_classes)
    if stem in SMALL_STEM_STRIDES:
        stride = SMALL_STEM_STRIDES[stem]
        model.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=stride, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif stem == "imagenet":
        if channels != 3:
            model.conv1 = nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        raise ValueError(f"unknown stem {stem!r}; choose one of {', '.join(STEMS)}")
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model
