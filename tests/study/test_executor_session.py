"""An executor's session (executors/base.py): one `study run` starts what is dear to start once,
for its grid and every batch of a search's trials, and lets go of it at the end. Stand-ins
count how often a local Ray starts and stops, and how many worker pools are made and shut down
(tests/study/test_search.py runs real workers)."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from mnistbench import engines
from mnistbench.result import RunResult
from mnistbench.study.executors import local, on_ray, processes
from mnistbench.study.file import StudySpec, load_study
from mnistbench.study.run import run_study
from mnistbench.study.search import SearchCounts

SEARCH = """
[study]
name = "session"

[defaults]
dataset = "mnist"
model = "svm"
val_fraction = 0.1

[experiments.grid.grid]
C = [1.0]

[experiments.find.search]
trials = 4
sampler = "random"
parallel = 2

[experiments.find.search.space]
C = { low = 0.1, high = 10.0, log = true }
"""


class FakeRay:
    """What RayExecutor asks of the `ray` module; each task runs at once, in this process."""

    def __init__(self) -> None:
        self.inits = 0
        self.shutdowns = 0
        self.running = False

    def init(self, **kwargs: Any) -> None:
        assert not self.running, "a second Ray started while one runs"
        self.inits += 1
        self.running = True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.running = False

    def remote(self, work: Any) -> Any:
        ray = self

        class Task:
            def options(self, **options: Any) -> Task:
                return self

            def remote(self, *args: Any) -> _Ref:
                assert ray.running, "a task sent to a Ray that is not running"
                return _Ref(work(*args))

        return Task()

    def wait(self, refs: list, num_returns: int) -> tuple[list, list]:
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref: _Ref) -> dict:
        return ref.value


class _Ref:
    """A finished task's object reference (hashable, as Ray's are)."""

    def __init__(self, value: dict) -> None:
        self.value = value


@pytest.fixture
def study(tmp_path: Path) -> StudySpec:
    """SEARCH, loaded: a grid of one run and a search of 2 batches of 2 trials."""
    path = tmp_path / "search.toml"
    path.write_text(SEARCH)
    return load_study(path)


def trained(spec: dict, root: str | None, checkpoints: str | None, threads: int) -> dict:
    """Stands in for engines.run_in_worker: a result at once."""
    accuracy = 90.0 + spec["C"]  # a different value per trial, for the sampler to tell
    return RunResult(spec=spec, test_accuracy=accuracy, val_accuracy=accuracy).to_dict()


@pytest.fixture
def fake_ray(monkeypatch: pytest.MonkeyPatch) -> FakeRay:
    ray = FakeRay()
    monkeypatch.setattr(on_ray, "_ray", lambda: ray)
    monkeypatch.setattr(engines, "run_in_worker", trained)
    return ray


class FakePools:
    """Stands in for ProcessPoolExecutor: each task runs at submit, in this process; counts the
    pools made and shut down, and can raise KeyboardInterrupt (a Ctrl-C) at the Nth submit."""

    def __init__(self) -> None:
        self.made = 0
        self.shut = 0
        self.submits = 0
        self.interrupt_at: int | None = None

    def __call__(self, jobs: int, mp_context: object) -> FakePools:
        self.made += 1
        self.jobs = jobs
        return self

    def submit(self, work: Any, *args: Any) -> Future:
        self.submits += 1
        if self.submits == self.interrupt_at:
            raise KeyboardInterrupt
        future: Future = Future()
        future.set_result(work(*args))
        return future

    def shutdown(self, wait: bool) -> None:
        self.shut += 1


@pytest.fixture
def fake_pools(monkeypatch: pytest.MonkeyPatch) -> FakePools:
    pools = FakePools()
    monkeypatch.setattr(processes.concurrent.futures, "ProcessPoolExecutor", pools)
    monkeypatch.setattr(engines, "run_in_worker", trained)
    # A run in this process (one at a time under --jobs auto) is trained at once too.
    monkeypatch.setattr(local, "cached_dataset", lambda name, root: None)
    monkeypatch.setattr(
        local,
        "run_spec",
        lambda spec, data, checkpoints, reporter: RunResult.from_dict(
            trained(spec.to_dict(), None, None, 1)
        ),
    )
    return pools


def test_a_study_run_starts_one_local_ray_for_its_grid_and_every_batch_of_trials(
    tmp_path: Path, study: StudySpec, fake_ray: FakeRay
) -> None:
    outcome = run_study(study, tmp_path / "runs.db", executor="ray")
    assert outcome.done == 5  # the grid's run and 4 trials
    assert outcome.searches["find"] == SearchCounts(complete=4)  # two batches of 2
    assert (fake_ray.inits, fake_ray.shutdowns) == (1, 1)
    assert not fake_ray.running


def test_outside_a_session_each_run_starts_and_ends_its_own_ray(
    tmp_path: Path, study: StudySpec, fake_ray: FakeRay
) -> None:
    executor = on_ray.RayExecutor()
    for _ in range(2):
        executor.run([], _NoContext(), study)
    assert (fake_ray.inits, fake_ray.shutdowns) == (2, 2)


def test_a_ray_cluster_given_by_address_is_joined_once_and_never_shut_down(
    tmp_path: Path, study: StudySpec, fake_ray: FakeRay
) -> None:
    run_study(study, tmp_path / "runs.db", executor="ray", ray_address="auto")
    assert (fake_ray.inits, fake_ray.shutdowns) == (1, 0)


def test_jobs_2_makes_one_worker_pool_for_the_grid_and_every_batch_of_trials(
    tmp_path: Path, study: StudySpec, fake_pools: FakePools
) -> None:
    outcome = run_study(study, tmp_path / "runs.db", jobs=2)
    assert outcome.searches["find"] == SearchCounts(complete=4)
    assert fake_pools.submits == 5
    assert (fake_pools.made, fake_pools.shut) == (1, 1)


def test_a_ctrl_c_in_a_later_batch_still_shuts_the_kept_workers_down(
    tmp_path: Path, study: StudySpec, fake_pools: FakePools
) -> None:
    fake_pools.interrupt_at = 4  # the grid's run and the first batch went through
    with pytest.raises(KeyboardInterrupt):
        run_study(study, tmp_path / "runs.db", jobs=2)
    assert (fake_pools.made, fake_pools.shut) == (1, 1)


def test_jobs_auto_asks_trials_as_many_at_once_as_it_runs_workers(
    tmp_path: Path, fake_pools: FakePools, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 2 cores, memory to spare: the grid's single run goes in this process, then the search
    # asks 2 trials at a time (not 1) and runs each batch in the same 2 workers.
    monkeypatch.setattr("mnistbench.config.default_threads", lambda: 2)
    monkeypatch.setattr(local, "default_threads", lambda: 2)
    monkeypatch.setattr("mnistbench.measure.available_memory", lambda: 64 * 2**30)
    path = tmp_path / "auto.toml"
    path.write_text(SEARCH.replace("parallel = 2\n", ""))
    outcome = run_study(load_study(path), tmp_path / "runs.db", jobs="auto")
    assert outcome.searches["find"] == SearchCounts(complete=4)
    assert (fake_pools.made, fake_pools.jobs, fake_pools.submits) == (1, 2, 4)


def test_nested_sessions_let_go_when_the_outermost_ends(
    tmp_path: Path, study: StudySpec, fake_ray: FakeRay
) -> None:
    executor = on_ray.RayExecutor()
    with executor.session():
        run_study(study, tmp_path / "runs.db", executor=executor)
        assert fake_ray.running  # the inner session (the study run's) ended: still kept
    assert (fake_ray.inits, fake_ray.shutdowns) == (1, 1)


class _NoContext:
    """A context for a `run` with nothing to do."""

    reporter = None
    root = None
    checkpoints = Path(".")
