"""The results store: registration, claims (live, dead and silent owners), results, concurrency
with real processes, and refusal to touch corrupt, foreign or newer files."""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mnistbench.config import RunSpec
from mnistbench.result import EpochRecord, RunResult
from mnistbench.study.store import STATUSES, Store, StoreError


def spec(seed: int, **changes: object) -> RunSpec:
    return RunSpec(seed=seed, threads=1, **changes)


def result_for(s: RunSpec, status: str = "ok", epochs: int = 2) -> RunResult:
    history = [
        EpochRecord(e, train_loss=1.0 / e, lr=1e-3, eval_split="val", eval_accuracy=90.0 + e)
        for e in range(1, epochs + 1)
    ]
    return RunResult(
        spec=s.to_dict(),
        status=status,
        test_accuracy=97.25,
        train_seconds=1.5,
        history=history,
        confusion_matrix=[[5, 1], [0, 6]],
        environment={"torch": "2.x", "threads": 1},
        message="diverged at step 7" if status != "ok" else None,
    )


def forge(path: Path, key: str, **columns: object) -> None:
    """Rewrite a run's columns behind the store's back, as another process would have left them."""
    conn = sqlite3.connect(path, isolation_level=None)
    assignments = ", ".join(f"{name} = ?" for name in columns)
    conn.execute(f"UPDATE runs SET {assignments} WHERE key = ?", (*columns.values(), key))
    conn.close()


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(proc.stdout)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    with Store(tmp_path / "sub" / "results.db") as opened:
        yield opened


def test_new_store_is_wal_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "results.db"
    with Store(path) as first:
        first.register("s", "e", [spec(0)])
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA user_version").fetchone()[0] == Store.SCHEMA_VERSION
    conn.close()
    with Store(path) as again:
        assert [r.key for r in again.runs()] == [spec(0).key()]


def test_register_is_idempotent_and_never_resets(store: Store) -> None:
    specs = [spec(i) for i in range(3)]
    store.register("study", "exp", specs)
    key = specs[0].key()
    assert store.claim(key)
    store.finish(key, result_for(specs[0]))
    store.register("study", "exp", specs)  # again: nothing duplicated, nothing reset

    records = store.runs("study", "exp")
    assert [r.key for r in records] == [s.key() for s in specs]
    assert [r.status for r in records] == ["done", "pending", "pending"]
    assert records[0].result == result_for(specs[0])
    assert records[0].attempt == 1
    assert records[1].spec == specs[1]


def test_membership_across_experiments_and_studies(store: Store) -> None:
    shared, only_a, only_b = spec(0), spec(1), spec(2)
    store.register("s1", "a", [only_a, shared])
    store.register("s1", "b", [shared, only_b])
    store.register("s2", "c", [shared])

    assert store.experiments() == [("s1", "a"), ("s1", "b"), ("s2", "c")]
    assert store.experiments("s2") == [("s2", "c")]
    assert [r.key for r in store.runs("s1", "b")] == [shared.key(), only_b.key()]
    assert [r.key for r in store.runs(experiment="c")] == [shared.key()]
    # A run in several experiments is listed once, where it was first registered.
    assert [r.key for r in store.runs("s1")] == [only_a.key(), shared.key(), only_b.key()]
    assert len(store.runs()) == 3
    # Finishing the shared run counts for every experiment that holds it.
    assert store.claim(shared.key())
    store.finish(shared.key(), result_for(shared))
    counts = store.counts()
    assert counts[("s1", "a")]["done"] == counts[("s1", "b")]["done"] == 1
    assert counts[("s2", "c")] == {
        "pending": 0,
        "running": 0,
        "done": 1,
        "failed": 0,
        "skipped": 0,
        "pruned": 0,
    }


