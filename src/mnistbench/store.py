"""The results store: one SQLite file holding every run of every study, its status and its result.

A run's row is keyed by `RunSpec.key()`, so re-running a study finds what is already done. Runs
are claimed before they start (status "running", owner pid + host, heartbeat); a claim whose
owner died or went silent is taken over. The file is in WAL mode with a busy timeout so that
several processes (parallel workers, two `study run`s) can share it; every read-modify-write
runs in a `BEGIN IMMEDIATE` transaction, which takes the write lock up front and so makes
check-then-update atomic across processes.

An existing file is checked before anything is written to it: a file that is not SQLite, is
corrupt, belongs to another program or comes from a newer schema raises StoreError and is left
exactly as it was. A store of an older schema is migrated when opened (schema 2 dropped the
unused `epochs` table), and runs stored by another mnistbench version are read leniently: fields
this version does not know are kept in `RunRecord.unknown_fields`, never a crash.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnistbench.config import RunSpec
from mnistbench.result import RunResult

STATUSES = ("pending", "running", "done", "failed", "skipped")
_APP = "mnistbench"

# One statement per string: executescript() would COMMIT the transaction that creates them.
_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE runs (
        key TEXT PRIMARY KEY,
        spec TEXT NOT NULL,                 -- RunSpec.to_dict() as JSON
        status TEXT NOT NULL
            CHECK (status IN ('pending', 'running', 'done', 'failed', 'skipped')),
        result TEXT,                        -- RunResult.to_dict() as JSON
        error TEXT,                         -- failure message, or the reason for a skip
        traceback TEXT,
        attempt INTEGER NOT NULL DEFAULT 0, -- how many times the run was claimed
        host TEXT,
        pid INTEGER,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        heartbeat_at REAL
    )""",
    "CREATE INDEX runs_status ON runs (status)",
    # Which study/experiment asked for a run (one run may serve several); id keeps the order.
    """CREATE TABLE memberships (
        id INTEGER PRIMARY KEY,
        study TEXT NOT NULL,
        experiment TEXT NOT NULL,
        key TEXT NOT NULL REFERENCES runs (key),
        UNIQUE (study, experiment, key)
    )""",
)
# Per schema version, the statements that bring a store of that version to the next one.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: ("DROP TABLE IF EXISTS epochs",),  # the history is in the result; nothing read the table
}


class StoreError(RuntimeError):
    """The file cannot be used as a results store (corrupt, foreign, or from a newer schema)."""


