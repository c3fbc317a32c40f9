"""Every registered model through a forward and backward pass on tiny input (as timm does)."""

import pytest
import torch

from mnistbench.engines.torch.models import RESNETS, build_resnet


@pytest.mark.parametrize("name", sorted(RESNETS))
@pytest.mark.parametrize("stem", ["imagenet", "halve", "cifar"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 64)])
def test_forward_backward(name, stem, channels, size):
    torch.manual_seed(0)
    model = build_resnet(name, channels=channels, stem=stem)
    images = torch.randn(2, channels, size, size)
    logits = model(images)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    assert model.conv1.weight.grad is not None and model.conv1.in_channels == channels
    assert model.conv1.kernel_size == ((7, 7) if stem == "imagenet" else (3, 3))
    assert isinstance(model.maxpool, torch.nn.Identity) == (stem != "imagenet")


@pytest.mark.parametrize(("stem", "layer1_map", "layer4_map"), [
    ("imagenet", 7, 1), ("halve", 14, 2), ("cifar", 28, 4),
])  # fmt: skip
def test_each_stem_shrinks_28_px_input_as_documented(stem, layer1_map, layer4_map):
    model = build_resnet("resnet18", channels=1, stem=stem)
    sizes = {}
    for name in ("layer1", "layer4"):
        getattr(model, name).register_forward_hook(
            lambda module, inputs, output, name=name: sizes.__setitem__(name, output.shape[-1])
        )
    model.eval()(torch.zeros(1, 1, 28, 28))
    assert sizes == {"layer1": layer1_map, "layer4": layer4_map}


def test_unknown_model_and_stem():
    with pytest.raises(ValueError, match="unknown model 'vgg'"):
        build_resnet("vgg")
    with pytest.raises(ValueError, match="unknown stem"):
        build_resnet("resnet18", stem="tiny")