def test_claim_finish_round_trip(store: Store) -> None:
    s = spec(0)
    store.register("s", "e", [s])
    before = time.time()
    assert store.claim(s.key())
    running = store.get(s.key())
    assert running is not None
    assert running.status == "running"
    assert (running.pid, running.host, running.attempt) == (os.getpid(), socket.gethostname(), 1)
    assert running.started_at is not None and running.started_at >= before
    assert running.heartbeat_at == running.started_at

    result = result_for(s, epochs=3)
    store.finish(s.key(), result)
    record = store.get(s.key())
    assert record is not None
    assert record.status == "done"
    assert record.result == result
    assert record.finished_at is not None and record.finished_at >= record.started_at
    assert store.get(s.key()).result.history == result.history
    assert not store.claim(s.key())  # done runs are never claimed again

    # finish() replaces the earlier result and its history rather than appending to them.
    store.finish(s.key(), result_for(s, epochs=1))
    assert store.get(s.key()).result.history == result_for(s, epochs=1).history
    assert store.get("0" * 16) is None


def test_finish_maps_result_status(store: Store) -> None:
    diverged, failed = spec(0), spec(1)
    store.register("s", "e", [diverged, failed])
    for s, status in ((diverged, "diverged"), (failed, "failed")):
        assert store.claim(s.key())
        store.finish(s.key(), result_for(s, status=status))
    assert store.get(diverged.key()).status == "done"
    assert store.get(diverged.key()).result.status == "diverged"
    record = store.get(failed.key())
    assert record.status == "failed"
    assert record.error == "diverged at step 7"  # the result's message
    assert record.result.status == "failed"


def test_claim_refuses_live_owner_and_takes_over_dead_one(store: Store, tmp_path: Path) -> None:
    s = spec(0)
    store.register("s", "e", [s])
    assert store.claim(s.key())
    assert not store.claim(s.key())  # held by this (live) process

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        forge(store.path, s.key(), pid=sleeper.pid)
        assert not store.claim(s.key())  # another live process on this host, fresh heartbeat
    finally:
        sleeper.kill()
        sleeper.wait()
    assert store.claim(s.key(), stale_after=3600)  # heartbeat is fresh, but the owner is gone
    assert store.get(s.key()).attempt == 2

    forge(store.path, s.key(), pid=dead_pid(), heartbeat_at=time.time())
    assert store.claim(s.key(), stale_after=3600)
    record = store.get(s.key())
    assert (record.pid, record.attempt) == (os.getpid(), 3)


def test_dead_pid_on_another_host_is_not_trusted(store: Store) -> None:
    s = spec(0)
    store.register("s", "e", [s])
    assert store.claim(s.key())
    # That pid means nothing here: only a silent heartbeat lets us take a remote claim.
    forge(store.path, s.key(), host="elsewhere", pid=dead_pid(), heartbeat_at=time.time())
    assert not store.claim(s.key())
    forge(store.path, s.key(), heartbeat_at=time.time() - 600)
    assert not store.claim(s.key(), stale_after=3600)
    assert store.claim(s.key(), stale_after=120)
    assert store.get(s.key()).host == socket.gethostname()


def test_heartbeat_keeps_claim_and_reports_loss(store: Store) -> None:
    s = spec(0)
    store.register("s", "e", [s])
    assert store.claim(s.key())
    forge(store.path, s.key(), host="elsewhere", heartbeat_at=time.time() - 600)
    assert not store.heartbeat(s.key())  # no longer ours: nothing refreshed
    assert store.get(s.key()).heartbeat_at < time.time() - 500

    assert store.claim(s.key(), stale_after=60)  # silent claim taken over
    forge(store.path, s.key(), heartbeat_at=time.time() - 600)
    assert store.heartbeat(s.key())
    assert store.get(s.key()).heartbeat_at > time.time() - 5
    forge(store.path, s.key(), host="elsewhere")
    assert not store.claim(s.key(), stale_after=60)  # fresh heartbeat: owner is alive


