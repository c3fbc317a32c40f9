import pytest
import torch

from mnistbench.data.preprocess import Preprocess, normalization_stats


def test_stats_are_those_of_the_pixels_in_unit_range():
    images = torch.tensor([[[0, 255], [0, 255]]], dtype=torch.uint8)
    mean, std = normalization_stats(images)
    assert mean == pytest.approx(0.5) and std == pytest.approx(0.57735, abs=1e-4)


def test_native_batch_is_scaled_and_normalised():
    images = torch.full((4, 28, 28), 255, dtype=torch.uint8)
    x = Preprocess(mean=0.5, std=0.5)(images)
    assert x.shape == (4, 1, 28, 28) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x))


def test_resize_and_channels_for_the_assignment_protocol():
    images = torch.randint(0, 256, (3, 28, 28), dtype=torch.uint8)
    x = Preprocess(mean=0.5, std=0.5, image_size=224, channels=3)(images)
    assert x.shape == (3, 3, 224, 224)
    assert torch.equal(x[:, 0], x[:, 2])
    assert x.min() >= -1 - 1e-6 and x.max() <= 1 + 1e-6
    # Bilinear resize keeps a constant image constant.
    flat = Preprocess(0.0, 1.0, image_size=64)(torch.full((1, 28, 28), 51, dtype=torch.uint8))
    assert torch.allclose(flat, torch.full_like(flat, 0.2))


def test_channels_last_changes_the_strides_not_the_values():
    images = torch.randint(0, 256, (2, 28, 28), dtype=torch.uint8)
    nchw = Preprocess(mean=0.5, std=0.5, image_size=64, channels=3)(images)
    nhwc = Preprocess(mean=0.5, std=0.5, image_size=64, channels=3, channels_last=True)(images)
    assert nhwc.is_contiguous(memory_format=torch.channels_last)
    assert not nchw.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(nchw, nhwc)


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError, match="channels"):
        Preprocess(0.5, 0.5, channels=2)
    with pytest.raises(ValueError, match="std"):
        Preprocess(0.5, 0.0)
