"""The executor seam: an executor is one class and one EXECUTORS entry, and run_study and
`study run --executor` find it there. The executor here lives only in this test; nothing else in
the package knows it."""

from __future__ import annotations

from pathlib import Path

import pytest

from mnistbench.cli import main
from mnistbench.result import RunResult
from mnistbench.study import executors
from mnistbench.study.file import StudySpec, load_study
from mnistbench.study.run import expand, run_study
from mnistbench.study.store import Store
from tests.study.test_executors import THREE_RUNS


class ReverseExecutor(executors.Executor):
    """The runs last to first, in this process, each 'trained' at once: what an executor must do
    is claim each run through the context and record it there."""

    name = "reverse"
    help = "the runs last to first (a test's)"
    finished: list[str] = []  # noqa: RUF012 -- the keys in the order recorded, for the test
    options: executors.ExecutorOptions | None = None

    @classmethod
    def from_options(cls, options: executors.ExecutorOptions) -> executors.Executor:
        cls.options = options
        return cls()

    def run(
        self,
        todo: list[executors.RunToDo],
        context: executors.ExecutorContext,
        study: StudySpec,
    ) -> None:
        for run in reversed(todo):
            if not context.claim(run):
                continue
            context.reporter.run_started(run.spec.label())
            result = RunResult(spec=run.spec.to_dict(), test_accuracy=90.0, train_seconds=0.1)
            context.finish(run, result, None)
            self.finished.append(run.key)


@pytest.fixture
def reverse(monkeypatch: pytest.MonkeyPatch) -> type[ReverseExecutor]:
    """ReverseExecutor registered for this test only, with lists of its own."""

    class Reverse(ReverseExecutor):
        finished: list[str] = []  # noqa: RUF012 -- see ReverseExecutor

    monkeypatch.setitem(executors.EXECUTORS, Reverse.name, Reverse)
    return Reverse


@pytest.fixture
def study_file(tmp_path: Path) -> Path:
    path = tmp_path / "three.toml"
    path.write_text(THREE_RUNS)
    return path


def _stored(store_path: Path) -> dict[str, str]:
    with Store(store_path) as store:
        return {record.key: record.status for record in store.runs("three")}


def test_run_study_runs_a_registered_executor_by_name(tmp_path, study_file, reverse) -> None:
    study = load_study(study_file)
    keys = [run.key for run in expand(study)]
    store_path = tmp_path / "store.db"

    outcome = run_study(study, store_path, executor="reverse", jobs=3, ray_address="ADDR")

    assert (outcome.done, outcome.failed, outcome.already_done) == (3, 0, 0)
    assert reverse.finished == keys[::-1]
    assert _stored(store_path) == dict.fromkeys(keys, "done")
    assert reverse.options == executors.ExecutorOptions(jobs=3, ray_address="ADDR")
    again = run_study(study, store_path, executor="reverse")  # the store has them all now
    assert (again.done, again.already_done, reverse.finished) == (0, 3, keys[::-1])


def test_study_run_offers_and_runs_a_registered_executor(
    tmp_path, study_file, reverse, monkeypatch, capsys
) -> None:
    monkeypatch.setattr("mnistbench.cli.console.load_or_fetch", lambda name, root: None)
    with pytest.raises(SystemExit) as shown:
        main(["study", "run", "--help"])
    assert shown.value.code == 0
    assert "reverse: the runs last to first" in " ".join(capsys.readouterr().out.split())

    store_path = tmp_path / "store.db"
    args = ["study", "run", str(study_file), "--store", str(store_path), "--quiet"]
    assert main([*args, "--executor", "reverse", "--jobs", "2"]) == 0
    keys = [run.key for run in expand(load_study(study_file))]
    assert reverse.finished == keys[::-1]
    assert reverse.options == executors.ExecutorOptions(jobs=2, ray_address=None)
    assert _stored(store_path) == dict.fromkeys(keys, "done")


def test_an_unknown_executor_is_refused_before_any_work(tmp_path, study_file) -> None:
    store_path = tmp_path / "store.db"
    with pytest.raises(ValueError, match="no executor 'slurm'; choose from local, ray"):
        run_study(load_study(study_file), store_path, executor="slurm")
    assert not store_path.exists()


def test_an_executor_instance_is_used_as_it_is(tmp_path, study_file) -> None:
    class Count(ReverseExecutor):
        finished: list[str] = []  # noqa: RUF012 -- its own list

    outcome = run_study(load_study(study_file), tmp_path / "store.db", executor=Count())
    assert outcome.done == 3 and len(Count.finished) == 3
