"""Golden identities and names, kept as files in tests/golden/: the run keys of specs that
between them set every RunSpec field, the sorted run keys of every shipped study, the names of
a result's protocol entries and fields, and what an MLflow run is given. A refactor that moves
code must leave all of them as they are (a store's keys, a report's columns and an MLflow
experiment's names are what users have); a change on purpose is accepted by running these
tests once with MNISTBENCH_REGOLD=1 and committing the files they write.

Also: every script in benchmarks/ imports (none is left behind by a move).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from mnistbench.config import RunSpec
from mnistbench.study.file import load_study
from mnistbench.study.store import Store
from tests.conftest import synthetic_dataset
from tests.golden_files import GOLDEN, assert_matches_golden

REPO = Path(__file__).resolve().parents[1]
STUDY_FILES = sorted([*REPO.glob("configs/*.toml"), *REPO.glob("benchmarks/studies/*.toml")])

# Between them these set every RunSpec field to something other than its default.
SPECS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "fashion-mnist": {"dataset": "fashion-mnist"},
    "resnet50": {"model": "resnet50"},
    "assignment split": {"split": "assignment"},
    "validation part": {"val_fraction": 0.1},
    "seed and subsets": {"seed": 3, "train_limit": 1000, "test_limit": 500},
    "validation subset": {"split": "assignment", "val_limit": 700},
    "threads (speed only)": {"threads": 1},
    "a search's trial (not identity)": {"trial": '{"study": "s.e.0", "trial_id": 1}'},
    "sgd": {"optimizer": "sgd", "lr": 1e-2, "momentum": 0.8},
    "adam without decay": {"optimizer": "adam", "weight_decay": 0.0},
    "batch and epochs": {"batch_size": 16, "epochs": 2},
    "schedule and smoothing": {"lr_schedule": "cosine", "label_smoothing": 0.1},
    "levers": {"augment": "translate+flip", "ema_decay": 0.99, "tta": "flip"},
    "cuda, amp on cuda": {"device": "cuda", "amp": "cuda"},
    "dataloader": {"loader": "dataloader", "pin_memory": True, "num_workers": 2},
    "published input": {
        "image_size": 224,
        "channels": 3,
        "stem": "cifar",
        "eval_each_epoch": False,
    },
    "speed-only choices": {
        "memory_format": "channels_last",
        "small_map_convs": "matmul",
        "cuda_graphs": "off",
    },
    "halve stem, amp": {"stem": "halve", "amp": True},
    "svm rbf": {"model": "svm", "C": 1.0, "gamma": 0.01},
    "svm poly": {
        "model": "svm",
        "kernel": "poly",
        "degree": 2,
        "svm_backend": "sklearn",
        "features": "pca:50",
    },
    "svm linear": {
        "model": "svm",
        "kernel": "linear",
        "features": "standardized",
        "gamma": "auto",
        "svm_backend": "sklearnex",
    },
}


def check_golden(name: str, found: Any) -> None:
    """`found`, as indented JSON, against tests/golden/<name> (golden_files.py)."""
    text = json.dumps(found, indent=2, sort_keys=True, default=str) + "\n"
    assert_matches_golden(text, GOLDEN / name)


def test_the_specs_set_every_field_of_a_run():
    fields = {field.name for field in dataclasses.fields(RunSpec)}
    assert fields == {name for values in SPECS.values() for name in values}


def test_run_keys_of_specs_that_set_every_field_are_unchanged():
    check_golden(
        "spec_keys.json", {name: RunSpec(**values).key() for name, values in SPECS.items()}
    )


def test_run_keys_of_every_shipped_study_are_unchanged():
    """As each file states its runs, and as a machine without a GPU runs them ('auto' is this
    machine's device before keys are made: study.expand)."""
    keys: dict[str, dict[str, dict[str, list[str]]]] = {}
    for path in STUDY_FILES:
        study = load_study(path)
        name = str(path.relative_to(REPO))
        keys[name] = {
            experiment.name: {
                "as written": sorted(spec.key() for spec in experiment.specs()),
                "on a cpu": sorted({on_cpu(spec).key() for spec in experiment.specs()}),
            }
            for experiment in study.experiments
        }
    check_golden("study_keys.json", keys)


def on_cpu(spec: RunSpec) -> RunSpec:
    """devices.concrete_spec on a machine with neither CUDA nor MPS."""
    return spec if spec.is_svm or spec.device != "auto" else spec.replace(device="cpu")


@pytest.fixture(scope="module")
def finished_results():
    """A tiny ResNet run and an SVM fit on the CPU, as the engines record them."""
    from mnistbench.engines import run_spec

    data = synthetic_dataset(n_train=200, n_test=50)
    resnet = RunSpec(epochs=1, batch_size=32, device="cpu", threads=1, memory_format="contiguous",
                     small_map_convs="conv", train_limit=64, test_limit=32)  # fmt: skip
    svm = RunSpec(model="svm", svm_backend="sklearn", threads=1, train_limit=100, test_limit=50)
    return {"resnet": run_spec(resnet, data), "svm": run_spec(svm, data)}


def test_names_of_a_results_fields_and_protocol_are_unchanged(finished_results):
    from mnistbench.result import EpochRecord, RunResult

    names = {
        "RunResult": [field.name for field in dataclasses.fields(RunResult)],
        "EpochRecord": [field.name for field in dataclasses.fields(EpochRecord)],
    }
    for engine, result in finished_results.items():
        names[f"protocol of a {engine} run"] = sorted(result.protocol)
        names[f"environment of a {engine} run"] = sorted(result.environment)
    check_golden("result_names.json", names)


def test_what_an_mlflow_run_is_given_is_unchanged(tmp_path):
    from mnistbench.use.tracking import tags
    from mnistbench.use.tracking_content import FINAL, HISTORY

    store_path = tmp_path / "store.db"  # a copy: opening a store migrates it in place
    shutil.copy(Path(__file__).parent / "fixtures" / "store_v1.db", store_path)
    with Store(store_path) as store:
        study, experiment = store.experiments()[0]
        record = store.runs(study, experiment)[0]
        tag_names = sorted(tags(record, study, experiment))
    check_golden("mlflow_names.json", {
        "params": sorted(field.name for field in dataclasses.fields(RunSpec)),
        "final metrics": sorted(FINAL), "epoch metrics": sorted(HISTORY.values()),
        "tags of a stored run": tag_names,
    })  # fmt: skip


@pytest.mark.parametrize("script", sorted(REPO.glob("benchmarks/*.py")), ids=lambda p: p.name)
def test_every_benchmark_script_imports(script: Path, monkeypatch):
    monkeypatch.syspath_prepend(str(script.parent))
    spec = importlib.util.spec_from_file_location(f"benchmark_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)
    spec.loader.exec_module(module)  # its `if __name__ == "__main__"` part does not run
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
