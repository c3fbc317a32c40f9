"""Choosing a model: a run key prefix, the best run of a study, a path; every failure says what
there is instead."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnistbench.config import RunSpec
from mnistbench.result import RunResult
from mnistbench.study.cleanup import checkpoint_dir_for
from mnistbench.study.store import Store
from mnistbench.use.selection import SelectionError, best, by_key, model_path


def _store(tmp_path: Path) -> tuple[Store, dict[str, RunSpec]]:
    """Study 's': three done runs, one of them without its model; study 't': one failed run."""
    store = Store(tmp_path / "results" / "store.db")
    specs = {
        "sgd": RunSpec(optimizer="sgd"),
        "adam": RunSpec(optimizer="adam"),
        "best_gone": RunSpec(optimizer="adamw"),
        "fashion": RunSpec(dataset="fashion-mnist"),
    }
    store.register("s", "grid", [specs["sgd"], specs["adam"], specs["best_gone"]])
    store.register("s", "other", [specs["fashion"]])
    accuracy = {"sgd": 90.0, "adam": 95.0, "best_gone": 99.0, "fashion": 97.0}
    directory = checkpoint_dir_for(store.path)
    directory.mkdir(parents=True)
    for name, spec in specs.items():
        path = directory / f"{spec.key()}.model.pt"
        if name != "best_gone":
            path.write_bytes(b"m")
        assert store.claim(spec.key())
        stored = str(path) if name != "best_gone" else None
        store.finish(spec.key(), RunResult(spec.to_dict(), test_accuracy=accuracy[name],
                                           model_path=stored))  # fmt: skip
    failed = RunSpec(seed=7)
    store.register("t", "grid", [failed])
    assert store.claim(failed.key())
    store.fail(failed.key(), "boom")
    return store, specs | {"failed": failed}


def test_a_unique_prefix_names_a_run(tmp_path) -> None:
    store, specs = _store(tmp_path)
    key = specs["adam"].key()
    chosen = by_key(store, key[:6].upper())
    assert chosen.record.key == key and chosen.path.name == f"{key}.model.pt"
    assert key in chosen.describe() and "95.00 %" in chosen.describe()


def test_unknown_short_and_ambiguous_prefixes_are_errors_that_say_so(tmp_path) -> None:
    store, specs = _store(tmp_path)
    with pytest.raises(SelectionError, match=r"no run .* starting with 'ffffffff'"):
        by_key(store, "ffffffff")
    with pytest.raises(SelectionError, match="too short"):
        by_key(store, "ab")
    # Keys are 16 hex digits and rarely share a prefix here: give two of them one.
    for key in (specs["sgd"].key(), specs["adam"].key()):
        for table in ("runs", "memberships"):
            store._conn.execute(
                f"UPDATE {table} SET key = ? WHERE key = ?", ("abcd" + key[4:], key)
            )
    with pytest.raises(SelectionError, match="'abcd' is ambiguous: 2 runs match"):
        by_key(store, "abcd")


def test_a_run_without_its_model_says_why(tmp_path) -> None:
    store, specs = _store(tmp_path)
    with pytest.raises(SelectionError, match="has no model file: its study did not keep it"):
        by_key(store, specs["best_gone"].key())
    with pytest.raises(SelectionError, match="is failed: it has no model"):
        by_key(store, specs["failed"].key())


def test_best_is_the_most_accurate_run_that_still_has_its_model(tmp_path) -> None:
    store, specs = _store(tmp_path)
    assert best(store, "s").record.key == specs["fashion"].key()  # 97 %; the 99 % run has none
    assert best(store, "s", "grid").record.key == specs["adam"].key()
    assert best(store, "s", dataset="mnist").record.key == specs["adam"].key()
    with pytest.raises(SelectionError, match="study 't' has no finished run"):
        best(store, "t")
    with pytest.raises(SelectionError, match="study 'nope'"):
        best(store, "nope")


def test_a_model_stored_as_a_path_relative_to_another_folder_is_found_beside_the_store(
    tmp_path,
) -> None:
    store, specs = _store(tmp_path)
    relative = f"results/checkpoints/{specs['adam'].key()}.model.pt"  # as a study stores it
    store.set_model_path(specs["adam"].key(), relative)
    chosen = by_key(store, specs["adam"].key())
    assert chosen.path == checkpoint_dir_for(store.path) / Path(relative).name


def test_a_model_path_must_exist(tmp_path) -> None:
    with pytest.raises(SelectionError, match="no such model file") as error:
        model_path(tmp_path / "nothing.model.pt")
    assert error.value.flag == "--model"


def _headline_store(tmp_path: Path) -> tuple[Store, dict[str, RunSpec]]:
    """Study 'h' on MNIST: a ResNet grid ('q1a': sgd over two seeds, mean 98.5 %; adam 97 %),
    an SVM whose one run (99.2 %) beats the grid's best, and a timed Q2 devices experiment
    (cpu / cuda, 99.6 %), every run with its model file (issue 24)."""
    store = Store(tmp_path / "results" / "store.db")
    specs = {
        "sgd0": RunSpec(optimizer="sgd"), "sgd1": RunSpec(optimizer="sgd", seed=1),
        "adam": RunSpec(optimizer="adam"), "svm": RunSpec(model="svm"),
        "cpu": RunSpec(batch_size=64, device="cpu"), "cuda": RunSpec(batch_size=64, device="cuda"),
    }  # fmt: skip
    accuracy = {"sgd0": 98.0, "sgd1": 99.0, "adam": 97.0, "svm": 99.2, "cpu": 99.6, "cuda": 99.5}
    store.register("h", "q1a", [specs[n] for n in ("sgd0", "sgd1", "adam")])
    store.register("h", "svm", [specs["svm"]])
    store.register("h", "devices", [specs["cpu"], specs["cuda"]])
    directory = checkpoint_dir_for(store.path)
    directory.mkdir(parents=True)
    for name, spec in specs.items():
        path = directory / f"{spec.key()}.model.pt"
        path.write_bytes(b"m")
        assert store.claim(spec.key())
        store.finish(spec.key(), RunResult(spec.to_dict(), test_accuracy=accuracy[name],
                                           model_path=str(path), device=spec.device))  # fmt: skip
    return store, specs


def test_best_is_what_the_report_headline_names_not_an_svm_or_a_timed_run(tmp_path) -> None:
    from mnistbench.report.build import build_report

    store, specs = _headline_store(tmp_path)
    headline = build_report(store, "h", plots=False).headline
    named = next(i for i in headline if i.topic == "best" and i.data["dataset"] == "mnist")
    assert named.data["experiment"] == "q1a"
    for chosen in (best(store, "h"), best(store, "h", dataset="mnist"), best(store, None)):
        assert chosen.record.key == specs["sgd1"].key()  # the best seed of the best config
        assert chosen.record.key in named.runs
    assert chosen.why.startswith(f"run {specs['sgd1'].key()} (resnet18 mnist B32 sgd")
    assert "experiment q1a): the highest mean test accuracy, 98.50 % over 2 seeds" in chosen.why
    assert "among 2 finished configs of the report's headline experiments (q1a:" in chosen.why
    # Within one experiment: its best config by mean, whatever its kind.
    within = best(store, "h", "devices")
    assert within.record.key == specs["cpu"].key()
    assert within.why.endswith("99.60 % over 1 seed, among 2 finished configs of devices")
    assert best(store, "h", "svm").record.key == specs["svm"].key()


def test_best_takes_the_next_config_when_the_best_has_no_model_left(tmp_path) -> None:
    store, specs = _headline_store(tmp_path)
    for name in ("sgd0", "sgd1"):
        store.set_model_path(specs[name].key(), None)
    chosen = best(store, "h", "q1a")
    assert chosen.record.key == specs["adam"].key()
    assert chosen.why.endswith("of q1a; the 1 more accurate config(s) have no model file left")
