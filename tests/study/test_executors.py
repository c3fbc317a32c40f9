"""The process executor's bookkeeping: a worker pool that breaks, and what each stored result says
about the runs it shared the machine with (no real training)."""

import threading
import time
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mnistbench.progress import Reporter
from mnistbench.result import RunResult
from mnistbench.study.executors import processes
from mnistbench.study.file import load_study
from mnistbench.study.run import Heartbeat, RunContext, StudyOutcome, plan
from mnistbench.study.scheduler import Slots
from mnistbench.study.store import Store

THREE_RUNS = """
[study]
name = "three"

[defaults]
model = "svm"
dataset = "mnist"
train_limit = 100
test_limit = 100

[experiments.grid]
grid = { C = [1.0, 2.0, 3.0] }
"""


class _PoolThatBreaks:
    """A pool whose first worker dies at once, and which refuses the next submission the way a
    broken ProcessPoolExecutor does (the death noticed between two submissions)."""

    def __init__(self) -> None:
        self.submitted = 0

    def submit(self, *args: object) -> Future:
        self.submitted += 1
        if self.submitted > 1:
            raise BrokenProcessPool("A child process terminated abruptly")
        future: Future = Future()
        future.set_exception(BrokenProcessPool("A child process terminated abruptly"))
        return future


def test_a_run_the_broken_pool_refused_goes_back_to_the_queue_and_to_pending(tmp_path: Path):
    path = tmp_path / "three.toml"
    path.write_text(THREE_RUNS)
    study = load_study(path)
    with Store(tmp_path / "store.db") as store, Heartbeat(store) as heartbeat:
        runs = plan(study, store)
        context = RunContext(
            store, heartbeat, StudyOutcome(), Reporter(), False, None, tmp_path / "store.db"
        )
        worker_plan = processes._WorkerPlan(
            {run.key: None for run in runs}, Slots(cpu_workers=2, gpus=0), 1, 1, str(tmp_path)
        )
        queue = list(runs)
        broken = processes._feed_workers(
            _PoolThatBreaks(), processes.GpuThreads(1), queue, worker_plan, context
        )
        statuses = {run.key: store.get(run.key).status for run in runs}
        first_error = store.get(runs[0].key).error

    assert broken
    # the first run was in the dead worker: failed, and saying why
    assert statuses[runs[0].key] == "failed" and "worker process died" in first_error
    # the refused run and the one never tried wait, in order, for the next pool's workers
    assert [run.key for run in queue] == [runs[1].key, runs[2].key]
    assert statuses[runs[1].key] == statuses[runs[2].key] == "pending"
    assert worker_plan.slots.idle() and not heartbeat.keys
    assert context.outcome.failed == 1


class _PoolThatTakesFiveSeconds:
    """A pool whose every run has finished five seconds (of the driver's clock) after its
    submission: the driver places the next run only then."""

    def __init__(self, clock: list[float]) -> None:
        self.clock = clock

    def submit(self, function: object, spec: dict, *args: object) -> Future:
        self.clock[0] += 5
        future: Future = Future()
        future.set_result(RunResult(spec=spec, test_accuracy=90.0, train_seconds=1.0).to_dict())
        return future


def test_each_stored_result_says_how_long_it_lived_and_beside_how_many_runs(tmp_path: Path):
    path = tmp_path / "three.toml"
    path.write_text(THREE_RUNS)
    clock = [0.0]
    with Store(tmp_path / "store.db") as store, Heartbeat(store) as heartbeat:
        runs = plan(load_study(path), store)
        context = RunContext(
            store, heartbeat, StudyOutcome(), Reporter(), False, None, tmp_path / "store.db"
        )
        slots = Slots(cpu_workers=2, gpus=0, clock=lambda: clock[0])
        worker_plan = processes._WorkerPlan({run.key: None for run in runs}, slots, 1, 1, "")
        assert not processes._feed_workers(
            _PoolThatTakesFiveSeconds(clock),
            processes.GpuThreads(1),
            list(runs),
            worker_plan,
            context,
        )
        stored = [store.get(run.key).result.environment["concurrency"] for run in runs]
    # Two slots: the first two runs placed at 0 s and 5 s and recorded at 10 s; the third then.
    assert stored == [
        {"runs_at_once": 2, "life_seconds": 10.0, "gpu_runs_alongside": 0},
        {"runs_at_once": 2, "life_seconds": 5.0, "gpu_runs_alongside": 0},
        {"runs_at_once": 1, "life_seconds": 5.0, "gpu_runs_alongside": 0},
    ]


def test_gpu_threads_stop_their_runs_at_the_next_report_when_the_study_stops():
    reported = threading.Event()

    def run_until_stopped(*, reporter):
        for step in range(10_000):
            reporter.update(step, {})
            reported.set()
            time.sleep(0.01)
        return "never stopped"

    threads = processes.GpuThreads(1)
    future = threads.submit(run_until_stopped)
    assert reported.wait(timeout=10)
    threads.stop()  # returns once the run has stopped
    assert isinstance(future.exception(timeout=0), processes.StopRequested)
