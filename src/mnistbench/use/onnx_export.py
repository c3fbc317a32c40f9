"""Export a saved model to ONNX: a graph that takes raw uint8 images (N, 28, 28), any N, and does
the run's preprocessing inside, so that running it needs onnxruntime and nothing of ours.

A ResNet's graph is the run's own `Preprocess` (scale, resize, normalise, channels) followed by
the network (torch.onnx's exporter); its output `logits` is (N, classes). An SVM's graph is
skl2onnx's conversion of the feature transform and SVC, behind a cast-reshape-scale prologue that
turns the images into the pixel features the SVM was fitted on; outputs `label` (N,) and
`scores` (N, classes). skl2onnx converts scikit-learn's SVC (and mnistbench saves every SVM as
one); an estimator it cannot convert is an ExportError that says so.

The file is written atomically: an export that fails leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mnistbench.engines import SavedModel
from mnistbench.engines.svm.saved import SvmModel
from mnistbench.engines.torch.saved import TorchModel
from mnistbench.errors import RunFailure, UserError, require

INPUT = "images"
OPSET = 18
PIXELS = 28 * 28


class ExportError(UserError):
    """A model that cannot be exported in the format asked for; the message says why."""

    flag = "--format"


class Exported(nn.Module):
    """uint8 images (N, 28, 28) -> logits: the run's preprocessing, then its network."""

    def __init__(self, model: TorchModel) -> None:
        super().__init__()
        # The layout is the runtime's business in ONNX: NCHW in, whatever it runs fastest.
        self.preprocess = dataclasses.replace(model.preprocess, channels_last=False)
        self.network = model.module.to(memory_format=torch.contiguous_format).eval()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(self.preprocess(images))


def export_onnx(model: SavedModel, out: Path) -> Path:
    """Write the model's ONNX graph to `out` (atomically); returns `out`."""
    require("onnx")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial")
    try:
        if isinstance(model, SvmModel):
            _export_svm(model, partial)
        elif isinstance(model, TorchModel):
            _export_torch(model, partial)
        else:
            raise ExportError(f"ONNX export is not supported for the {model.engine} engine")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def _export_torch(model: TorchModel, path: Path) -> None:
    require("onnxscript")  # torch.onnx's exporter is written with it
    example = torch.zeros(2, 28, 28, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1)
    try:
        torch.onnx.export(
            Exported(model).cpu().eval(), (example,), str(path), input_names=[INPUT],
            output_names=["logits"], dynamic_shapes=({0: batch},), dynamo=True,
            external_data=False, opset_version=OPSET, verbose=False,
        )  # fmt: skip
    except Exception as exc:  # the exporter raises its own error types
        raise RunFailure(f"torch.onnx could not export {model.path}: {exc}") from exc


def _export_svm(model: SvmModel, path: Path) -> None:
    onnx = require("onnx")
    skl2onnx = require("skl2onnx")
    from sklearn.pipeline import make_pipeline

    steps = [model.transform, model.estimator] if model.transform is not None else [model.estimator]
    pipeline = make_pipeline(*steps)
    try:
        with warnings.catch_warnings():  # skl2onnx reads probA_, deprecated in scikit-learn 1.9
            warnings.simplefilter("ignore", FutureWarning)
            svm = skl2onnx.to_onnx(
                pipeline, np.zeros((1, PIXELS), np.float32),
                target_opset={"": OPSET, "ai.onnx.ml": 3},
                options={id(model.estimator): {"zipmap": False}},
            )  # fmt: skip
    except Exception as exc:  # skl2onnx raises RuntimeError/NotImplementedError on unknown types
        raise ExportError(
            f"ONNX export is not supported for this SVM ({type(model.estimator).__name__}): "
            f"skl2onnx says: {exc}"
        ) from exc
    merged = onnx.compose.merge_models(
        _pixels_prologue(svm), svm, io_map=[("features", svm.graph.input[0].name)]
    )
    _rename_output(merged, svm.graph.output[1].name, "scores")
    onnx.checker.check_model(merged)
    onnx.save(merged, str(path))


def _pixels_prologue(target: Any) -> Any:
    """A graph images uint8 (N, 28, 28) -> features float32 (N, 784) in [0, 1], as
    the SVM engine's `pixels` computes them, with the target graph's opsets (merge_models wants them)."""
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", [INPUT], ["as_float"], to=TensorProto.FLOAT),
        helper.make_node("Reshape", ["as_float", "flat_shape"], ["flat"]),
        helper.make_node("Div", ["flat", "full_scale"], ["features"]),
    ]
    constants = [
        helper.make_tensor("flat_shape", TensorProto.INT64, [2], [-1, PIXELS]),
        helper.make_tensor("full_scale", TensorProto.FLOAT, [], [255.0]),
    ]
    graph = helper.make_graph(
        nodes, "pixels",
        [helper.make_tensor_value_info(INPUT, TensorProto.UINT8, ["N", 28, 28])],
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", PIXELS])],
        initializer=constants,
    )  # fmt: skip
    return helper.make_model(
        graph, opset_imports=list(target.opset_import), ir_version=target.ir_version
    )


def _rename_output(model: Any, old: str, new: str) -> None:
    for node in model.graph.node:
        node.output[:] = [new if name == old else name for name in node.output]
    for output in model.graph.output:
        if output.name == old:
            output.name = new


def run_onnx(path: Path, images: np.ndarray) -> list[np.ndarray]:
    """The graph's outputs for uint8 images (N, 28, 28), through onnxruntime on the CPU."""
    ort = require("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT: np.ascontiguousarray(images, dtype=np.uint8)})


def compare(model: SavedModel, path: Path, images: np.ndarray) -> tuple[float, float]:
    """(share of images with the same predicted class %, max |score difference|) between the
    ONNX graph under onnxruntime and the saved model, on uint8 images (N, 28, 28)."""
    outputs = run_onnx(path, images)
    tensor = torch.from_numpy(np.ascontiguousarray(images))
    ours = model.scores(tensor)
    if isinstance(model, SvmModel):
        labels, theirs = outputs[0], outputs[1]
        same = labels == model.predict(tensor)
    else:
        theirs = outputs[0]
        same = theirs.argmax(axis=1) == ours.argmax(axis=1)
    return 100.0 * float(np.mean(same)), float(np.max(np.abs(theirs - ours)))
