"""Convolutions on tiny maps as one matrix product, for training (small_map_convs = "matmul").

At native 28 px the imagenet stem leaves 2x2 maps in layer3 and 1x1 maps in layer4. There a
3x3 convolution is a plain matrix product (only the centre tap ever meets a pixel), but oneDNN
runs its backward pass as a general convolution, which on some CPUs takes most of a small-batch
step (benchmarks/README.md). Unfolding the input (im2col) and multiplying by the weight
matrix computes the same sums with one GEMM forward and two backward, which autograd derives.

Only the training forward takes this path: evaluation, export and saved models run the
ordinary convolution, and the weights (the state_dict) are the same either way. Whether it is
faster depends on the machine, so `small_map_convs = "auto"` times both (memory_format.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Maps of at most this many pixels (2x2) take the matmul path: there the product gained where
# it was measured, while 4x4 and 7x7 maps ran faster in oneDNN's convolution (benchmarks/).
SMALL_MAP_AREA = 4


class MatmulConv2d(nn.Conv2d):
    """nn.Conv2d whose training forward on maps of <= SMALL_MAP_AREA pixels is unfold + matmul."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        if not self.training or height * width > SMALL_MAP_AREA:
            return super().forward(x)
        out_height, out_width = (
            (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1
            for size, pad, dilation, kernel, stride in zip(
                (height, width),
                self.padding,
                self.dilation,
                self.kernel_size,
                self.stride,
                strict=True,
            )
        )
        columns = F.unfold(x, self.kernel_size, self.dilation, self.padding, self.stride)
        out = self.weight.reshape(self.out_channels, -1) @ columns  # (N, out, pixels)
        if self.bias is not None:
            out = out + self.bias.view(1, -1, 1)
        out = out.view(x.shape[0], self.out_channels, out_height, out_width)
        if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last)
        return out


def _convertible(module: nn.Module) -> bool:
    """A zero-padded, ungrouped Conv2d: what unfold + matmul computes exactly."""
    return (
        isinstance(module, nn.Conv2d)
        and module.groups == 1
        and module.padding_mode == "zeros"
        and not isinstance(module.padding, str)
    )


def use_matmul_for_small_maps(model: nn.Module) -> int:
    """Make every plain Conv2d of `model` a MatmulConv2d, in place (same parameters, same
    state_dict); returns how many were changed."""
    converted = 0
    for module in model.modules():
        if type(module) is nn.Conv2d and _convertible(module):
            module.__class__ = MatmulConv2d
            converted += 1
    return converted


def count_small_map_convs(model: nn.Module, channels: int, image_size: int) -> int:
    """How many of the model's convolutions see maps of <= SMALL_MAP_AREA pixels at this input
    size (one image, no gradients): where there are none, "matmul" would change nothing."""
    seen: list[int] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if _convertible(module) and inputs[0].shape[-2] * inputs[0].shape[-1] <= SMALL_MAP_AREA:
            seen.append(1)

    hooks = [module.register_forward_pre_hook(record) for module in model.modules()]
    parameter = next(model.parameters())
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, channels, image_size, image_size, device=parameter.device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return len(seen)
