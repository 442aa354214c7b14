"""The results store: a SQLite index of runs plus one folder per run (per trial).

    <root>/index.sqlite          runs, their state history, metrics per trial, tags (schema.py)
    <root>/runs/<run_id>/        the results contract of a run (trial-<i>/ for sweeps), and the
                                 run's own copy of its index entry (mirror.py)
    <root>/runs/.trash/          folders of removed runs, on their way out

A run's state is the truth about its task (`succeeded|failed|cancelled` as soon as the task has
ended), and `retrieved` says whether its files are in the store yet.  A RUN is named as
`names.py` says.

SQLite in WAL mode with a busy timeout and `BEGIN IMMEDIATE` transactions: several `qtrain run`
processes writing into one store at once lose nothing.  The store keeps what a run is (job, hashes,
backend, profile, task uuid, states with times, metrics), never credentials.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from jobs import settings
from jobs.errors import QtrainError
from jobs.results import trial_dir
from submit.store.mirror import write_record
from submit.store.names import resolve
from submit.store.records import FINAL_STATES, STATES, RunRecord, now, record_from_row
from submit.store.schema import SCHEMA, connect, migrate, read_only

TRASH = ".trash"
LOCKS = ".locks"  # runs/.locks/<run id>.<name>: the per-run locks (`Store.run_lock`)


class Store:
    def __init__(self, root: Path, open_index: bool = True):
        self.root = Path(root).expanduser()
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QtrainError(f"results store {self.root}: cannot create it ({exc.strerror})",
                              hint="choose another folder with --store or QTRAIN_STORE") from exc
        self.db_path = self.root / "index.sqlite"
        self.read_only = read_only(self.root)
        if open_index:  # (reindex rebuilds an index that cannot be opened)
            self.open_index()

    def open_index(self) -> None:
        """WAL mode (kept in the file, so set once) and the schema.  Several processes opening a
        new store at once can get SQLITE_BUSY here without the busy handler being called: retry."""
        if self.read_only:  # read as it is: listing and showing work, writing says why not
            if not self.db_path.is_file():
                raise QtrainError(f"results store {self.root} is read-only and has no index yet",
                                  hint="make it writable, or choose another with --store")
            try:
                with self.connect() as db:
                    db.execute("SELECT COUNT(*) FROM runs").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from exc
            return
        for attempt in range(100):
            try:
                with self.connect() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                    migrate(db)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise self._damaged(exc) from exc
                time.sleep(0.02 * (attempt + 1))
            except sqlite3.DatabaseError as exc:  # not a database, malformed image, ...
                raise self._damaged(exc) from exc
        raise QtrainError(f"results store {self.db_path}: locked by another process",
                          hint="wait for the other qtrain to finish, or stop it")

    def _damaged(self, exc: Exception) -> QtrainError:
        return QtrainError(f"results store {self.db_path}: the index cannot be read ({exc})",
                           hint="qtrain results reindex rebuilds it from the run folders")

    def ensure_writable(self) -> None:
        """A clear error now, rather than after an upload, when nothing can be saved here."""
        if self.read_only:
            raise QtrainError(f"results store {self.root} is read-only: nothing can be saved in it",
                              hint="make it writable, or choose another with --store")

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        self.ensure_writable()
        with self.connect() as db:
            for attempt in range(3):
                try:
                    db.execute("BEGIN IMMEDIATE")  # waits up to the busy timeout for a writer
                    break
                except sqlite3.OperationalError as exc:  # locked past it (or SQLITE_BUSY at once)
                    if "locked" not in str(exc) and "busy" not in str(exc):
                        raise
                    time.sleep(0.05 * (attempt + 1))
            else:
                raise QtrainError(f"results store {self.db_path}: locked by another process",
                                  hint="wait for the other qtrain to finish, or stop it, then run this again")
            try:
                yield db
                db.execute("COMMIT")
            except BaseException:
                # a Ctrl-C can land after COMMIT took effect: then there is nothing to roll back,
                # and the interrupt (not a rollback error) is what the caller must see
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise

    # ------------------------------------------------------------------------------- writing
    def create_run(self, *, job_name: str, job_hash: str, dataset_hash: str, backend: str,
                   profile: str, job: dict[str, Any], trials: int = 0,
                   tags: dict[str, str] | None = None, note: str | None = None,
                   info: dict[str, Any] | None = None, state: str = "submitted") -> RunRecord:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{job_name}-{secrets.token_hex(3)}"
        created = now()
        with self.write() as db:
            db.execute(
                "INSERT INTO runs (run_id, created, job_name, job_hash, dataset_hash, backend, "
                "profile, state, trials, job_json, note, info_json) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, created, job_name, job_hash, dataset_hash, backend, profile, state,
                 trials, json.dumps(job, sort_keys=True), note, json.dumps(info or {})))
            db.execute("INSERT INTO states VALUES (?,?,?,?)", (run_id, state, created, None))
            db.executemany("INSERT INTO tags VALUES (?,?,?)",
                           [(run_id, k, v) for k, v in (tags or {}).items()])
            self.artifacts_dir(run_id).mkdir(parents=True, exist_ok=True)
            self._mirror(db, run_id)
        return self.get(run_id)

    def set_state(self, run_id: str, state: str, *, detail: str | None = None,
                  error: str | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"unknown run state {state!r}")
        with self.write() as db:
            row = db.execute("SELECT state FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                raise QtrainError(f"run {run_id}: not in the store")
            if row["state"] != state:
                db.execute("INSERT INTO states VALUES (?,?,?,?)", (run_id, state, now(), detail))
            db.execute("UPDATE runs SET state=?, error=COALESCE(?, error) WHERE run_id=?",
                       (state, error, run_id))
            self._mirror(db, run_id)

    def update(self, run_id: str, *, task_uuid: str | None = None,
               uploaded_bytes: int | None = None, retrieved: bool | None = None,
               info: dict[str, Any] | None = None) -> None:
        """Set what is given; `info` is merged into the run's info (None values drop a key)."""
        with self.write() as db:
            row = self._row(db, run_id)
            if task_uuid is not None:
                db.execute("UPDATE runs SET task_uuid=? WHERE run_id=?", (task_uuid, run_id))
            if uploaded_bytes is not None:
                db.execute("UPDATE runs SET uploaded_bytes=? WHERE run_id=?", (uploaded_bytes, run_id))
            if retrieved is not None:
                db.execute("UPDATE runs SET retrieved=? WHERE run_id=?", (int(retrieved), run_id))
            if info:
                merged = {**json.loads(row["info_json"] or "{}"), **info}
                merged = {k: v for k, v in merged.items() if v is not None}
                db.execute("UPDATE runs SET info_json=? WHERE run_id=?", (json.dumps(merged), run_id))
            self._mirror(db, run_id)

    def set_metrics(self, run_id: str, metrics: dict[str, Any], trial: int | None = None) -> None:
        with self.write() as db:
            self._row(db, run_id)
            db.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?)",
                       (run_id, -1 if trial is None else trial, json.dumps(metrics)))
            self._mirror(db, run_id)

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        with self.write() as db:
            self._row(db, run_id)
            db.executemany("INSERT OR REPLACE INTO tags VALUES (?,?,?)",
                           [(run_id, k, v) for k, v in tags.items()])
            self._mirror(db, run_id)

    def untag(self, run_id: str, keys: list[str]) -> list[str]:
        """Remove these tag keys; returns the ones the run did not have."""
        with self.write() as db:
            self._row(db, run_id)
            missing = []
            for key in keys:
                if db.execute("DELETE FROM tags WHERE run_id=? AND key=?", (run_id, key)).rowcount == 0:
                    missing.append(key)
            self._mirror(db, run_id)
            return missing

    def set_note(self, run_id: str, note: str | None) -> None:
        with self.write() as db:
            self._row(db, run_id)
            db.execute("UPDATE runs SET note=? WHERE run_id=?", (note or None, run_id))
            self._mirror(db, run_id)

    def remove(self, run_id: str) -> None:
        """The run's index rows and its folder, together: the folder is first moved aside (one
        rename), the rows deleted in one transaction that re-checks the run has ended, then the
        folder deleted.  A crash in between leaves a folder in runs/.trash that `gc` removes."""
        with self.run_lock(run_id, "fetch", wait=False) as free, self.run_lock(run_id, "resume", wait=False) as idle:
            if not free or not idle:
                raise QtrainError(f"run {run_id}: it is being {'retrieved' if not free else 'resumed'} by another "
                                  f"qtrain", hint="wait for that to end, then remove it")
            self._remove(run_id)

    def _remove(self, run_id: str) -> None:
        folder = self.artifacts_dir(run_id)
        trash = self.root / "runs" / TRASH / f"{run_id}.{secrets.token_hex(3)}"
        trash.parent.mkdir(exist_ok=True)
        moved = False
        try:
            with self.write() as db:
                row = self._row(db, run_id)
                if row["state"] not in FINAL_STATES:
                    raise QtrainError(f"run {run_id}: it is {row['state']}; it can be removed once "
                                      "it has ended", hint=f"qtrain cancel {run_id} first")
                if folder.exists():
                    os.rename(folder, trash)
                    moved = True
                for table in ("tags", "metrics", "states", "runs"):
                    db.execute(f"DELETE FROM {table} WHERE run_id=?", (run_id,))
        except BaseException:
            if moved and not folder.exists():
                os.rename(trash, folder)
            raise
        shutil.rmtree(trash, ignore_errors=True)

    @staticmethod
    def _row(db: sqlite3.Connection, run_id: str) -> sqlite3.Row:
        row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        if row is None:
            raise QtrainError(f"run {run_id}: not in the store (removed?)")
        return row

    # ------------------------------------------------------------------------------- reading
    @contextmanager
    def run_lock(self, run_id: str, name: str, wait: bool = True) -> Iterator[bool]:
        """An exclusive lock on one run (`submit`: its submission is under way; `fetch`: files are
        being retrieved into its folder; `resume`: a run continues it), held until the block ends
        or the process dies (a kill -9 too: flock).  Yields False without waiting when `wait` is
        False and another holds it.  The lock files live in runs/.locks, apart from the run's
        folder, which `remove` moves away while it holds them."""
        locks = self.root / "runs" / LOCKS
        locks.mkdir(exist_ok=True)
        with open(locks / f"{run_id}.{name}", "a") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                yield False
                return
            try:
                yield True
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def lock_held(self, run_id: str, name: str) -> bool:
        """Does a process (alive) hold this run's `name` lock now?"""
        if not (self.root / "runs" / LOCKS / f"{run_id}.{name}").exists():
            return False
        try:
            with self.run_lock(run_id, name, wait=False) as got:
                return not got
        except OSError:  # a read-only store: nobody can be writing into it
            return False

    def artifacts_dir(self, run_id: str, trial: int | None = None) -> Path:
        base = self.root / "runs" / run_id
        return base if trial is None else base / trial_dir(trial)

    def get(self, ref: str) -> RunRecord:
        run_id = self.resolve(ref)
        with self.connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            history = [dict(r) for r in db.execute(
                "SELECT state, at, detail FROM states WHERE run_id=? ORDER BY rowid", (run_id,))]
            metrics = {r["trial"]: json.loads(r["metrics"]) for r in db.execute(
                "SELECT trial, metrics FROM metrics WHERE run_id=?", (run_id,))}
            tags = {r["key"]: r["value"] for r in db.execute(
                "SELECT key, value FROM tags WHERE run_id=? ORDER BY key", (run_id,))}
        return record_from_row(row, history, metrics, tags)

    def list(self, limit: int | None = None) -> list[RunRecord]:
        """Every run (or the newest `limit`), newest first, with metrics and tags."""
        with self.connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC"
                              + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
            metrics: dict[str, dict[int, Any]] = {}
            for r in db.execute("SELECT run_id, trial, metrics FROM metrics"):
                metrics.setdefault(r["run_id"], {})[r["trial"]] = json.loads(r["metrics"])
            tags: dict[str, dict[str, str]] = {}
            for r in db.execute("SELECT run_id, key, value FROM tags ORDER BY key"):
                tags.setdefault(r["run_id"], {})[r["key"]] = r["value"]
        return [record_from_row(r, [], metrics.get(r["run_id"], {}), tags.get(r["run_id"], {})) for r in rows]

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        with connect(self.db_path, self.read_only, settings.submission().store_lock_seconds) as db:
            yield db

    def _mirror(self, db: sqlite3.Connection, run_id: str) -> None:
        self._row(db, run_id)
        write_record(db, self.artifacts_dir(run_id), run_id)

    def resolve(self, ref: str) -> str:
        """The run id `ref` names (`submit.store.names`)."""
        with self.connect() as db:
            return resolve(db, ref, self.root)

