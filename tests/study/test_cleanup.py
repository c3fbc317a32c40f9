"""Final models and checkpoints on disk: the keep policy as runs finish, and `study clean`.

No training: runs are recorded with results whose model files are a few bytes written here.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from mnistbench.cli import main
from mnistbench.config import RunSpec
from mnistbench.result import RunResult
from mnistbench.study.cleanup import (
    apply_keep_policy,
    checkpoint_dir_for,
    clean_orphans,
    clean_study,
    keys_beside,
    run_files,
    study_keys,
)
from mnistbench.study.file import load_study
from mnistbench.study.store import Store

ACCURACIES = {"a": [91.0, 97.0, 94.0], "b": [80.0]}  # experiment -> its runs' test accuracies
STUDY_TEXT = """
[study]
name = "s"
{header}

[defaults]
dataset = "mnist"
model = "resnet18"
train_limit = 64
test_limit = 64

[experiments.a]
grid = {{ batch_size = [16, 32, 64] }}

[experiments.b]
base = {{ batch_size = 128 }}
"""


def _specs() -> dict[str, list[RunSpec]]:
    base = RunSpec(dataset="mnist", model="resnet18", train_limit=64, test_limit=64)
    return {
        "a": [base.replace(batch_size=b) for b in (16, 32, 64)],
        "b": [base.replace(batch_size=128)],
    }


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "results" / "store.db"


def _finish(store: Store, spec: RunSpec, accuracy: float, directory: Path, size: int = 1000):
    """Record a done run whose final model (`size` bytes) is on disk, as the engine leaves it."""
    directory.mkdir(parents=True, exist_ok=True)
    model = directory / f"{spec.key()}.model.pt"  # a ResNet's
    model.write_bytes(b"m" * size)
    assert store.claim(spec.key())
    result = RunResult(spec=spec.to_dict(), test_accuracy=accuracy, model_path=str(model))
    assert store.finish(spec.key(), result)


def _run_all(store_path: Path, policy: str, study: str = "s") -> Store:
    """Register and finish every run, applying `policy` after each as the study driver does."""
    directory = checkpoint_dir_for(store_path)
    store = Store(store_path)
    for experiment, specs in _specs().items():
        store.register(study, experiment, specs)
    for experiment, specs in _specs().items():
        for spec, accuracy in zip(specs, ACCURACIES[experiment], strict=True):
            _finish(store, spec, accuracy, directory)
            apply_keep_policy(store, study, spec.key(), policy, directory)
    return store


def _models(store_path: Path) -> set[str]:
    return {p.name for p in checkpoint_dir_for(store_path).glob("*.model.pt")}


def _advertised(store: Store) -> dict[str, str | None]:
    return {r.key: r.result.model_path for r in store.runs() if r.result}


def test_file_names_are_the_engines(tmp_path: Path) -> None:
    """run_files finds the checkpoint's name and every engine's model file that is there."""
    from mnistbench.engines.svm.saved import MODEL_SUFFIX as SVM_SUFFIX
    from mnistbench.engines.torch.checkpoint import checkpoint_path, final_model_path

    spec, svm = RunSpec(), RunSpec(model="svm")
    assert run_files(tmp_path, spec.key()) == [checkpoint_path(tmp_path, spec)]
    final_model_path(tmp_path, spec).write_bytes(b"w")
    (tmp_path / f"{svm.key()}{SVM_SUFFIX}").write_bytes(b"s")
    assert run_files(tmp_path, spec.key()) == [
        checkpoint_path(tmp_path, spec),
        final_model_path(tmp_path, spec),
    ]
    assert run_files(tmp_path, svm.key(), checkpoints=False) == [
        tmp_path / f"{svm.key()}{SVM_SUFFIX}"
    ]


def test_keep_best_keeps_the_most_accurate_model_per_experiment(store_path: Path) -> None:
    with _run_all(store_path, "best") as store:
        a, b = _specs()["a"], _specs()["b"]
        assert _models(store_path) == {f"{a[1].key()}.model.pt", f"{b[0].key()}.model.pt"}
        advertised = _advertised(store)
        assert advertised[a[1].key()] and advertised[b[0].key()]
        assert advertised[a[0].key()] is None and advertised[a[2].key()] is None, (
            "a deleted model is not advertised"
        )


def test_keep_none_and_all(tmp_path: Path) -> None:
    with _run_all(tmp_path / "none" / "store.db", "none") as store:
        assert _models(tmp_path / "none" / "store.db") == set()
        assert set(_advertised(store).values()) == {None}
    with _run_all(tmp_path / "all" / "store.db", "all") as store:
        assert len(_models(tmp_path / "all" / "store.db")) == 4
        assert None not in _advertised(store).values()


def test_a_model_another_study_has_is_never_deleted(store_path: Path) -> None:
    shared = _specs()["a"][0]
    with Store(store_path) as store:
        store.register("other", "x", [shared])
    with _run_all(store_path, "none"):
        assert _models(store_path) == {f"{shared.key()}.model.pt"}


def test_the_study_driver_applies_the_policy_as_a_run_is_recorded(store_path: Path) -> None:
    from mnistbench.progress import Reporter
    from mnistbench.study.run import Heartbeat, PlannedRun, RunContext, StudyOutcome

    directory = checkpoint_dir_for(store_path)
    first, second = _specs()["a"][:2]
    with Store(store_path) as store:
        store.register("s", "a", [first, second])
        context = RunContext(store, Heartbeat(store), StudyOutcome(), Reporter(), False, None,
                             store_path, study="s", keep_models="best")  # fmt: skip
        for spec, accuracy in ((first, 99.0), (second, 50.0)):
            run = PlannedRun("a", spec, "pending")
            assert context.claim(run)
            model = directory / f"{spec.key()}.model.pt"  # a ResNet's
            model.parent.mkdir(parents=True, exist_ok=True)
            model.write_bytes(b"m")
            result = RunResult(spec=spec.to_dict(), test_accuracy=accuracy, model_path=str(model))
            context.finish(run, result, None)
    assert _models(store_path) == {f"{first.key()}.model.pt"}


def test_clean_frees_the_studys_files_but_not_a_claimed_runs(store_path: Path) -> None:
    directory = checkpoint_dir_for(store_path)
    with _run_all(store_path, "all") as store:
        (running,) = _specs()["b"]
        store.register("s", "b", [running.replace(seed=1)])
        claimed = running.replace(seed=1).key()
        assert store.claim(claimed)  # this process: a live owner
        ckpt = run_files(directory, claimed, models=False)[0]
        ckpt.write_bytes(b"c" * 500)
        cleaned = clean_study(store, "s", directory)
        assert (cleaned.files, cleaned.bytes, len(cleaned.runs)) == (4, 4000, 4)
        assert cleaned.claimed == {claimed} and ckpt.exists()
        assert _models(store_path) == set() and set(_advertised(store).values()) == {None}
        assert clean_study(store, "s", directory).bytes == 0


def test_clean_takes_a_dead_owners_checkpoint(store_path: Path) -> None:
    directory = checkpoint_dir_for(store_path)
    spec = _specs()["b"][0]
    with Store(store_path) as store:
        store.register("s", "b", [spec])
        assert store.claim(spec.key())
        store._conn.execute(  # as a killed driver leaves it: a dead pid, an old heartbeat
            "UPDATE runs SET pid = ?, heartbeat_at = ? WHERE key = ?",
            (_dead_pid(), time.time() - 3600, spec.key()),
        )
        directory.mkdir(parents=True)
        run_files(directory, spec.key(), models=False)[0].write_bytes(b"c" * 10)
        cleaned = clean_study(store, "s", directory)
    assert cleaned.bytes == 10 and not cleaned.claimed


def _dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_clean_orphans(tmp_path: Path, store_path: Path) -> None:
    directory = checkpoint_dir_for(store_path)
    study_file = tmp_path / "s.toml"
    study_file.write_text(STUDY_TEXT.format(header=""))
    study = load_study(study_file)
    with _run_all(store_path, "all") as store:
        (directory / "0123456789abcdef.model.pt").write_bytes(b"x" * 7)  # a run of no study
        writing = directory / ".fedcba9876543210.model.pt.k2j3.tmp"  # atomic_replace's, mid-write
        writing.write_bytes(b"y")
        dropped = _specs()["a"][0]  # the file's grid no longer has batch 16
        current = study_keys(study) - {dropped.key()}
        assert study_keys(study) >= {s.key() for specs in _specs().values() for s in specs}
        cleaned = clean_orphans(store, directory, "s", current, keys_beside(store_path))
        assert cleaned.bytes == 1000 + 7 and cleaned.files == 2
        assert len(_models(store_path)) == 3 and dropped.key() not in str(_models(store_path))
        assert writing.exists(), "a file being written is a live run's, never an orphan"


def test_files_of_a_store_beside_are_not_orphans(tmp_path: Path, store_path: Path) -> None:
    directory = checkpoint_dir_for(store_path)
    beside = store_path.parent / "speedrun.db"  # the same checkpoint directory
    theirs = _specs()["b"][0].replace(seed=7)
    with Store(beside) as other:
        other.register("speedrun", "x", [theirs])
        _finish(other, theirs, 99.0, directory, size=3)
    with _run_all(store_path, "all") as store:
        current = {s.key() for specs in _specs().values() for s in specs}
        assert keys_beside(store_path) == {theirs.key()}
        assert clean_orphans(store, directory, "s", current, keys_beside(store_path)).files == 0
        (store_path.parent / "broken.db").write_bytes(b"SQLite format 3\0" + b"\0" * 200)
        assert keys_beside(store_path) is None
        (directory / "0123456789abcdef.model.pt").write_bytes(b"x")
        assert clean_orphans(store, directory, "s", current, None).files == 0
    assert len(_models(store_path)) == 4 + 1 + 1


def test_cli_clean_says_what_it_freed(tmp_path: Path, store_path: Path, capsys) -> None:
    study_file = tmp_path / "s.toml"
    study_file.write_text(STUDY_TEXT.format(header='keep_models = "all"'))
    _run_all(store_path, "all").close()
    assert main(["study", "clean", str(study_file), "--store", str(store_path)]) == 0
    out = capsys.readouterr().out
    assert "freed 4.0 kB (4,000 bytes)" in out and "4 file(s) of 4 run(s)" in out
    assert _models(store_path) == set()
    args = ["study", "clean", str(study_file), "--store", str(store_path), "--orphans"]
    assert main(args) == 0 and "freed 0 B" in capsys.readouterr().out


def test_keep_models_is_a_study_header_key(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(STUDY_TEXT.format(header=""))
    assert load_study(path).keep_models == "best"
    path.write_text(STUDY_TEXT.format(header='keep_models = "none"'))
    assert load_study(path).keep_models == "none"


def test_a_copied_store_never_deletes_the_originals_models(
    tmp_path: Path, store_path: Path
) -> None:
    """A store copied to another folder still names the original's model files: cleaning the
    copy empties only the copy's own checkpoint directory."""
    import shutil

    _run_all(store_path, "all").close()
    copy = tmp_path / "elsewhere" / "copy.db"
    copy.parent.mkdir()
    shutil.copyfile(store_path, copy)
    with Store(copy) as store:
        clean_study(store, "s", checkpoint_dir_for(copy))
        assert set(_advertised(store).values()) == {None}  # the copy advertises no model
    assert len(_models(store_path)) == 4


def test_runs_of_a_store_beside_keep_their_models(store_path: Path) -> None:
    """`results/speedrun.db` beside `results/mnistbench.db` shares its checkpoint directory: a
    run both stores have keeps its model whatever one store's policy says."""
    shared = _specs()["a"][0]
    with Store(store_path.with_name("beside.db")) as beside:
        beside.register("other", "x", [shared])
    with _run_all(store_path, "none"):
        assert _models(store_path) == {f"{shared.key()}.model.pt"}