def test_failed_runs_keep_error_and_retry_only_when_asked(store: Store) -> None:
    s = spec(0)
    store.register("s", "e", [s])
    assert store.claim(s.key())
    store.fail(s.key(), "CUDA out of memory", "Traceback (most recent call last): ...")
    record = store.get(s.key())
    assert (record.status, record.error) == ("failed", "CUDA out of memory")
    assert record.traceback.startswith("Traceback")
    assert record.result is None

    assert not store.claim(s.key())
    assert store.get(s.key()).status == "failed"
    assert store.claim(s.key(), retry_failed=True)
    record = store.get(s.key())
    assert (record.status, record.attempt) == ("running", 2)
    assert record.error is None  # the old error does not describe the new attempt
    store.finish(s.key(), result_for(s))
    assert store.get(s.key()).status == "done"
    assert not store.claim(s.key(), retry_failed=True)


def test_skip_and_counts_cover_every_status(store: Store) -> None:
    specs = [spec(i) for i in range(6)]
    store.register("s", "e", specs)
    store.register("s", "empty", [])
    store.skip(specs[0].key(), "CUDA not available on this machine")
    assert store.claim(specs[1].key())
    assert store.claim(specs[2].key())
    store.finish(specs[2].key(), result_for(specs[2]))
    assert store.claim(specs[3].key())
    store.fail(specs[3].key(), "boom")

    record = store.get(specs[0].key())
    assert (record.status, record.error) == ("skipped", "CUDA not available on this machine")
    assert not store.claim(specs[0].key(), retry_failed=True)
    assert store.counts() == {
        ("s", "e"): {"pending": 2, "running": 1, "done": 1, "failed": 1, "skipped": 1, "pruned": 0}
    }
    assert set(store.counts("s")[("s", "e")]) == set(STATUSES)
    assert store.counts("other") == {}


def test_unskip_puts_only_a_skipped_run_back_to_pending_once(store: Store) -> None:
    skipped, done = spec(1, device="cuda"), spec(2)
    store.register("s", "e", [skipped, done])
    store.skip(skipped.key(), "CUDA not available on this machine")
    assert store.claim(done.key())
    store.finish(done.key(), result_for(done))

    assert store.unskip(skipped.key())
    record = store.get(skipped.key())
    assert (record.status, record.error, record.finished_at) == ("pending", None, None)
    assert not store.unskip(skipped.key())  # a second planner finds nothing to do
    assert not store.unskip(done.key()) and store.get(done.key()).status == "done"
    assert store.claim(skipped.key())


def test_adopt_moves_a_run_with_its_result_and_memberships(store: Store) -> None:
    old, new, taken = spec(1), spec(1, device="cpu"), spec(2)
    store.register("s", "e", [old, taken])
    store.register("t", "f", [old])
    assert store.claim(old.key())
    store.finish(old.key(), result_for(old))

    assert not store.adopt(old.key(), new, "pending")  # not in that status (any more)
    assert not store.adopt(old.key(), taken, "done")  # the new key is taken
    assert store.adopt(old.key(), new, "done")
    assert store.get(old.key()) is None
    moved = store.get(new.key())
    assert moved.status == "done" and moved.spec == new and moved.result.test_accuracy == 97.25
    assert [r.key for r in store.runs("s", "e")] == [new.key(), taken.key()]
    assert [r.key for r in store.runs("t", "f")] == [new.key()]


def test_release_returns_only_own_claims(store: Store) -> None:
    mine, theirs = spec(0), spec(1)
    store.register("s", "e", [mine, theirs])
    assert store.claim(mine.key())
    store.release(mine.key())
    assert store.get(mine.key()).status == "pending"
    assert store.claim(mine.key())
    assert store.get(mine.key()).attempt == 2

    assert store.claim(theirs.key())
    forge(store.path, theirs.key(), host="elsewhere")
    store.release(theirs.key())  # not ours: must not free another worker's run
    assert store.get(theirs.key()).status == "running"


def test_unknown_key_is_an_error(store: Store) -> None:
    with pytest.raises(KeyError, match="register it first"):
        store.claim("0123456789abcdef")
    with pytest.raises(KeyError):
        store.fail("0123456789abcdef", "boom")


