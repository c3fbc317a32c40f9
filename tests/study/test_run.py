"""The study runner for real: real processes, a real SQLite store, real (tiny) training."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from mnistbench.data import load_dataset
from mnistbench.engines import run_spec
from mnistbench.progress import Reporter
from mnistbench.study.executors import local, processes
from mnistbench.study.file import load_study
from mnistbench.study.run import checkpoint_dir_for, expand, run_study
from mnistbench.study.store import Store
from tests.conftest import Logs

pytestmark = pytest.mark.network  # runs on the real datasets (fetched once per session)

TINY = """
[study]
name = "tiny"

[defaults]
dataset = "mnist"
model = "resnet18"
epochs = 1
train_limit = 64
test_limit = 64
batch_size = 32
threads = 1

[experiments.grid]
grid = { optimizer = ["sgd", "adam"] }

[experiments.svm]
base = { model = "svm", train_limit = 300, test_limit = 100 }
grid = { kernel = ["rbf"] }

[experiments.devices]
grid = { device = ["cpu", "cuda"] }

[experiments.broken]
base = { model = "svm", features = "pca:5000" }
"""


def _study(tmp_path: Path, text: str = TINY):
    path = tmp_path / "tiny.toml"
    path.write_text(text)
    return load_study(path)


def _statuses(store_path: Path) -> dict[str, str]:
    with Store(store_path) as store:
        return {r.key: r.status for r in store.runs()}


def test_runs_what_is_missing_and_records_failures_and_skips(tmp_path, real_data_root):
    study = _study(tmp_path)
    store_path = tmp_path / "results" / "store.db"
    outcome = run_study(study, store_path, root=str(real_data_root))
    has_cuda = torch.cuda.is_available()
    assert (outcome.done, outcome.failed, outcome.skipped) == (4 + has_cuda, 1, 1 - has_cuda)
    with Store(store_path) as store:
        counts = store.counts("tiny")
        records = {
            r.spec.device if not r.spec.is_svm else r.spec.features: r
            for r in store.runs("tiny", "devices")
        }
        broken = store.runs("tiny", "broken")[0]
    if has_cuda:
        assert records["cuda"].status == "done"
        assert counts[("tiny", "devices")]["done"] == 2
    else:
        assert records["cuda"].status == "skipped" and "CUDA" in records["cuda"].error
        assert counts[("tiny", "devices")]["skipped"] == 1
    assert broken.status == "failed"
    assert "pca:5000" in broken.error or "n_components" in broken.error
    assert broken.traceback and "Traceback" in broken.traceback

    # Again: nothing runs; the failure stays until --retry-failed.
    again = run_study(study, store_path, root=str(real_data_root))
    assert (again.done, again.failed, again.skipped) == (0, 0, 0)
    retried = run_study(study, store_path, root=str(real_data_root), retry_failed=True)
    assert retried.failed == 1
    with Store(store_path) as store:
        assert store.runs("tiny", "broken")[0].attempt == 2


def test_jobs_split_threads_between_worker_processes(tmp_path, real_data_root, monkeypatch):
    # The study asks for 1 thread per run; the machine is said to have 8 cores: 2 jobs get 4 each.
    monkeypatch.setattr(processes, "default_threads", lambda: 8)
    study = _study(tmp_path, TINY.replace("threads = 1", 'threads = 1\ndevice = "cpu"'))
    store_path = tmp_path / "store.db"
    outcome = run_study(study, store_path, only=["grid"], jobs=2, root=str(real_data_root))
    assert outcome.done == 2
    with Store(store_path) as store:
        results = [r.result for r in store.runs("tiny", "grid")]
    assert all(r.status == "ok" for r in results)
    assert {r.environment["worker_pid"] for r in results} != {os.getpid()}
    assert [r.environment["threads"] for r in results] == [4, 4]


def test_jobs_auto_runs_one_worker_per_core_up_to_the_runs_to_do(
    tmp_path, real_data_root, monkeypatch
):
    # 4 cores and plenty of memory, 2 CPU runs: 2 workers (not 4), the cores split between them.
    monkeypatch.setattr(local, "default_threads", lambda: 4)
    monkeypatch.setattr(processes, "default_threads", lambda: 4)
    monkeypatch.setattr("mnistbench.measure.available_memory", lambda: 64 * 2**30)
    study = _study(tmp_path, TINY.replace("threads = 1", 'threads = 1\ndevice = "cpu"'))
    store_path = tmp_path / "store.db"
    reporter = Logs()
    outcome = run_study(
        study, store_path, only=["grid"], jobs="auto", root=str(real_data_root), reporter=reporter
    )
    assert outcome.done == 2
    with Store(store_path) as store:
        results = [r.result for r in store.runs("tiny", "grid")]
    assert {r.environment["worker_pid"] for r in results} != {os.getpid()}
    assert [r.environment["threads"] for r in results] == [2, 2]
    assert [r.environment["concurrency"]["runs_at_once"] for r in results] == [2, 2]
    assert any(line.startswith("--jobs auto: 2 run(s) at once") for line in reporter.lines)


@pytest.mark.slow
def test_ray_executor_with_a_local_ray_instance(tmp_path, real_data_root):
    pytest.importorskip("ray")
    study = _study(tmp_path)
    store_path = tmp_path / "store.db"
    outcome = run_study(
        study, store_path, only=["grid", "svm", "broken"], executor="ray", root=str(real_data_root)
    )
    assert (outcome.done, outcome.failed) == (3, 1)
    with Store(store_path) as store:
        broken = store.runs("tiny", "broken")[0]
    # A failing Ray task is recorded with the worker's own traceback, not just Ray's wrapper.
    assert broken.status == "failed" and "pca:5000" in broken.traceback
    assert "Traceback" in broken.traceback and "engines/svm/train.py" in broken.traceback
    # On CPU, Ray gives the accuracies the local executor gives for the same seeds.
    local_path = tmp_path / "local.db"
    run_study(study, local_path, only=["grid", "svm"], root=str(real_data_root))
    with Store(store_path) as on_ray, Store(local_path) as local:
        for record in on_ray.runs():
            if record.status == "done":
                assert record.result.test_accuracy == local.get(record.key).result.test_accuracy


KILLABLE = """
[study]
name = "killable"

