"""ONNX export: the graph takes raw uint8 (N, 28, 28) with any N, does the run's preprocessing
itself, and under onnxruntime gives the saved model's answers on real test images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from mnistbench.data.load import load_dataset
from mnistbench.use.onnx_export import INPUT, export_onnx, run_onnx
from mnistbench.use.saved import load_model
from tests.saved_models import train

pytestmark = pytest.mark.network  # real MNIST and FashionMNIST test images (fetched once)

TEST_IMAGES = 1000


@pytest.mark.parametrize(
    "fields",
    [
        {"dataset": "mnist"},
        # Resize and channel repeat in the graph; normalisation 0.5/0.5 of the published split.
        {"dataset": "fashion-mnist", "image_size": 36, "channels": 3},
        {"dataset": "mnist", "split": "assignment", "memory_format": "channels_last"},
    ],
    ids=["mnist-28", "fashion-36px-3ch", "assignment-channels-last"],
)
def test_onnxruntime_gives_the_torch_models_logits_on_real_test_images(
    real_data_root, tmp_path, fields
) -> None:
    data = load_dataset(fields["dataset"], real_data_root)
    _, result = train(data, tmp_path, train_limit=64, **fields)
    model = load_model(Path(result.model_path))
    out = export_onnx(model, tmp_path / "model.onnx")

    graph = onnx.load(str(out)).graph
    (images,) = graph.input
    assert images.name == INPUT and images.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    dims = images.type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and [d.dim_value for d in dims[1:]] == [28, 28]

    test = data.test_images[:TEST_IMAGES]
    (logits,) = run_onnx(out, test.numpy())
    ours = model.scores(test)
    assert logits.shape == (TEST_IMAGES, 10)
    assert np.abs(logits - ours).max() < 1e-3
    np.testing.assert_array_equal(logits.argmax(axis=1), ours.argmax(axis=1))
    (one,) = run_onnx(out, test[:1].numpy())  # any batch size, one too
    np.testing.assert_allclose(one, ours[:1], atol=1e-3)


@pytest.mark.parametrize("features", ["pixels", "pca:30"])
def test_an_svm_exports_through_skl2onnx_with_the_same_classes(
    real_data_root, tmp_path, features
) -> None:
    data = load_dataset("mnist", real_data_root)
    _, result = train(data, tmp_path, model="svm", features=features, test_limit=500)
    model = load_model(Path(result.model_path))
    out = export_onnx(model, tmp_path / "svm.onnx")
    test = data.test_images[:TEST_IMAGES]
    labels, scores = run_onnx(out, test.numpy())
    np.testing.assert_array_equal(labels, model.predict(test))
    np.testing.assert_allclose(scores, model.scores(test), atol=1e-3)


def test_a_failed_export_leaves_nothing_behind(real_data_root, tmp_path, monkeypatch) -> None:
    import torch

    from mnistbench.errors import RunFailure

    data = load_dataset("mnist", real_data_root)
    _, result = train(data, tmp_path / "m")
    model = load_model(Path(result.model_path))

    def broken(*args, **kwargs):
        Path(args[2]).write_bytes(b"half a graph")  # as an exporter that dies half-way
        raise RuntimeError("exporter failed")

    monkeypatch.setattr(torch.onnx, "export", broken)
    with pytest.raises(RunFailure, match="exporter failed"):
        export_onnx(model, tmp_path / "out" / "model.onnx")
    assert list((tmp_path / "out").iterdir()) == []