@dataclass(frozen=True)
class RunRecord:
    """One row of `runs`."""

    key: str
    spec: RunSpec
    status: str
    """'pending', 'running', 'done', 'failed' or 'skipped'."""
    result: RunResult | None
    error: str | None
    """The failure message, or for a skipped run the reason."""
    traceback: str | None
    attempt: int
    """How many times the run has been claimed."""
    host: str | None
    pid: int | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None
    unknown_fields: dict[str, Any] = field(default_factory=dict)
    """Stored fields this mnistbench does not know (written by another version): kept, shown."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


class Store:
    """A results store at `path`; safe to share between processes (and threads of one process)."""

    SCHEMA_VERSION = 2

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # No Python-level peek at the header here: closing any other handle to the file drops
        # the POSIX locks that this process's SQLite connections hold on it, and another process
        # would then delete the WAL under a running study. SQLite itself rejects a foreign file
        # ("file is not a database") in _validate, before anything is written.
        # check_same_thread=False + a lock: a worker may heartbeat from a background thread.
        self._conn = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        self._lock = threading.RLock()
        try:
            self._open()
        except BaseException:
            self._conn.close()
            raise

    def _open(self) -> None:
        try:
            self._validate()  # read-only: nothing written until the file is known to be ours
            self._enable_wal()
            with self._transaction() as conn:  # two processes may create the same new file
                if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    conn.executemany(
                        "INSERT INTO meta VALUES (?, ?)",
                        [("app", _APP), ("schema_version", str(self.SCHEMA_VERSION))],
                    )
                    conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")
                else:
                    self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            if "file is not a database" in str(exc):
                raise StoreError(
                    f"{self.path} is not a SQLite file (corrupt or not a store)"
                ) from exc
            raise StoreError(
                f"{self.path} is corrupt or unreadable as a results store: {exc}"
            ) from exc

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring a store written by an older mnistbench to this schema, in one transaction."""
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for from_version in range(version, self.SCHEMA_VERSION):
            for statement in _MIGRATIONS[from_version]:
                conn.execute(statement)
        if version < self.SCHEMA_VERSION:
            conn.execute(
                "UPDATE meta SET value = ? WHERE name = 'schema_version'",
                (str(self.SCHEMA_VERSION),),
            )
            conn.execute(f"PRAGMA user_version = {self.SCHEMA_VERSION}")

    def _enable_wal(self) -> None:
        # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at
        # once (no busy wait) while another process is creating the same file: retry a while.
        deadline = time.monotonic() + 30
        while True:
            try:
                self._conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _validate(self) -> None:
        conn = self._conn
        # One read transaction: a consistent snapshot even while another process creates the
        # schema (else user_version could be read before its commit and the tables after).
        conn.execute("BEGIN")
        try:
            self._check_schema()
        finally:
            if conn.in_transaction:  # SQLite may already have ended it after an I/O error
                conn.execute("ROLLBACK")

    def _check_schema(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if version > self.SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer mnistbench "
                f"(schema {version} > {self.SCHEMA_VERSION}); upgrade mnistbench"
            )
        if version == 0 and not tables:
            return  # new, empty database
        meta = dict(conn.execute("SELECT name, value FROM meta")) if "meta" in tables else {}
        if version == 0 or meta.get("app") != _APP:
            raise StoreError(f"{self.path} is a SQLite database but not a mnistbench store")
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreError(f"{self.path} is corrupt: {'; '.join(problems[:5])}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; the write lock is taken at BEGIN, not at the first write."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def _query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, tuple(params)).fetchall()

    @staticmethod
    def _owner() -> tuple[int, str]:
        return os.getpid(), socket.gethostname()  # read per call: right after a fork too

    # --- writing ---

    def register(self, study: str, experiment: str, specs: Iterable[RunSpec]) -> None:
        """Add unknown runs as pending and record their membership; existing runs are untouched."""
        now = time.time()
        rows = [(spec.key(), json.dumps(spec.to_dict())) for spec in specs]
        with self._transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO runs (key, spec, status, created_at)"
                " VALUES (?, ?, 'pending', ?)",
                [(key, spec, now) for key, spec in rows],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO memberships (study, experiment, key) VALUES (?, ?, ?)",
                [(study, experiment, key) for key, _ in rows],
            )

    def claim(self, key: str, *, stale_after: float = 120.0, retry_failed: bool = False) -> bool:
        """Make this process the run's owner; False when it is done, skipped or held by a live owner."""
        pid, host = self._owner()
        now = time.time()
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, host, pid, heartbeat_at FROM runs WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                raise KeyError(f"run {key} is not in {self.path}; register it first")
            status, owner_host, owner_pid, heartbeat_at = row
            if status == "running":
                # The pid test only means something on the owner's machine; elsewhere only
                # the heartbeat tells a dead owner from a busy one.
                dead = owner_host == host and owner_pid is not None and not _pid_alive(owner_pid)
                silent = heartbeat_at is None or now - heartbeat_at > stale_after
                if not (dead or silent):
                    return False
            elif not (status == "pending" or (status == "failed" and retry_failed)):
                return False
            conn.execute(
                "UPDATE runs SET status = 'running', host = ?, pid = ?, started_at = ?,"
                " heartbeat_at = ?, finished_at = NULL, error = NULL, traceback = NULL,"
                " result = NULL, attempt = attempt + 1 WHERE key = ?",
                (host, pid, now, now, key),
            )
            return True

    def heartbeat(self, key: str) -> bool:
        """Tell other processes this run's owner is alive; False when this process lost the claim."""
        pid, host = self._owner()
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE runs SET heartbeat_at = ?"
                " WHERE key = ? AND status = 'running' AND pid = ? AND host = ?",
                (time.time(), key, pid, host),
            )
            return cursor.rowcount == 1

    def finish(self, key: str, result: RunResult) -> bool:
        """Store a result ("done", or "failed" when the result says so).

        False, and nothing written, when another process has taken the run over since this one
        claimed it: the new owner's result (or run in progress) is never overwritten.
        """
        status = "failed" if result.status == "failed" else "done"
        error = result.message if status == "failed" else None
        with self._transaction() as conn:
            if not self._owned_here(conn, key):
                return False
            self._set_status(conn, key, status, error=error, result=json.dumps(result.to_dict()))
            return True

    def fail(self, key: str, error: str, traceback: str | None = None) -> bool:
        """Record a failure; False (nothing written) when another process owns the run now."""
        with self._transaction() as conn:
            if not self._owned_here(conn, key):
                return False
            self._set_status(conn, key, "failed", error=error, traceback=traceback)
            return True

    def _owned_here(self, conn: sqlite3.Connection, key: str) -> bool:
        """Whether the run's owner, if it ever had one, is this process."""
        row = conn.execute("SELECT pid, host FROM runs WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise KeyError(f"run {key} is not in {self.path}; register it first")
        owner_pid, owner_host = row
        return owner_pid is None or (owner_pid, owner_host) == self._owner()

    def skip(self, key: str, reason: str) -> None:
        with self._transaction() as conn:
            self._set_status(conn, key, "skipped", error=reason)

    def _set_status(
        self,
        conn: sqlite3.Connection,
        key: str,
        status: str,
        *,
        error: str | None = None,
        traceback: str | None = None,
        result: str | None = None,
    ) -> None:
        # A missing result clears an earlier one: a retried run that fails must not look done.
        cursor = conn.execute(
            "UPDATE runs SET status = ?, error = ?, traceback = ?, result = ?, finished_at = ?"
            " WHERE key = ?",
            (status, error, traceback, result, time.time(), key),
        )
        if cursor.rowcount != 1:
            raise KeyError(f"run {key} is not in {self.path}; register it first")

    def release(self, key: str) -> None:
        """Give a claim back (clean interruption); only the owner can, so a late call is harmless."""
        pid, host = self._owner()
        with self._transaction() as conn:
            conn.execute(
                "UPDATE runs SET status = 'pending', host = NULL, pid = NULL, started_at = NULL,"
                " heartbeat_at = NULL WHERE key = ? AND status = 'running' AND pid = ? AND host = ?",
                (key, pid, host),
            )

    # --- reading ---

    _COLUMNS = (
        "runs.key, spec, status, result, error, traceback, attempt, host, pid,"
        " created_at, started_at, finished_at, heartbeat_at"
    )

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        """A row as RunRecord, read leniently: a run stored by another mnistbench version keeps
        the fields this one does not know in `unknown_fields` instead of failing."""
        key, spec_json, status, result_json, *rest = row
        spec, unknown = RunSpec.from_stored(json.loads(spec_json))
        result = None
        if result_json is not None:
            result, unknown_in_result = RunResult.from_stored(json.loads(result_json))
            unknown |= {f"result.{name}": value for name, value in unknown_in_result.items()}
        return RunRecord(key, spec, status, result, *rest, unknown_fields=unknown)

    def get(self, key: str) -> RunRecord | None:
        rows = self._query(f"SELECT {self._COLUMNS} FROM runs WHERE key = ?", (key,))
        return self._record(rows[0]) if rows else None

    def runs(self, study: str | None = None, experiment: str | None = None) -> list[RunRecord]:
        """Runs of a study / experiment (None = all), each once, in the order they were registered."""
        rows = self._query(
            f"SELECT {self._COLUMNS} FROM runs JOIN ("
            "  SELECT key, MIN(id) AS first FROM memberships"
            "  WHERE (?1 IS NULL OR study = ?1) AND (?2 IS NULL OR experiment = ?2) GROUP BY key"
            ") AS m ON m.key = runs.key ORDER BY m.first",
            (study, experiment),
        )
        return [self._record(row) for row in rows]

    def experiments(self, study: str | None = None) -> list[tuple[str, str]]:
        rows = self._query(
            "SELECT study, experiment FROM memberships WHERE ?1 IS NULL OR study = ?1"
            " GROUP BY study, experiment ORDER BY MIN(id)",
            (study,),
        )
        return [(row[0], row[1]) for row in rows]

    def counts(self, study: str | None = None) -> dict[tuple[str, str], dict[str, int]]:
        """Per (study, experiment), how many runs are in each status (every status present)."""
        counts = {pair: dict.fromkeys(STATUSES, 0) for pair in self.experiments(study)}
        rows = self._query(
            "SELECT m.study, m.experiment, runs.status, COUNT(*) FROM memberships AS m"
            " JOIN runs ON runs.key = m.key WHERE ?1 IS NULL OR m.study = ?1"
            " GROUP BY m.study, m.experiment, runs.status",
            (study,),
        )
        for study_name, experiment, status, count in rows:
            counts[(study_name, experiment)][status] = count
        return counts