[defaults]
dataset = "mnist"
model = "resnet18"
threads = 1
batch_size = 32
test_limit = 200

[experiments.quick]
base = { epochs = 1, train_limit = 64 }
grid = { optimizer = ["sgd", "adam"] }

[experiments.long]
base = { epochs = 3, train_limit = 640, optimizer = "sgd", lr = 0.01 }
"""


@pytest.mark.slow
def test_sigkill_mid_run_then_rerun_resumes(tmp_path, real_data_root):
    study_file = tmp_path / "killable.toml"
    study_file.write_text(KILLABLE)
    store_path = tmp_path / "store.db"
    command = [
        sys.executable, "-m", "mnistbench", "study", "run", str(study_file),
        "--store", str(store_path), "--root", str(real_data_root), "--quiet",
    ]  # fmt: skip
    (long_run,) = expand(load_study(study_file), ["long"])  # 'auto' as this machine resolves it
    long_spec = long_run.spec
    checkpoint = checkpoint_dir_for(store_path) / f"{long_spec.key()}.ckpt.pt"
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()

    with Store(store_path) as store:
        before = {r.key: r for r in store.runs()}
    assert before[long_spec.key()].status == "running"
    finished_before = {
        k: json.dumps(r.result.to_dict()) for k, r in before.items() if r.status == "done"
    }
    assert len(finished_before) == 2

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    with Store(store_path) as store:
        after = store.runs()
    assert len(after) == 3 and len({r.key for r in after}) == 3
    assert all(r.status == "done" for r in after)
    for record in after:
        if record.key in finished_before:
            assert json.dumps(record.result.to_dict()) == finished_before[record.key]
    long_record = next(r for r in after if r.key == long_spec.key())
    assert long_record.result.resumed_from_epoch >= 1
    assert len(long_record.result.history) == 3 and long_record.attempt == 2
    # The killed-and-resumed run ends where an uninterrupted one does (CPU, one thread: bit-exact).
    reference = run_spec(long_spec, load_dataset("mnist", real_data_root), tmp_path / "reference")
    assert long_record.result.test_accuracy == reference.test_accuracy
    assert [e.train_loss for e in long_record.result.history] == [
        e.train_loss for e in reference.history
    ]


def test_cli_dry_run_and_status(tmp_path, real_data_root):
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY)
    store_path = tmp_path / "store.db"

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "mnistbench", "study", *args], capture_output=True, text=True
        )

    dry = cli("run", str(study_file), "--store", str(store_path), "--dry-run")
    assert dry.returncode == 0 and "6 pending" in dry.stdout
    assert not store_path.exists(), "a dry run writes nothing"
    ran = cli("run", str(study_file), "--store", str(store_path), "--only", "grid",
              "--root", str(real_data_root), "--quiet")  # fmt: skip
    assert ran.returncode == 0, ran.stderr
    dry = cli("run", str(study_file), "--store", str(store_path), "--dry-run")
    assert "2 done" in dry.stdout and "4 pending" in dry.stdout
    status = cli("status", "--store", str(store_path))
    assert status.returncode == 0 and "grid" in status.stdout
    bad = cli("run", str(study_file), "--only", "nope", "--store", str(store_path))
    assert bad.returncode == 2 and "no experiment 'nope'" in bad.stderr


@pytest.mark.slow
def test_two_study_runs_on_one_store_never_run_a_run_twice(tmp_path, real_data_root):
    study_file = tmp_path / "tiny.toml"
    study_file.write_text(TINY.replace('grid = { optimizer = ["sgd", "adam"] }',
                                       'grid = { optimizer = ["sgd", "adam", "adamw"], lr = [1e-3, 1e-4] }'))  # fmt: skip
    store_path = tmp_path / "store.db"
    command = [
        sys.executable, "-m", "mnistbench", "study", "run", str(study_file), "--only", "grid",
        "--store", str(store_path), "--root", str(real_data_root), "--quiet",
    ]  # fmt: skip
    processes = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].decode() for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    with Store(store_path) as store:
        records = store.runs("tiny", "grid")
    assert len(records) == 6 and all(r.status == "done" for r in records)
    assert all(r.attempt == 1 for r in records), "a run was claimed (and executed) twice"
    assert sum("run(s) done" in o and "0 run(s) done" not in o for o in outputs) >= 1
    # Each says what became of every run: done by it, found done, or left to the other one.
    summary = re.compile(
        r"(\d+) run\(s\) done, 0 failed, 0 skipped, (\d+) already in the store"
        r"(?:, (\d+) left to another process)?"
    )
    for output in outputs:
        done, already, elsewhere = summary.search(output).groups()
        assert int(done) + int(already) + int(elsewhere or 0) == 6, output


CRASHABLE = """
[study]
name = "crashable"

