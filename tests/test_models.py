"""Every registered model through a forward and backward pass on tiny input (as timm does)."""

import pytest
import torch

from mnistbench.models import RESNETS, build_resnet


@pytest.mark.parametrize("name", sorted(RESNETS))
@pytest.mark.parametrize("stem", ["imagenet", "cifar"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 64)])
def test_forward_backward(name, stem, channels, size):
    torch.manual_seed(0)
    model = build_resnet(name, channels=channels, stem=stem)
    images = torch.randn(2, channels, size, size)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.in_channels == channels
    assert model.conv1.kernel_size == ((3, 3) if stem == "cifar" else (7, 7))
    assert isinstance(model.maxpool, torch.nn.Identity) == (stem == "cifar")


def test_unknown_model_and_stem():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_resnet("vgg")
    with pytest.raises(ValueError, match="unknown stem"):
        build_resnet("resnet18", stem="tiny")
