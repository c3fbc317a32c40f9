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
from mnistbench.study.store_file import SCHEMA_VERSION, STATUSES, StoreError, open_store_file

__all__ = ["STATUSES", "RunRecord", "Store", "StoreError"]


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

    SCHEMA_VERSION = SCHEMA_VERSION

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = open_store_file(self.path)
        self._lock = threading.RLock()  # a worker may heartbeat from a background thread

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
                if self._live_owner(owner_host, owner_pid, heartbeat_at, stale_after):
                    return False
            elif not (status in ("pending", "pruned") or (status == "failed" and retry_failed)):
                return False
            conn.execute(
                "UPDATE runs SET status = 'running', host = ?, pid = ?, started_at = ?,"
                " heartbeat_at = ?, finished_at = NULL, error = NULL, traceback = NULL,"
                " result = NULL, attempt = attempt + 1 WHERE key = ?",
                (host, pid, now, now, key),
            )
            return True

    def _live_owner(
        self,
        owner_host: str | None,
        owner_pid: int | None,
        heartbeat_at: float | None,
        stale_after: float,
    ) -> bool:
        """Whether a running run's owner is alive. The pid test only means something on the
        owner's machine; elsewhere only the heartbeat tells a dead owner from a busy one."""
        _, host = self._owner()
        dead = owner_host == host and owner_pid is not None and not _pid_alive(owner_pid)
        silent = heartbeat_at is None or time.time() - heartbeat_at > stale_after
        return not (dead or silent)

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
        """Store a result: "done", or "failed" or "pruned" when the result says so (a pruned
        run is a search's trial that its pruner stopped: a grid that has the same run takes it
        on from its checkpoint, `claim`).

        False, and nothing written, when another process has taken the run over since this one
        claimed it: the new owner's result (or run in progress) is never overwritten.
        """
        status = result.status if result.status in ("failed", "pruned") else "done"
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

    def unskip(self, key: str) -> bool:
        """Put a skipped run back to pending (its reason no longer holds on the machine that
        plans it); False when it is not skipped (any more): of two planners, one does it."""
        with self._transaction() as conn:
            cursor = conn.execute(
                "UPDATE runs SET status = 'pending', error = NULL, finished_at = NULL"
                " WHERE key = ? AND status = 'skipped'",
                (key,),
            )
            return cursor.rowcount == 1

    def adopt(self, old_key: str, spec: RunSpec, status: str) -> bool:
        """Move the run stored under `old_key` (an identity scheme's earlier key for the same
        run) to `spec`'s key, with its result, history and memberships. False, and nothing
        changed, when the row is not in `status` any more or `spec`'s key is already taken."""
        new_key = spec.key()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM runs WHERE key = ?", (new_key,)).fetchone():
                return False
            cursor = conn.execute(
                "UPDATE runs SET key = ?, spec = ? WHERE key = ? AND status = ?",
                (new_key, json.dumps(spec.to_dict()), old_key, status),
            )
            if cursor.rowcount != 1:
                return False
            conn.execute("UPDATE memberships SET key = ? WHERE key = ?", (new_key, old_key))
            return True

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

    @contextmanager
    def unclaimed(self, key: str, *, stale_after: float = 120.0) -> Iterator[bool]:
        """Hold the write lock while the caller acts on a run's files (cleanup.py): yields
        False when a live owner holds the run (touch nothing then), else True, and no process
        can claim the run before the block ends. A key the store does not know yields True."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT status, host, pid, heartbeat_at FROM runs WHERE key = ?", (key,)
            ).fetchone()
            yield row is None or row[0] != "running" or not self._live_owner(*row[1:], stale_after)

    def forget_model(self, key: str) -> bool:
        """Say that a run's final model is gone: its stored result's model_path becomes None,
        so that nothing advertises a deleted file. False when there was no model_path."""
        return self.set_model_path(key, None)

    def set_model_path(self, key: str, path: str | None) -> bool:
        """Point a run's stored result at its model file (None: it has none any more). The
        stored JSON is edited in place, so fields of other mnistbench versions stay. False when
        the result had no model_path to change."""
        with self._transaction() as conn:
            row = conn.execute("SELECT result FROM runs WHERE key = ?", (key,)).fetchone()
            result = json.loads(row[0]) if row and row[0] else None
            if not isinstance(result, dict) or result.get("model_path") is None:
                return False
            result["model_path"] = path
            conn.execute("UPDATE runs SET result = ? WHERE key = ?", (json.dumps(result), key))
            return True

    # --- reading ---

    def memberships(self, key: str) -> list[tuple[str, str]]:
        """The (study, experiment) pairs a run belongs to, in the order they were registered."""
        rows = self._query(
            "SELECT study, experiment FROM memberships WHERE key = ? ORDER BY id", (key,)
        )
        return [(row[0], row[1]) for row in rows]

    _COLUMNS = (
        "runs.key, spec, status, result, error, traceback, attempt, host, pid,"
        " created_at, started_at, finished_at, heartbeat_at"
    )

    @staticmethod
    def _record(row: tuple[Any, ...]) -> RunRecord:
        """A row as RunRecord, read leniently: a run stored by another mnistbench version keeps
        the fields this one does not know in `unknown_fields` instead of failing."""
        key, spec_json, status, result_json, error, *rest = row
        spec, unknown = RunSpec.from_stored(json.loads(spec_json))
        result = None
        if result_json is not None:
            try:
                result, unknown_in_result = RunResult.from_stored(json.loads(result_json))
            except Exception as exc:  # a shape no version wrote: keep the row, say why
                unknown["result"] = result_json
                error = f"stored result unreadable by this mnistbench: {exc}"
            else:
                unknown |= {f"result.{name}": value for name, value in unknown_in_result.items()}
        return RunRecord(key, spec, status, result, error, *rest, unknown_fields=unknown)

    def get(self, key: str) -> RunRecord | None:
        rows = self._query(f"SELECT {self._COLUMNS} FROM runs WHERE key = ?", (key,))
        return self._record(rows[0]) if rows else None

    def runs(
        self, study: str | None = None, experiment: str | None = None, *, with_model: bool = False
    ) -> list[RunRecord]:
        """Runs of a study / experiment (None = all), each once, in the order they were registered.
        `with_model`: only those whose result names a model file, found by SQLite without
        reading the others (a keep policy asks after every run of a 500-run sweep)."""
        rows = self._query(
            f"SELECT {self._COLUMNS} FROM runs JOIN ("
            "  SELECT key, MIN(id) AS first FROM memberships"
            "  WHERE (?1 IS NULL OR study = ?1) AND (?2 IS NULL OR experiment = ?2) GROUP BY key"
            ") AS m ON m.key = runs.key"
            " WHERE NOT ?3 OR (json_valid(runs.result)"
            "  AND json_extract(runs.result, '$.model_path') IS NOT NULL)"
            " ORDER BY m.first",
            (study, experiment, with_model),
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