[defaults]
dataset = "mnist"
model = "resnet18"
device = "cpu"
epochs = 3
train_limit = 640
test_limit = 100
batch_size = 32

[experiments.grid]
grid = { lr = [1e-3, 2e-3, 3e-3] }
"""


@pytest.mark.slow
def test_a_killed_worker_fails_its_runs_and_the_study_goes_on(tmp_path, real_data_root):
    """SIGKILL one --jobs worker mid-run: the runs it took down are failed (with why), none is
    left 'running', and fresh workers run the rest of the queue."""
    import multiprocessing
    import threading

    study = _study(tmp_path, CRASHABLE)
    store_path = tmp_path / "store.db"
    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.update(
            result=run_study(study, store_path, jobs=2, root=str(real_data_root))
        )
    )
    thread.start()
    deadline = time.monotonic() + 120
    while (
        list(_statuses(store_path).values()).count("running") < 2 if store_path.exists() else True
    ):
        assert time.monotonic() < deadline, "the two workers never started"
        time.sleep(0.2)
    time.sleep(2)  # both workers are training now
    workers = [p for p in multiprocessing.active_children() if p.name.startswith("SpawnProcess")]
    os.kill(workers[0].pid, signal.SIGKILL)
    thread.join(timeout=300)
    assert not thread.is_alive()
    result = outcome["result"]
    assert result.failed >= 1 and result.done >= 1 and result.done + result.failed == 3
    with Store(store_path) as store:
        records = store.runs("crashable")
    assert {r.status for r in records} <= {"done", "failed"}
    assert all("worker process died" in r.error for r in records if r.status == "failed")


class _CtrlCAtFirstEpoch(Reporter):
    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        raise KeyboardInterrupt


def test_ctrl_c_gives_the_claim_back_and_the_next_run_does_it(tmp_path, real_data_root):
    study = _study(tmp_path, TINY.replace("threads = 1", 'threads = 1\ndevice = "cpu"'))
    store_path = tmp_path / "store.db"
    with pytest.raises(KeyboardInterrupt):
        run_study(study, store_path, only=["grid"], root=str(real_data_root),
                  reporter=_CtrlCAtFirstEpoch())  # fmt: skip
    statuses = _statuses(store_path)
    assert sorted(statuses.values()) == ["pending", "pending"], "nothing left 'running'"
    with Store(store_path) as store:
        assert all(r.pid is None and r.heartbeat_at is None for r in store.runs())
    outcome = run_study(study, store_path, only=["grid"], root=str(real_data_root))
    assert (outcome.done, outcome.not_claimed) == (2, 0)
    assert set(_statuses(store_path).values()) == {"done"}


def test_a_real_study_goes_through_the_report_with_the_stores_numbers(tmp_path, real_data_root):
    """Engine -> store -> report, end to end: every accuracy the report's tables show is one the
    store holds, and every finished run is in one of them."""
    from mnistbench.report import build_report, write_report

    study = _study(tmp_path, TINY.replace("threads = 1", 'threads = 1\ndevice = "cpu"'))
    store_path = tmp_path / "store.db"
    run_study(study, store_path, only=["grid", "svm"], root=str(real_data_root))
    with Store(store_path) as store:
        stored = sorted(r.result.test_accuracy for r in store.runs("tiny"))
        report = build_report(store, "tiny")
    assert len(stored) == 3
    shown = sorted(
        value
        for section in report.sections
        for value in section.table.values.to_numpy().ravel()
        if value in stored
    )
    assert shown == stored
    write_report(report, tmp_path / "out", ["csv", "md"])
    import csv

    with open(tmp_path / "out" / "runs.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(float(row["test_accuracy"]) for row in rows) == stored
    markdown = (tmp_path / "out" / "report.md").read_text()
    assert all(f"{accuracy:.2f}" in markdown for accuracy in stored)


RAY_LONG = """
[study]
name = "raylong"

