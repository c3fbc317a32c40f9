"""Forward MACs per image at the published study's input (224×224×3), counted by mnistbench.

The study's runs count MACs at their own input (28×28×1 by default); the published Q2 table gives
thop's count at 224×224×3. This counts the same model (torchvision's ResNet, ImageNet stem,
10 classes) at 224×224×3 on torch's meta device (no weights, no arithmetic: fast), in the runs'
convention: FlopCounterMode's FLOPs / 2, i.e. the multiply-accumulates of the convolutions and
the linear layer. thop also counts 4 operations per BatchNorm element (2 for the
normalisation, doubled for the affine), which is why the published count is 0.5 % (ResNet-18)
to 1.1 % (ResNet-50) higher.
"""

from __future__ import annotations

from functools import cache

PUBLISHED_INPUT = (3, 224, 224)
"""Channels, height, width of the published study's images."""
INPUT_LABEL = "×".join(map(str, PUBLISHED_INPUT[1:] + PUBLISHED_INPUT[:1]))  # 224×224×3


@cache
def macs_at_published_input(model: str) -> float | None:
    """Forward MACs per image of `model` at 224×224×3; None for a model that is no ResNet."""
    import torch

    from mnistbench.engines.torch.models import RESNETS, build_resnet
    from mnistbench.measure import forward_flops

    if model not in RESNETS:
        return None
    with torch.device("meta"):
        net = build_resnet(model, channels=PUBLISHED_INPUT[0], stem="imagenet")
        image = torch.empty(1, *PUBLISHED_INPUT)
    return forward_flops(net, image) / 2
