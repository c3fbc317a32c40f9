"""The engine seam: what the study, the cost estimate and `use` ask of an engine, and where each
engine is found.

An engine is a package `mnistbench.engines.<name>` whose `ENGINE` honours `Engine`, listed with
its models in `specfields.ENGINES`: a new engine is its folder plus that one line. Nothing outside
an engine's folder names its modules; everything else goes through `engine_for(spec)` or
`engine_for_file(path)`.
"""

from __future__ import annotations

import functools
import importlib
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mnistbench.config import RunSpec
from mnistbench.data.sizes import Sizes
from mnistbench.engines.modelfile import MODEL_MARK, ModelFileError
from mnistbench.progress import Reporter
from mnistbench.result import RunResult
from mnistbench.specfields import ENGINES

if TYPE_CHECKING:  # torch is imported by what runs a spec, not by what plans one
    from collections.abc import Callable

    import numpy as np
    import torch

    from mnistbench.data.load import Dataset


@dataclass(frozen=True)
class Work:
    """How much a run computes, in units its engine's time grows with (a ResNet: images
    trained and images evaluated; an SVM: its fit's and its predictions' growth in the
    training images). `test` is the final test pass alone, which a result times on its own."""

    train: float
    evaluate: float
    test: float


class SavedModel(ABC):
    """A final model file loaded to use: its spec, class names, and scores for uint8 images
    (N, 28, 28), computed as its run computed them."""

    engine: str
    path: Path
    spec: RunSpec
    classes: tuple[str, ...]
    has_probabilities: bool = False
    """Whether softmax(scores) is a probability (a ResNet's logits) or scores only (an SVM's
    decision values)."""
    legacy: bool = False
    """A file of an older format, read with what was missing recomputed from its spec."""

    @property
    def key(self) -> str:
        return self.spec.key()

    @abstractmethod
    def scores(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        """(N, classes) float scores."""

    def predict(self, images: torch.Tensor, device: torch.device | None = None) -> np.ndarray:
        """Class indices, as the run predicted them."""
        return self.scores(images, device).argmax(axis=1)


class Engine(Protocol):
    """One way to train a spec. Every method takes a spec of one of the engine's models."""

    model_suffix: str
    """Its final model file's name after the run key, with MODEL_MARK in it ('.model.pt')."""

    def run(
        self,
        spec: RunSpec,
        data: Dataset,
        checkpoint_dir: Path | None = None,
        reporter: Reporter | None = None,
    ) -> RunResult:
        """Train and evaluate; with a checkpoint_dir, resume there and keep the final model."""
        ...

    def device(self, spec: RunSpec) -> str:
        """The device it computes on: 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'."""
        ...

    def skip_reason(self, spec: RunSpec) -> str | None:
        """Why this machine cannot run it at all (a study skips it), or None."""
        ...

    def check_runnable(self, spec: RunSpec) -> None:
        """Raise a UserError now, before any data loads, when it cannot run here."""
        ...

    def probe(self, spec: RunSpec) -> RunSpec:
        """A short run at the spec's speed (its `speed_fields`), timed to estimate it."""
        ...

    def work(self, spec: RunSpec, sizes: Sizes) -> Work:
        """Its work on splits of these sizes."""
        ...

    def model_file_bytes(self, spec: RunSpec) -> int:
        """The size of the final model file it keeps (0: none)."""
        ...

    def load_model(
        self, path: Path, load_data: Callable[[str], Dataset] | None = None
    ) -> SavedModel:
        """The model file at `path`; `load_data(name)` gives a dataset where one is needed."""
        ...


def engine_named(name: str) -> Engine:
    """The engine of that name (specfields.ENGINES), imported when first asked for."""
    if name not in ENGINES:
        raise KeyError(f"no engine {name!r}; there are {', '.join(ENGINES)}")
    return importlib.import_module(f"mnistbench.engines.{name}").ENGINE


def engine_for(spec: RunSpec) -> Engine:
    return engine_named(spec.engine())


def engine_for_file(path: Path) -> Engine:
    """The engine whose model files end like `path`'s name; for a file renamed by hand
    ('best.pt', 'svm.skops'), the one whose files have its last extension."""
    engines = [engine_named(name) for name in ENGINES]
    for engine in engines:
        if path.name.endswith(engine.model_suffix):
            return engine
    for engine in engines:
        if path.suffix and path.suffix == Path(engine.model_suffix).suffix:
            return engine
    if MODEL_MARK in path.name:
        raise ModelFileError(f"{path}: a model file of an engine this mnistbench does not have")
    raise ModelFileError(
        f"{path}: not a model file (their names end in "
        f"{', '.join(engine_named(name).model_suffix for name in ENGINES)})"
    )


def skip_reason(spec: RunSpec) -> str | None:
    """Why this machine cannot run the spec at all (a study records it as 'skipped', not
    'failed'): its device, or for an SVM on svm_backend 'cuml', a CUDA GPU."""
    return engine_for(spec).skip_reason(spec)


def run_spec(
    spec: RunSpec,
    data: Dataset,
    checkpoint_dir: Path | None = None,
    reporter: Reporter | None = None,
) -> RunResult:
    """Train and evaluate one spec with the engine its model needs."""
    return engine_for(spec).run(spec, data, checkpoint_dir, reporter)


@functools.lru_cache(maxsize=4)
def cached_dataset(name: str, root: str | None) -> Dataset:
    """Each worker process loads a dataset once (0.2 s) and reuses it for every run it gets."""
    from mnistbench.data.load import load_dataset

    return load_dataset(name, root)


def run_in_worker(
    spec_dict: dict,
    root: str | None,
    checkpoint_dir: str | None,
    threads: int | None,
    reporter: Reporter | None = None,
) -> dict:
    """Entry point for worker processes, GPU threads and Ray tasks: plain dicts in and out.

    `threads` overrides the spec's thread count so that N parallel workers share the cores
    instead of each one claiming all of them; it is not part of the run's identity.
    `reporter`: where progress goes (a GPU run in a thread of the study's process gets one
    that stops it when the study stops); by default nowhere.
    """
    spec = RunSpec.from_dict(spec_dict)
    if threads is not None:
        spec = spec.replace(threads=threads)
    reporter = reporter or Reporter()
    data = cached_dataset(spec.dataset, root)
    directory = Path(checkpoint_dir) if checkpoint_dir else None
    result = run_spec(spec, data, directory, reporter)
    result.environment.setdefault("worker_pid", os.getpid())
    return result.to_dict()
