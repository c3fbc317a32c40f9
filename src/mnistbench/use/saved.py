"""A model file loaded to use, whatever its engine: `load_model(path)`.

The engine is the one whose model files end like the path's name (`Engine.model_suffix`); it
returns a SavedModel (engines/__init__.py): its spec, class names and `scores(images)`, which
are a ResNet's logits or an SVM's one-vs-rest decision values. Both are computed as the run
computed them, so that re-evaluating a model on its own test split gives the stored accuracy
exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from mnistbench.data.load import Dataset
from mnistbench.engines import SavedModel, engine_for_file
from mnistbench.engines.modelfile import check_exists


def load_model(path: Path, load_data: Callable[[str], Dataset] | None = None) -> SavedModel:
    """The model in `path`. `load_data(name)` is needed only for a first-format ResNet file,
    whose normalisation is recomputed from its run's training split."""
    check_exists(path)
    return engine_for_file(path).load_model(path, load_data)
