"""Opening a SQLite file as a results store: checked before anything is written, then brought
to this version's schema.

An existing file that is not SQLite, is corrupt, belongs to another program or comes from a
newer schema raises StoreError and is left exactly as it was. A new file gets the schema; a file
of an older schema is migrated in one transaction (schema 2 dropped the unused `epochs` table;
schema 3 added the status 'pruned', a search's trial that its pruner stopped).
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from mnistbench.errors import RunFailure

SCHEMA_VERSION = 3

_APP = "mnistbench"

STATUSES = ("pending", "running", "done", "failed", "skipped", "pruned")
"""A run's status in the store ('pruned': a search's trial that its pruner stopped)."""


def _runs_table(name: str, allowed: tuple[str, ...] = STATUSES) -> str:
    statuses = ", ".join(f"'{status}'" for status in allowed)
    return f"""CREATE TABLE {name} (
        key TEXT PRIMARY KEY,
        spec TEXT NOT NULL,                 -- RunSpec.to_dict() as JSON
        status TEXT NOT NULL CHECK (status IN ({statuses})),
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
    )"""


# One statement per string: executescript() would COMMIT the transaction that creates them.
_SCHEMA = (
    "CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    _runs_table("runs"),
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
    # SQLite cannot change a CHECK constraint: the runs table is copied into a new one.
    2: (
        # Schema 3's statuses as written then: a later status is a migration of its own.
        _runs_table("runs_v3", ("pending", "running", "done", "failed", "skipped", "pruned")),
        "INSERT INTO runs_v3 SELECT key, spec, status, result, error, traceback, attempt, host,"
        " pid, created_at, started_at, finished_at, heartbeat_at FROM runs",
        "DROP TABLE runs",
        "ALTER TABLE runs_v3 RENAME TO runs",
        "CREATE INDEX runs_status ON runs (status)",
    ),
}


class StoreError(RunFailure, RuntimeError):
    """The file cannot be used as a results store (corrupt, foreign, or from a newer schema)."""


def open_store_file(path: Path) -> sqlite3.Connection:
    """A connection to the store at `path` (autocommit, WAL), created or migrated as needed."""
    # No Python-level peek at the header: closing any other handle to the file drops the POSIX
    # locks that this process's SQLite connections hold on it, and another process would then
    # delete the WAL under a running study. SQLite itself rejects a foreign file ("file is not
    # a database") in _check, before anything is written.
    conn = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=False)
    try:
        _check(conn, path)  # read-only: nothing written until the file is known to be ours
        _enable_wal(conn)
        conn.execute("BEGIN IMMEDIATE")  # two processes may create the same new file
        try:
            _create_or_migrate(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    except sqlite3.DatabaseError as exc:
        conn.close()
        if "file is not a database" in str(exc):
            raise StoreError(f"{path} is not a SQLite file (corrupt or not a store)") from exc
        raise StoreError(f"{path} is corrupt or unreadable as a results store: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _create_or_migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version == 0:
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.executemany(
            "INSERT INTO meta VALUES (?, ?)",
            [("app", _APP), ("schema_version", str(SCHEMA_VERSION))],
        )
    else:
        for from_version in range(version, SCHEMA_VERSION):
            for statement in _MIGRATIONS[from_version]:
                conn.execute(statement)
        conn.execute(
            "UPDATE meta SET value = ? WHERE name = 'schema_version'", (str(SCHEMA_VERSION),)
        )
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")


def _enable_wal(conn: sqlite3.Connection) -> None:
    # Switching a new file to WAL needs an exclusive lock, and SQLite answers "locked" at once
    # (no busy wait) while another process is creating the same file: retry a while.
    deadline = time.monotonic() + 30
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _check(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a file that is not a mnistbench store of this or an older schema, or is corrupt."""
    # One read transaction: a consistent snapshot even while another process creates the
    # schema (else user_version could be read before its commit and the tables after).
    conn.execute("BEGIN")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{path} was written by a newer mnistbench "
                f"(schema {version} > {SCHEMA_VERSION}); upgrade mnistbench"
            )
        if version == 0 and not tables:
            return  # new, empty database
        meta = dict(conn.execute("SELECT name, value FROM meta")) if "meta" in tables else {}
        if version == 0 or meta.get("app") != _APP:
            raise StoreError(f"{path} is a SQLite database but not a mnistbench store")
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            raise StoreError(f"{path} is corrupt: {'; '.join(problems[:5])}")
    finally:
        if conn.in_transaction:  # SQLite may already have ended it after an I/O error
            conn.execute("ROLLBACK")
