"""The emulator's durable task state: one SQLite file (`<state>/tasks.sqlite`, WAL) that a restart
reads back.  A task is a row of JSON (its request, states, errors, instances, what was uploaded);
its outputs are chunks appended as lines arrive (a chatty run costs the flusher what it printed
since the last flush, not its whole log), compacted into one chunk now and then.

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
CREATE TABLE IF NOT EXISTS output_chunks (
    uuid TEXT NOT NULL,
    stream TEXT NOT NULL,        -- stdout | stderr
    instance INTEGER NOT NULL,   -- -1: the task-wide view
    seq INTEGER NOT NULL,        -- the text is the chunks in seq order
    text TEXT NOT NULL,
    PRIMARY KEY (uuid, stream, instance, seq)
);
CREATE TABLE IF NOT EXISTS output_marks (
    uuid TEXT NOT NULL,
    stream TEXT NOT NULL,
    instance INTEGER NOT NULL,
    fresh_at INTEGER NOT NULL,   -- characters of the text already read by a "fresh" request
    PRIMARY KEY (uuid, stream, instance)
);
"""
# the first durable version kept each output whole in one row: read it as one chunk
MIGRATE = """
INSERT OR IGNORE INTO output_chunks(uuid, stream, instance, seq, text)
    SELECT uuid, stream, instance, 0, text FROM outputs;
INSERT OR IGNORE INTO output_marks(uuid, stream, instance, fresh_at)
    SELECT uuid, stream, instance, fresh_at FROM outputs;
DROP TABLE outputs;
"""

# what `save` takes per (stream, instance): (replace what is stored?, text, characters read fresh)
Pending = dict[tuple[str, int], tuple[bool, str, int]]


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
            if self.db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outputs'").fetchone():
                self.db.executescript("BEGIN IMMEDIATE;" + MIGRATE + "COMMIT;")
        except sqlite3.DatabaseError as exc:
            raise StateError(f"{path}: {exc}") from None

    def load(self) -> Iterator[tuple[str, dict[str, Any], dict[tuple[str, int], tuple[str, int]]]]:
        """(uuid, data, {(stream, instance): (text, fresh_at)}) for every task, oldest first."""
        with self._lock:
            rows = self.db.execute("SELECT uuid, data FROM tasks ORDER BY created").fetchall()
            chunks = self.db.execute("SELECT uuid, stream, instance, text FROM output_chunks "
                                     "ORDER BY uuid, stream, instance, seq").fetchall()
            marks = {(u, s, i): f for u, s, i, f in
                     self.db.execute("SELECT uuid, stream, instance, fresh_at FROM output_marks")}
        texts: dict[tuple[str, str, int], list[str]] = {}
        for uuid, stream, instance, text in chunks:
            texts.setdefault((uuid, stream, instance), []).append(text)
        by_task: dict[str, dict[tuple[str, int], tuple[str, int]]] = {}
        for (uuid, stream, instance), parts in texts.items():
            by_task.setdefault(uuid, {})[(stream, instance)] = ("".join(parts), marks.get((uuid, stream, instance), 0))
        for uuid, data in rows:
            try:
                parsed = json.loads(data)
            except ValueError:
                continue  # a row this version cannot read is left alone, not fatal
            yield uuid, parsed, by_task.get(uuid, {})

    def save(self, uuid: str, created: float, data: str | None, outputs: Pending) -> None:
        """Write a task's row (when `data` is given) and the outputs given, in one transaction: each
        output's text replaces what is stored or is appended to it as a new chunk."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if data is not None:
                    self.db.execute("INSERT INTO tasks(uuid, created, data) VALUES (?, ?, ?) "
                                    "ON CONFLICT(uuid) DO UPDATE SET data = excluded.data",
                                    (uuid, created, data))
                for (stream, instance), (replace, text, fresh_at) in outputs.items():
                    key = (uuid, stream, instance)
                    if replace:
                        self.db.execute("DELETE FROM output_chunks WHERE uuid = ? AND stream = ? AND instance = ?",
                                        key)
                    if text:
                        self.db.execute(
                            "INSERT INTO output_chunks(uuid, stream, instance, seq, text) VALUES (?, ?, ?, "
                            "(SELECT COALESCE(MAX(seq), -1) + 1 FROM output_chunks "
                            " WHERE uuid = ? AND stream = ? AND instance = ?), ?)", key + key + (text,))
                    self.db.execute("INSERT INTO output_marks(uuid, stream, instance, fresh_at) VALUES (?, ?, ?, ?) "
                                    "ON CONFLICT(uuid, stream, instance) DO UPDATE SET fresh_at = excluded.fresh_at",
                                    key + (fresh_at,))
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise

    def delete(self, uuid: str) -> None:
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute("DELETE FROM tasks WHERE uuid = ?", (uuid,))
            self.db.execute("DELETE FROM output_chunks WHERE uuid = ?", (uuid,))
            self.db.execute("DELETE FROM output_marks WHERE uuid = ?", (uuid,))
            self.db.execute("COMMIT")

    def close(self) -> None:
        with self._lock:
            self.db.close()
