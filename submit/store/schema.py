"""The index's tables, the one loop that brings an older index up to date, and how the index is
opened (WAL, a busy timeout; read-only stores as they are)."""

from __future__ import annotations

import os
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id       TEXT PRIMARY KEY,
    created      TEXT NOT NULL,
    job_name     TEXT NOT NULL,
    job_hash     TEXT NOT NULL,
    dataset_hash TEXT NOT NULL,
    backend      TEXT NOT NULL,
    profile      TEXT NOT NULL,
    task_uuid    TEXT,
    state        TEXT NOT NULL,
    error        TEXT,
    trials       INTEGER NOT NULL DEFAULT 0,
    uploaded_bytes INTEGER NOT NULL DEFAULT 0,
    job_json     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS states (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    state  TEXT NOT NULL,
    at     TEXT NOT NULL,
    detail TEXT
);
CREATE TABLE IF NOT EXISTS metrics (
    run_id  TEXT NOT NULL REFERENCES runs(run_id),
    trial   INTEGER NOT NULL,          -- -1 for a run without a sweep
    metrics TEXT NOT NULL,
    PRIMARY KEY (run_id, trial)
);
CREATE TABLE IF NOT EXISTS tags (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    key    TEXT NOT NULL,
    value  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (run_id, key)
);
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
CREATE INDEX IF NOT EXISTS runs_job ON runs(job_name, created);
"""
# Columns added after the first version, with what a store written by it means: its ended runs
# were recorded as ended only once retrieved.
MIGRATIONS = (
    ("retrieved", "ALTER TABLE runs ADD COLUMN retrieved INTEGER NOT NULL DEFAULT 0",
     "UPDATE runs SET retrieved=1 WHERE state IN ('succeeded','failed','cancelled')"),
    ("note", "ALTER TABLE runs ADD COLUMN note TEXT", None),
    ("info_json", "ALTER TABLE runs ADD COLUMN info_json TEXT NOT NULL DEFAULT '{}'", None),
)


# the runs table's columns, their type and whether they may be NULL: what a run's record may hold
RUN_COLUMNS: dict[str, tuple[type, bool]] = {
    "run_id": (str, False), "created": (str, False), "job_name": (str, False), "job_hash": (str, False),
    "dataset_hash": (str, False), "backend": (str, False), "profile": (str, False), "task_uuid": (str, True),
    "state": (str, False), "error": (str, True), "trials": (int, False), "uploaded_bytes": (int, False),
    "job_json": (str, False), "retrieved": (int, False), "note": (str, True), "info_json": (str, False),
}


def columns(db: sqlite3.Connection) -> set[str]:
    return {r[1] for r in db.execute("PRAGMA table_info(runs)")}


def migrate(db: sqlite3.Connection) -> None:
    """Add the columns an index made by an older qtrain lacks (with what they mean for its rows),
    in one transaction that looks again once it holds the write lock: another process may have
    migrated it meanwhile."""
    if all(name in columns(db) for name, _, _ in MIGRATIONS):
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        have = columns(db)
        for name, alter, backfill in MIGRATIONS:
            if name not in have:
                db.execute(alter)
                if backfill:
                    db.execute(backfill)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def read_only(folder: Path) -> bool:
    """Is `folder` on a read-only file system, or not writable by this user?"""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


@contextmanager
def connect(path: Path, read_only: bool, wait: float) -> Iterator[sqlite3.Connection]:
    """A connection to the index at `path` whose writers wait `wait` seconds for another's lock;
    a read-only store's index is opened as it is (no -shm/-wal can be made there)."""
    if read_only:
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)
    else:
        db = sqlite3.connect(path, timeout=wait, isolation_level=None)
    try:
        db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
        db.row_factory = sqlite3.Row
        yield db
    finally:
        db.close()
