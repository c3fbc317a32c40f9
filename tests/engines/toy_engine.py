"""A test-only engine: scikit-learn's LogisticRegression on pixels, behind the engine interface.

It stands for "a new engine is one folder plus one registry line": test_toy_engine.py puts this
module where `mnistbench.engines.toy` would be and adds one line to `specfields.ENGINES`, and
nothing else in mnistbench changes. Its model file is a pickle (tests only: loading a pickle runs
code, which a real engine must not do).
"""

from __future__ import annotations

import pickle
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from mnistbench.config import RunSpec
from mnistbench.data.load import Dataset
from mnistbench.data.sizes import Sizes
from mnistbench.data.splits import limit_split, make_split
from mnistbench.engines import SavedModel, Work
from mnistbench.progress import Reporter
from mnistbench.result import RunResult, accuracy_percent, per_class_accuracy


def _pixels(images: torch.Tensor) -> np.ndarray:
    return images.reshape(len(images), -1).numpy().astype(np.float32) / 255


class ToyModel(SavedModel):
    engine = "toy"
    has_probabilities = True

    def __init__(self, path: Path, spec: RunSpec, classes: tuple[str, ...], fitted) -> None:
        self.path, self.spec, self.classes, self.fitted = path, spec, classes, fitted

    def scores(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        return self.fitted.decision_function(_pixels(images))


class ToyEngine:
    model_suffix = ".model.toy.pkl"

    def run(
        self,
        spec: RunSpec,
        data: Dataset,
        checkpoint_dir: Path | None = None,
        reporter: Reporter | None = None,
    ) -> RunResult:
        split = make_split(data, spec.split, val_fraction=spec.val_fraction, seed=spec.seed)
        split = limit_split(split, spec.train_limit, spec.test_limit, spec.seed)
        started = time.perf_counter()
        fitted = LogisticRegression(max_iter=200).fit(
            _pixels(split.train_images), split.train_labels.numpy()
        )
        fit_seconds = time.perf_counter() - started
        started = time.perf_counter()
        predicted = fitted.predict(_pixels(split.test_images))
        predict_seconds = time.perf_counter() - started
        labels, classes = split.test_labels.numpy(), data.info.num_classes
        confusion = np.bincount(labels * classes + predicted, minlength=classes**2)
        confusion = confusion.reshape(classes, classes).tolist()
        result = RunResult(
            spec=spec.to_dict(),
            test_accuracy=accuracy_percent(int(np.trace(np.array(confusion))), len(labels)),
            train_seconds=fit_seconds,
            eval_seconds=predict_seconds,
            device="cpu",
            per_class_accuracy=per_class_accuracy(confusion),
            confusion_matrix=confusion,
            protocol={"sizes": split.sizes()},
            backend="sklearn-logreg",
        )
        if checkpoint_dir is not None:
            checkpoint_dir.mkdir(parents=True, exist_ok=True)
            path = checkpoint_dir / f"{spec.key()}{self.model_suffix}"
            path.write_bytes(pickle.dumps({"spec": spec.to_dict(), "model": fitted}))
            result.model_path = str(path)
        return result

    def device(self, spec: RunSpec) -> str:
        return "cpu"

    def skip_reason(self, spec: RunSpec) -> str | None:
        return None

    def check_runnable(self, spec: RunSpec) -> None:
        return None

    def probe(self, spec: RunSpec) -> RunSpec:
        return spec.replace(train_limit=min(spec.train_limit or 200, 200), test_limit=100)

    def work(self, spec: RunSpec, sizes: Sizes) -> Work:
        return Work(sizes.train, sizes.val + sizes.test, sizes.test)

    def model_file_bytes(self, spec: RunSpec) -> int:
        return 784 * 10 * 8

    def load_model(
        self, path: Path, load_data: Callable[[str], Dataset] | None = None
    ) -> SavedModel:
        state = pickle.loads(path.read_bytes())
        spec = RunSpec.from_dict(state["spec"])
        from mnistbench.data.registry import get_dataset

        return ToyModel(path, spec, get_dataset(spec.dataset).classes, state["model"])


ENGINE = ToyEngine()
