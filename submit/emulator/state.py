"""The emulator's durable task state: one SQLite file (`<state>/tasks.sqlite`, WAL) that a restart
reads back.  A task is a row of JSON (its request, states, errors, instances, what was uploaded);
its outputs are rows of their own, rewritten only when they changed.

Written when a task is submitted, at every state change (synchronously: a kill -9 right after a
state change keeps it) and, for outputs and instance details, by the manager's flusher about twice a
second.  Nothing here decides a task's life (`tasks.py`) or moves bytes (`storage.py`).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    uuid TEXT PRIMARY KEY,
    created REAL NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outputs (
    uuid TEXT NOT NULL,
    stream TEXT NOT NULL,        -- stdout | stderr
    instance INTEGER NOT NULL,   -- -1: the task-wide view
    text TEXT NOT NULL,
    fresh_at INTEGER NOT NULL,   -- characters already read by a "fresh" request
    PRIMARY KEY (uuid, stream, instance)
);
"""


class StateError(Exception):
    """The state file cannot be used (damaged, not SQLite, not writable)."""


class TaskStore:
    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        try:
            self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")  # survives a killed process; fsync at checkpoints
            self.db.executescript(SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: {exc}") from None

    def load(self) -> Iterator[tuple[str, dict[str, Any], dict[tuple[str, int], tuple[str, int]]]]:
        """(uuid, data, {(stream, instance): (text, fresh_at)}) for every task, oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT uuid, data FROM tasks ORDER BY created").fetchall()
            outs = self.db.execute("SELECT uuid, stream, instance, text, fresh_at FROM outputs").fetchall()
        by_task: dict[str, dict[tuple[str, int], tuple[str, int]]] = {}
        for uuid, stream, instance, text, fresh_at in outs:
            by_task.setdefault(uuid, {})[(stream, instance)] = (text, fresh_at)
        for uuid, data in rows:
            try:
                parsed = json.loads(data)
            except ValueError:
                continue  # a row this version cannot read is left alone, not fatal
            yield uuid, parsed, by_task.get(uuid, {})

    def save(self, uuid: str, created: float, data: str | None,
             outputs: dict[tuple[str, int], tuple[str, int]]) -> None:
        """Write a task's row (when `data` is given) and the outputs given, in one transaction."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if data is not None:
                    self.db.execute("INSERT INTO tasks(uuid, created, data) VALUES (?, ?, ?) "
                                    "ON CONFLICT(uuid) DO UPDATE SET data = excluded.data",
                                    (uuid, created, data))
                for (stream, instance), (text, fresh_at) in outputs.items():
                    self.db.execute("INSERT INTO outputs(uuid, stream, instance, text, fresh_at) "
                                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT(uuid, stream, instance) "
                                    "DO UPDATE SET text = excluded.text, fresh_at = excluded.fresh_at",
                                    (uuid, stream, instance, text, fresh_at))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def delete(self, uuid: str) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM tasks WHERE uuid = ?", (uuid,))
            self.db.execute("DELETE FROM outputs WHERE uuid = ?", (uuid,))
            self.db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self.db.close()