def _worker(path: str, start: Any, out: Any) -> None:
    """Create/open the store, register the study, then claim and finish runs until none is
    left; report the keys this process finished."""
    try:
        finished = []
        start.wait()  # all four create the same new file at once
        with Store(path) as store:
            store.register("s", "e", [spec(i) for i in range(20)])
            keys = [r.key for r in store.runs()]
            while any(r.status in ("pending", "running") for r in store.runs()):
                for key in keys:
                    if store.claim(key):
                        time.sleep(0.005)  # hold the claim a little so others collide with it
                        store.heartbeat(key)
                        record = store.get(key)
                        store.finish(key, result_for(record.spec))
                        finished.append(key)
        out.put(("ok", finished))
    except BaseException:
        out.put(("error", traceback.format_exc()))


@pytest.mark.slow
def test_concurrent_processes_create_and_run_each_exactly_once(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    specs = [spec(i) for i in range(20)]
    ctx = multiprocessing.get_context("spawn")
    start, out = ctx.Barrier(4), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(path), start, out)) for _ in range(4)]
    for worker in workers:
        worker.start()
    reports = [out.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
        assert worker.exitcode == 0

    assert [r for r in reports if r[0] == "error"] == []
    finished = [key for _, keys in reports for key in keys]
    assert sorted(finished) == sorted(s.key() for s in specs)  # every run, none twice
    with Store(path) as store:
        records = store.runs()
        assert all(r.status == "done" and r.attempt == 1 and r.error is None for r in records)
        assert all(r.result == result_for(r.spec) for r in records)
        assert store.counts()[("s", "e")]["done"] == 20


def _assert_refused(path: Path, match: str) -> None:
    before = path.read_bytes()
    with pytest.raises(StoreError, match=match) as info:
        Store(path)
    assert str(path) in str(info.value)
    assert path.read_bytes() == before


def test_random_bytes_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    path.write_bytes(random.Random(0).randbytes(8192))
    _assert_refused(path, "not a SQLite file")


def test_corrupt_pages_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with Store(path) as store:
        store.register("s", "e", [spec(i) for i in range(200)])
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 2 * page
    data[page:] = random.Random(1).randbytes(len(data) - page)  # keep the header page only
    path.write_bytes(bytes(data))
    _assert_refused(
        path, "corrupt or unreadable as a results store: database disk image is malformed"
    )


def test_newer_schema_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "results.db"
    with Store(path) as store:
        store.register("s", "e", [spec(0)])
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    _assert_refused(
        path, rf"newer mnistbench \(schema 99 > {Store.SCHEMA_VERSION}\); upgrade mnistbench"
    )


def test_foreign_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("CREATE TABLE notes (text TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.close()
    _assert_refused(path, "not a mnistbench store")
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"  # not switched to WAL
    conn.close()


@pytest.mark.slow
def test_other_connections_never_delete_a_running_study_s_wal(tmp_path):
    """Regression: a second Store in the driver process (the heartbeat's) once dropped the POSIX
    locks of the first, so any other process closing the store deleted the live WAL."""
    import subprocess
    import sys

    path = tmp_path / "store.db"
    driver = Store(path)
    driver.register("s", "e", [RunSpec(seed=1)])
    Store(path).close()  # a second handle in the same process, then closed
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from mnistbench.study.store import Store; Store({str(path)!r}).close()",
        ],
        check=True,
    )
    assert path.with_name(path.name + "-wal").exists()
    assert driver.get(RunSpec(seed=1).key()).status == "pending"
    driver.close()