[defaults]
dataset = "mnist"
model = "resnet18"
device = "cpu"
threads = 1
batch_size = 32
test_limit = 100

[experiments.long]
base = { epochs = 3, train_limit = 800, optimizer = "sgd", lr = 0.01 }
resources = { num_cpus = 1, max_retries = 2 }

[experiments.quick]
base = { epochs = 1, train_limit = 64 }
"""


def _ray_task_pids() -> list[int]:
    """Pids of Ray worker processes running run_in_worker (Ray names them in their cmdline)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if b"ray::run_in_worker" in cmdline:
                pids.append(int(proc.name))
    return pids


@pytest.mark.slow
def test_ray_cluster_via_cli_retries_a_killed_worker_and_records_the_run_once(
    tmp_path, real_data_root
):
    """`ray start --head`, then `study run --executor ray --ray-address auto`; SIGKILL the worker
    of the long run: Ray retries it (max_retries) and the store records it once, done."""
    ray = Path(sys.executable).with_name("ray")
    if not ray.exists():
        pytest.skip("the ray CLI is not installed (pip install 'mnistbench[ray]')")
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    started = subprocess.run(
        [str(ray), "start", "--head", "--num-cpus", "2", "--include-dashboard", "false"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        study_file = tmp_path / "raylong.toml"
        study_file.write_text(RAY_LONG)
        store_path = tmp_path / "store.db"
        command = [
            sys.executable, "-m", "mnistbench", "study", "run", str(study_file), "--store",
            str(store_path), "--root", str(real_data_root), "--executor", "ray",
            "--ray-address", "auto", "--quiet",
        ]  # fmt: skip
        driver = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        long_key = load_study(study_file).experiment("long").specs()[0].key()
        checkpoint = checkpoint_dir_for(store_path).resolve() / f"{long_key}.ckpt.pt"
        deadline = time.monotonic() + 360  # a loaded 2-core machine is slow
        while not checkpoint.exists():  # the long run is past its first epoch
            assert driver.poll() is None, driver.stdout.read().decode()
            assert time.monotonic() < deadline, "the long run never checkpointed"
            time.sleep(0.1)
        killed = _ray_task_pids()
        assert killed, "no Ray worker running run_in_worker found"
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
        output, _ = driver.communicate(timeout=300)
        assert driver.returncode == 0, output.decode()
        with Store(store_path) as store:
            records = {r.key: r for r in store.runs("raylong")}
        assert {r.status for r in records.values()} == {"done"}
        long_run = records[long_key]
        assert long_run.attempt == 1, "recorded once: Ray retried it, the store did not"
        assert long_run.result.environment["worker_pid"] not in killed
        assert long_run.result.resumed_from_epoch >= 1  # the retry resumed from the checkpoint
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, env=env, timeout=120)


def test_a_study_keeps_the_best_model_and_a_set_variant_is_new_runs(tmp_path, real_data_root):
    study = _study(tmp_path, TINY.replace("threads = 1", 'threads = 1\ndevice = "cpu"'))
    assert study.keep_models == "best"
    store_path = tmp_path / "store.db"
    assert run_study(study, store_path, only=["grid"], root=str(real_data_root)).done == 2
    variant = study.with_overrides({"batch_size": 16}, only=["grid"])
    assert run_study(variant, store_path, only=["grid"], root=str(real_data_root)).done == 2
    with Store(store_path) as store:
        runs = store.runs("tiny", "grid")
    assert sorted(r.spec.batch_size for r in runs) == [16, 16, 32, 32]
    best = max(runs, key=lambda r: r.result.test_accuracy)
    models = sorted(checkpoint_dir_for(store_path).glob("*.model.pt"))
    assert [m.name for m in models] == [f"{best.key}.model.pt"], "one model: the best's"
    assert [r.key for r in runs if r.result.model_path] == [best.key]
