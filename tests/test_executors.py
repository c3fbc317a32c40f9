"""The process executor's bookkeeping when its worker pool breaks (no real training)."""

from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from mnistbench import executors
from mnistbench.progress import Reporter
from mnistbench.scheduler import Slots
from mnistbench.store import Store
from mnistbench.study import Heartbeat, RunContext, StudyOutcome, plan
from mnistbench.studyfile import load_study

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
        worker_plan = executors._WorkerPlan(
            {run.key: None for run in runs}, Slots(cpu_workers=2, gpus=0), 1, 1, str(tmp_path)
        )
        queue = list(runs)
        broken = executors._feed_workers(_PoolThatBreaks(), queue, worker_plan, context)
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
