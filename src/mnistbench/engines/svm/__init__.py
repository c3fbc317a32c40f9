"""The kernel SVM engine (scikit-learn's SVC, or scikit-learn-intelex's or cuML's twin): its
`ENGINE`.

Read train.py (a run, top to bottom), then features.py (images as feature vectors), backends.py
(which SVC fits here) and saved.py (the final model file). This module imports neither torch
nor scikit-learn, nor the modules beside it (which never import it back), so that planning and
estimates can ask it questions cheaply.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mnistbench.config import RunSpec
from mnistbench.data.sizes import Sizes

if TYPE_CHECKING:
    from mnistbench.data.load import Dataset
    from mnistbench.engines import SavedModel, Work
    from mnistbench.progress import Reporter
    from mnistbench.result import RunResult

PROBE_TRAIN_IMAGES = 500  # the reference fit (the run's own size when it is smaller)
PROBE_TEST_IMAGES = 250
# (fit, predict) growth exponents in the training images per back-end, measured from 2k images
# up (benchmarks/README.md); the ratio of two small fits scattered too much to use.
GROWTH = {"sklearnex": (1.5, 0.4), "sklearn": (1.9, 0.8)}
DEFAULT_GROWTH = (1.7, 0.6)


class SvmEngine:
    @property
    def model_suffix(self) -> str:
        from mnistbench.engines.svm.saved import MODEL_SUFFIX

        return MODEL_SUFFIX

    def run(
        self,
        spec: RunSpec,
        data: Dataset,
        checkpoint_dir: Path | None = None,
        reporter: Reporter | None = None,
    ) -> RunResult:
        from mnistbench.engines.svm import train

        return train.run(spec, data, reporter=reporter, checkpoint_dir=checkpoint_dir)

    def device(self, spec: RunSpec) -> str:
        return "cuda" if spec.svm_backend == "cuml" else "cpu"

    def skip_reason(self, spec: RunSpec) -> str | None:
        from mnistbench.devices import device_problem

        if spec.svm_backend == "cuml" and (problem := device_problem("cuda")) is not None:
            return f"svm_backend 'cuml' needs a CUDA GPU: {problem}"
        return None

    def check_runnable(self, spec: RunSpec) -> None:
        from mnistbench.engines.svm.backends import resolve_svm_backend

        resolve_svm_backend(spec.svm_backend)

    def probe(self, spec: RunSpec) -> RunSpec:
        largest = PROBE_TRAIN_IMAGES
        if spec.features.startswith("pca:"):  # PCA keeps at most as many components as images
            largest = max(largest, int(spec.features[4:]) + 1)
        limit = largest if spec.train_limit is None else spec.train_limit
        return spec.replace(
            train_limit=min(limit, largest),
            val_limit=min(spec.val_limit or PROBE_TEST_IMAGES, PROBE_TEST_IMAGES),
            test_limit=min(spec.test_limit or PROBE_TEST_IMAGES, PROBE_TEST_IMAGES),
        )

    def work(self, spec: RunSpec, sizes: Sizes) -> Work:
        """A fit grows about as a power of the training images, and predicting with the
        images predicted times the support vectors (which grow with the training images)."""
        from mnistbench.engines import Work

        fit, predict = GROWTH.get(_backend(spec.svm_backend), DEFAULT_GROWTH)
        per_image = max(sizes.train, 1) ** predict
        return Work(
            max(sizes.train, 1) ** fit, (sizes.val + sizes.test) * per_image, sizes.test * per_image
        )

    def model_file_bytes(self, spec: RunSpec) -> int:
        return 0  # small, and unknown before the fit (its support vectors)

    def load_model(
        self, path: Path, load_data: Callable[[str], Dataset] | None = None
    ) -> SavedModel:
        from mnistbench.engines.svm.saved import load_svm_model

        return load_svm_model(path)


def _backend(requested: str) -> str:
    from mnistbench.engines.svm.backends import resolve_svm_backend

    try:
        return resolve_svm_backend(requested)
    except Exception:  # the run will fail and say why; its estimate only needs a guess
        return requested


ENGINE = SvmEngine()
