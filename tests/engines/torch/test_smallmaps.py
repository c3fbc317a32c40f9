import pytest
import torch
from torch import nn

from mnistbench.config import RunSpec
from mnistbench.engines.torch import smallmaps
from mnistbench.engines.torch.models import build_resnet
from mnistbench.engines.torch.smallmaps import (
    MatmulConv2d,
    count_small_map_convs,
    use_matmul_for_small_maps,
)
from mnistbench.engines.torch.train import run
from tests.conftest import synthetic_dataset


@pytest.mark.parametrize(
    ("size", "kernel", "stride", "padding", "channels_last"),
    [
        (1, 3, 1, 1, False),  # layer4's 3x3 convolutions at 28 px: only the centre tap counts
        (2, 3, 1, 1, False),  # layer3's
        (2, 3, 2, 1, False),  # layer4's first, stride 2 from 2x2 to 1x1
        (2, 1, 2, 0, False),  # its 1x1 downsample
        (2, 3, 1, 1, True),
        (1, 3, 1, 2, False),  # padding wider than the map: outputs of 3x3
    ],
)
def test_matmul_computes_the_convolutions_outputs_and_gradients(
    size: int, kernel: int, stride: int, padding: int, channels_last: bool
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 5, kernel, stride=stride, padding=padding, bias=True)
    matmul = nn.Conv2d(6, 5, kernel, stride=stride, padding=padding, bias=True)
    matmul.load_state_dict(conv.state_dict())
    assert use_matmul_for_small_maps(matmul) == 1 and type(matmul) is MatmulConv2d
    x = torch.randn(4, 6, size, size)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    inputs = [x.clone().requires_grad_(True) for _ in range(2)]
    expected, got = conv(inputs[0]), matmul(inputs[1])
    assert got.shape == expected.shape
    # in the input's layout (a 1x1 map is both)
    assert (
        got.is_contiguous(memory_format=torch.channels_last) is channels_last or got.shape[-1] == 1
    )
    torch.testing.assert_close(got, expected)
    gradient = torch.randn_like(expected)
    expected.backward(gradient)
    got.backward(gradient)
    torch.testing.assert_close(inputs[1].grad, inputs[0].grad)
    torch.testing.assert_close(matmul.weight.grad, conv.weight.grad)
    torch.testing.assert_close(matmul.bias.grad, conv.bias.grad)


def test_larger_maps_and_evaluation_run_the_backends_convolution(monkeypatch) -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)
    use_matmul_for_small_maps(conv)

    def refuse(*args, **kwargs):
        raise AssertionError("unfold on a map the convolution should take")

    monkeypatch.setattr(smallmaps.F, "unfold", refuse)
    conv(torch.randn(2, 3, 3, 3))  # 9 pixels > SMALL_MAP_AREA
    conv.eval()
    conv(torch.randn(2, 3, 2, 2))
    conv.train()
    with pytest.raises(AssertionError, match="unfold"):
        conv(torch.randn(2, 3, 2, 2))


def test_a_converted_resnet_keeps_its_state_dict_and_counts_its_small_maps() -> None:
    model = build_resnet("resnet18", channels=1)
    keys = list(model.state_dict())
    # 28 px, imagenet stem: 3 convolutions see 2x2 in layer3, 5 see 2x2 or 1x1 in layer4
    assert count_small_map_convs(model, 1, 28) == 8
    assert count_small_map_convs(model, 1, 224) == 0
    assert count_small_map_convs(build_resnet("resnet18", stem="cifar"), 1, 28) == 0
    assert use_matmul_for_small_maps(model) == 20  # every convolution; each decides per map
    assert list(model.state_dict()) == keys
    assert count_small_map_convs(model, 1, 28) == 8 and model.training
    assert use_matmul_for_small_maps(model) == 0  # already converted


def test_a_run_with_matmul_on_small_maps_trains_the_same_model(monkeypatch) -> None:
    data = synthetic_dataset(n_train=96)
    spec = RunSpec(
        model="resnet18", epochs=1, batch_size=32, threads=1, device="cpu", optimizer="sgd"
    )
    unfolds: list[int] = []
    unfold = smallmaps.F.unfold
    monkeypatch.setattr(smallmaps.F, "unfold", lambda *a, **k: unfolds.append(1) or unfold(*a, **k))
    conv = run(spec.replace(small_map_convs="conv", memory_format="contiguous"), data)
    assert not unfolds
    matmul = run(spec.replace(small_map_convs="matmul", memory_format="contiguous"), data)
    assert len(unfolds) >= 8 * 3  # 8 small-map convolutions in each of 3 steps
    assert (conv.protocol["small_map_convs"], matmul.protocol["small_map_convs"]) == (
        "conv",
        "matmul",
    )
    # The same sums in another order: equal up to rounding, not bit for bit
    assert matmul.history[0].train_loss == pytest.approx(conv.history[0].train_loss, rel=1e-3)