@pytest.mark.slow
def test_corrupt_store_is_a_clear_error(tmp_path):
    store_path = tmp_path / "store.db"
    store_path.write_bytes(b"this is not sqlite" * 100)
    result = subprocess.run(
        [sys.executable, "-m", "mnistbench", "study", "status", "--store", str(store_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1 and str(store_path) in result.stderr
    assert store_path.read_bytes() == b"this is not sqlite" * 100


def test_a_late_finish_never_overwrites_the_owner_who_took_the_run_over(tmp_path: Path) -> None:
    first, second = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    elsewhere = (dead_pid(), "other-host")
    second._owner = lambda: elsewhere  # another process, on another machine
    try:
        s = spec(0)
        first.register("s", "e", [s])
        assert first.claim(s.key())
        assert second.claim(s.key(), stale_after=-1.0)  # first went silent: taken over
        theirs = result_for(s, epochs=3)
        assert second.finish(s.key(), theirs)
        assert not first.finish(s.key(), result_for(s, epochs=1)), "the late result is refused"
        assert not first.fail(s.key(), "late failure")
        record = first.get(s.key())
        assert (record.status, record.result, record.error) == ("done", theirs, None)
        assert first.get(s.key()).result.history == theirs.history
    finally:
        first.close()
        second.close()


def test_a_live_heartbeat_keeps_a_claim_past_the_stale_limit(tmp_path: Path) -> None:
    """The study's heartbeat thread keeps a long run's claim; without it the claim goes stale."""
    from mnistbench.study.run import Heartbeat

    owner, rival = Store(tmp_path / "s.db"), Store(tmp_path / "s.db")
    elsewhere = (dead_pid(), "other-host")
    rival._owner = lambda: elsewhere
    beating, silent = spec(0), spec(1)
    owner.register("s", "e", [beating, silent])
    assert owner.claim(beating.key()) and owner.claim(silent.key())
    stale_after = 0.6
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr("mnistbench.study.run.HEARTBEAT_SECONDS", 0.1)
            with Heartbeat(owner) as heartbeat:
                heartbeat.add(beating.key())
                time.sleep(3 * stale_after)
                assert not rival.claim(beating.key(), stale_after=stale_after)
                assert rival.claim(silent.key(), stale_after=stale_after)
    finally:
        owner.close()
        rival.close()


def test_status_eta_is_the_mean_done_time_times_the_runs_left(tmp_path: Path) -> None:
    from mnistbench.cli.study import status_rows

    path = tmp_path / "s.db"
    with Store(path) as store:
        specs = [spec(i) for i in range(6)]
        store.register("s", "grid", specs[:5])
        store.register("s", "other", specs[5:])
        for s in specs[:3]:
            assert store.claim(s.key())
        store.finish(specs[0].key(), result_for(specs[0]))
        store.finish(specs[1].key(), result_for(specs[1]))
    forge(path, specs[0].key(), started_at=1000.0, finished_at=1010.0)  # 10 s
    forge(path, specs[1].key(), started_at=2000.0, finished_at=2030.0)  # 30 s
    with Store(path) as store:
        rows = {
            experiment: (counts, eta) for _, experiment, counts, eta in status_rows(store, None)
        }
    counts, eta = rows["grid"]
    assert (counts["done"], counts["running"], counts["pending"]) == (2, 1, 2)
    assert eta == 20.0 * 3  # mean 20 s x (1 running + 2 pending)
    assert rows["other"][1] is None  # nothing finished there yet: no estimate, not zero


# --- a store written by an older mnistbench -----------------------------------------------------

FIXTURE = Path(__file__).parents[1] / "fixtures" / "store_v1.db"


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    path = tmp_path / "old.db"
    shutil.copyfile(FIXTURE, path)  # opening migrates it: never touch the checked-in file
    return path


def test_a_store_from_schema_1_is_migrated_and_read(old_store: Path) -> None:
    with Store(old_store) as store:
        records = {record.key: record for record in store.runs("fixture")}
    statuses = sorted(record.status for record in records.values())
    assert statuses == ["done", "done", "done", "done", "failed", "pending", "skipped"]
    conn = sqlite3.connect(old_store)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == Store.SCHEMA_VERSION
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    # Schema 3's status: the migrated runs table takes it, and kept its rows and index.
    conn.execute("UPDATE runs SET status = 'pruned' WHERE key = '0c422bf192ffb42a'")
    assert {row[0] for row in conn.execute("SELECT status FROM runs")} >= {"pruned", "skipped"}
    assert "runs_status" in tables
    conn.close()
    assert "epochs" not in tables
    sgd = records["0c422bf192ffb42a"]
    assert sgd.spec.key() == sgd.key  # today's identity is the stored one
    assert sgd.result.precision == "fp32"  # stored as amp = "off"
    assert [entry.epoch for entry in sgd.result.history] == [1, 2]
    assert {entry.eval_split for entry in sgd.result.history} == {"test"}
    assert all(entry.eval_accuracy is not None for entry in sgd.result.history)
    with_val = records["efab535c16f3a436"].result
    assert with_val.history[-1].eval_split == "val"
    assert with_val.val_accuracy == with_val.history[-1].eval_accuracy
    assert records["cf04edfd161c81db"].result.n_support > 0
    assert all(record.unknown_fields == {} for record in records.values())


def test_an_old_store_stays_readable_by_status_and_report(old_store: Path, tmp_path: Path) -> None:
    from mnistbench.cli import main

    assert main(["study", "status", "--store", str(old_store)]) == 0
    out = tmp_path / "report"
    assert (
        main(["report", "--store", str(old_store), "--out", str(out), "--format", "csv,json"]) == 0
    )
    runs = json.loads((out / "runs.json").read_text())
    assert {run["key"] for run in runs} >= {"0c422bf192ffb42a", "cf04edfd161c81db"}


def test_fields_unknown_to_this_version_are_kept_not_fatal(old_store: Path) -> None:
    from mnistbench.report.frame import load_runs

    key = "0c422bf192ffb42a"
    conn = sqlite3.connect(old_store, isolation_level=None)
    spec, result = conn.execute("SELECT spec, result FROM runs WHERE key = ?", (key,)).fetchone()
    spec = {**json.loads(spec), "dropout": 0.1, "optimizer": "lion"}  # a newer writer's fields
    result = {**json.loads(result), "energy_joules": 12.5}
    conn.execute(
        "UPDATE runs SET spec = ?, result = ? WHERE key = ?",
        (json.dumps(spec), json.dumps(result), key),
    )
    conn.close()
    with Store(old_store) as store:
        record = store.get(key)
    assert record.unknown_fields == {"dropout": 0.1, "result.energy_joules": 12.5}
    assert record.spec.optimizer == "lion" and record.result.test_accuracy is not None
    with Store(old_store) as store:
        runs = load_runs(store, "fixture").set_index("key")
    assert json.loads(runs.loc[key, "unknown_fields"])["dropout"] == 0.1


ODD_RESULTS = {
    "history null": {"history": None},
    "epoch missing": {"history": [{"train_loss": 0.5}, "not a dict"]},
    "amp a list": {"amp": ["fp16"]},
    "environment null": {"environment": None, "protocol": "?"},
}


@pytest.mark.parametrize("change", ODD_RESULTS.values(), ids=ODD_RESULTS)
def test_odd_stored_results_never_break_status_or_report(old_store: Path, change) -> None:
    from mnistbench.report.frame import load_runs

    key = "0c422bf192ffb42a"
    conn = sqlite3.connect(old_store, isolation_level=None)
    (result,) = conn.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()
    changed = {**json.loads(result), **change}
    conn.execute("UPDATE runs SET result = ? WHERE key = ?", (json.dumps(changed), key))
    conn.execute("UPDATE runs SET spec = 'null' WHERE key = 'cf04edfd161c81db'")
    conn.close()
    with Store(old_store) as store:
        record = store.get(key)
        keys = set(load_runs(store, "fixture")["key"])
    assert record.result.test_accuracy is not None
    assert [entry.epoch for entry in record.result.history] in ([], [1], [1, 2])
    assert keys >= {key, "cf04edfd161c81db"}
