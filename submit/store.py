"""The results store: a SQLite index of runs plus one artifact directory per run (per trial).

    <root>/index.sqlite          runs, their state history, metrics per trial, tags
    <root>/runs/<run_id>/        the results contract of a run (trial-<i>/ for sweeps)
    <root>/runs/.trash/          folders of removed runs, on their way out

A run's state is the truth about its task (`succeeded|failed|cancelled` as soon as the task has
ended), and `retrieved` says whether its files are in the store yet.  A run can be named by its
id, a unique prefix or suffix of it, a job name (its latest run), `JOB~N` (the Nth run of JOB
before the latest) or `@TAG` / `@KEY=VALUE` (the latest run with that tag).

SQLite in WAL mode with a busy timeout and `BEGIN IMMEDIATE` transactions: several `qtrain run`
processes writing into one store at once lose nothing.  The store keeps what a run is (job, hashes,
backend, profile, task uuid, states with times, metrics), never credentials.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from jobs.errors import QtrainError
from jobs.load import sweep_trials
from jobs.results import Metrics, SweepSummary, atomic_write, headline, parse_metrics, read_json, summarize, trial_dir
from submit.config import store_lock_seconds

# submitting: recorded before anything is sent, and until the backend has named its task (a run
# left so by a killed submitter is recovered by its tag, `submit.runs.recover`)
STATES = ("submitting", "submitted", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")

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
RECORD = ".run-record.json"  # each run folder's copy of its index entry (`Store.reindex`)
RECORD_FORMAT = "qtrain-run-record/1"
TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}")
TRASH = ".trash"


def parse_tag(item: str, where: str = "tag") -> tuple[str, str]:
    """`key=value` or a bare `key` (value "") -> (key, value); a clear error otherwise."""
    key, _, value = item.partition("=")
    key = key.strip()
    if not TAG_KEY.fullmatch(key):
        raise QtrainError(f"{where} {item!r}: a tag is KEY or KEY=VALUE, KEY made of letters, "
                          "digits and _ . : / - (at most 64)", hint="e.g. --tag baseline or --tag lr=0.01")
    if "\n" in value or len(value) > 500:
        raise QtrainError(f"{where} {item!r}: a tag value is one line of at most 500 characters")
    return key, value.strip()


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class RunRecord:
    run_id: str
    created: str
    job_name: str
    job_hash: str
    dataset_hash: str
    backend: str
    profile: str
    task_uuid: str | None
    state: str
    error: str | None
    trials: int
    uploaded_bytes: int
    job: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[int, dict[str, Any]] = field(default_factory=dict)  # trial (-1: no sweep) -> metrics
    retrieved: bool = False  # its task's files are in the store
    note: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # executor, image digest, data paths, ...

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def pending(self) -> bool:
        """Its task may still have something to give: running, or ended and not yet retrieved (or a
        submission not known to have reached the backend, whose task may exist)."""
        return (bool(self.task_uuid) or self.state == "submitting") and not (self.done and self.retrieved)

    @property
    def task(self) -> str:
        return self.job.get("task") or "classification"

    def sweep(self) -> SweepSummary | None:
        """A sweep's trials and best (`jobs.results.select_best` over the indexed metrics)."""
        if not self.trials:
            return None
        return summarize(self.task, {t: m for t, m in self.metrics.items() if t >= 0},
                         sweep_trials(self.job.get("sweep") or {})[:self.trials], self.job_name)

    def chosen(self) -> tuple[int | None, dict[str, Any] | None]:
        """(trial, metrics) of the model the run stands for: the run's own, or a sweep's best
        trial, chosen on validation (never on test).  (None, None) when there is none yet."""
        if not self.trials:
            return None, self.metrics.get(-1)
        best = self.sweep().best
        return (None, None) if best is None else (best.trial, self.metrics.get(best.trial))

    def headline(self) -> tuple[str, float | None]:
        """The headline metric and its test value for the chosen model."""
        name = headline(self.task).metric
        m: Metrics | None = parse_metrics(self.chosen()[1])
        return name, (m.score("test", name) if m else None)


def read_only(folder: Path) -> bool:
    """Is `folder` on a read-only file system, or not writable by this user?"""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY) or not os.access(folder, os.W_OK)
    except OSError:
        return False


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
            self._init_db()

    def _init_db(self) -> None:
        """WAL mode (kept in the file, so set once) and the schema.  Several processes opening a
        new store at once can get SQLITE_BUSY here without the busy handler being called: retry."""
        if self.read_only:  # read as it is: listing and showing work, writing says why not
            if not self.db_path.is_file():
                raise QtrainError(f"results store {self.root} is read-only and has no index yet",
                                  hint="make it writable, or choose another with --store")
            try:
                with self._connect() as db:
                    db.execute("SELECT COUNT(*) FROM runs").fetchone()
            except sqlite3.DatabaseError as exc:
                raise self._damaged(exc) from exc
            return
        for attempt in range(100):
            try:
                with self._connect() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                    self._migrate(db)
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

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}
        if all(name in have for name, _, _ in MIGRATIONS):
            return
        db.execute("BEGIN IMMEDIATE")
        try:
            have = {r["name"] for r in db.execute("PRAGMA table_info(runs)")}  # another process?
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

    # ------------------------------------------------------------------------------ plumbing
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        wait = store_lock_seconds()
        if self.read_only:  # no -shm/-wal can be made there: open the file as it is, read-only
            db = sqlite3.connect(f"{self.db_path.absolute().as_uri()}?mode=ro&immutable=1", uri=True,
                                 isolation_level=None)
        else:
            db = sqlite3.connect(self.db_path, timeout=wait, isolation_level=None)
        try:
            db.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    def ensure_writable(self) -> None:
        """A clear error now, rather than after an upload, when nothing can be saved here."""
        if self.read_only:
            raise QtrainError(f"results store {self.root} is read-only: nothing can be saved in it",
                              hint="make it writable, or choose another with --store")

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self.ensure_writable()
        with self._connect() as db:
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
        with self._write() as db:
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
        with self._write() as db:
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
        with self._write() as db:
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
        with self._write() as db:
            self._row(db, run_id)
            db.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?)",
                       (run_id, -1 if trial is None else trial, json.dumps(metrics)))
            self._mirror(db, run_id)

    def tag(self, run_id: str, tags: dict[str, str]) -> None:
        with self._write() as db:
            self._row(db, run_id)
            db.executemany("INSERT OR REPLACE INTO tags VALUES (?,?,?)",
                           [(run_id, k, v) for k, v in tags.items()])
            self._mirror(db, run_id)

    def untag(self, run_id: str, keys: list[str]) -> list[str]:
        """Remove these tag keys; returns the ones the run did not have."""
        with self._write() as db:
            self._row(db, run_id)
            missing = []
            for key in keys:
                if db.execute("DELETE FROM tags WHERE run_id=? AND key=?", (run_id, key)).rowcount == 0:
                    missing.append(key)
            self._mirror(db, run_id)
            return missing

    def set_note(self, run_id: str, note: str | None) -> None:
        with self._write() as db:
            self._row(db, run_id)
            db.execute("UPDATE runs SET note=? WHERE run_id=?", (note or None, run_id))
            self._mirror(db, run_id)

    def remove(self, run_id: str) -> None:
        """The run's index rows and its folder, together: the folder is first moved aside (one
        rename), the rows deleted in one transaction that re-checks the run has ended, then the
        folder deleted.  A crash in between leaves a folder in runs/.trash that `gc` removes."""
        folder = self.artifacts_dir(run_id)
        trash = self.root / "runs" / TRASH / f"{run_id}.{secrets.token_hex(3)}"
        trash.parent.mkdir(exist_ok=True)
        moved = False
        try:
            with self._write() as db:
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

    def _mirror(self, db: sqlite3.Connection, run_id: str) -> None:
        """The run's index entry, also in its own folder (RECORD), written inside the transaction
        that changed it (so in the same order as the index): `reindex` rebuilds the index from
        these when index.sqlite is lost or damaged."""
        row = self._row(db, run_id)
        record = {
            "format": RECORD_FORMAT, "run": {k: row[k] for k in row.keys()},
            "states": [dict(r) for r in db.execute(
                "SELECT state, at, detail FROM states WHERE run_id=? ORDER BY rowid", (run_id,))],
            "metrics": {str(r["trial"]): json.loads(r["metrics"]) for r in db.execute(
                "SELECT trial, metrics FROM metrics WHERE run_id=?", (run_id,))},
            "tags": {r["key"]: r["value"] for r in db.execute(
                "SELECT key, value FROM tags WHERE run_id=?", (run_id,))},
        }
        folder = self.artifacts_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record, indent=1, sort_keys=True)
        try:
            if (folder / RECORD).read_text() == text:
                return  # unchanged: a repeated fetch touches nothing
        except OSError:
            pass
        atomic_write(folder / RECORD, text)

    def reindex(self) -> dict[str, Any]:
        """A new index.sqlite from the run folders' records (the old one, if any, kept beside it
        as index.sqlite.damaged-<time>).  Returns what was found."""
        self.ensure_writable()
        records, skipped = [], []
        for folder in sorted((self.root / "runs").iterdir()):
            if not folder.is_dir() or folder.name.startswith("."):
                continue
            data = read_json(folder / RECORD)
            if not data or data.get("format") != RECORD_FORMAT or data.get("run", {}).get("run_id") != folder.name:
                skipped.append(folder.name)
                continue
            records.append(data)
        fresh = self.root / f".index.sqlite.{secrets.token_hex(3)}"
        db = sqlite3.connect(fresh, isolation_level=None)
        try:
            db.executescript(SCHEMA)
            have = {r[1] for r in db.execute("PRAGMA table_info(runs)")}
            for name, alter, _ in MIGRATIONS:
                if name not in have:
                    db.execute(alter)
            db.execute("BEGIN")
            for data in records:
                run = data["run"]
                cols = list(run)
                db.execute(f"INSERT INTO runs ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                           [run[c] for c in cols])
                db.executemany("INSERT INTO states VALUES (?,?,?,?)",
                               [(run["run_id"], h["state"], h["at"], h.get("detail")) for h in data["states"]])
                db.executemany("INSERT INTO metrics VALUES (?,?,?)",
                               [(run["run_id"], int(t), json.dumps(m)) for t, m in data["metrics"].items()])
                db.executemany("INSERT INTO tags VALUES (?,?,?)",
                               [(run["run_id"], k, v) for k, v in data["tags"].items()])
            db.execute("COMMIT")
        finally:
            db.close()
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        kept = None
        for suffix in ("", "-wal", "-shm"):
            old = self.root / f"index.sqlite{suffix}"
            if old.exists():
                if suffix == "":
                    kept = self.root / f"index.sqlite.damaged-{stamp}"
                    os.replace(old, kept)
                else:
                    old.unlink()
        os.replace(fresh, self.db_path)
        self._init_db()
        return {"runs": len(records), "skipped": skipped, "old_index": str(kept) if kept else None}

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
        being retrieved into its folder), held until the block ends or the process dies (a kill -9
        too: flock).  Yields False without waiting when `wait` is False and another holds it."""
        import fcntl

        folder = self.artifacts_dir(run_id)
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f".{name}.lock", "a") as fh:
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
        if not (self.artifacts_dir(run_id) / f".{name}.lock").exists():
            return False
        try:
            with self.run_lock(run_id, name, wait=False) as got:
                return not got
        except OSError:  # a read-only store: nobody can be writing into it
            return False

    def artifacts_dir(self, run_id: str, trial: int | None = None) -> Path:
        base = self.root / "runs" / run_id
        return base if trial is None else base / trial_dir(trial)

    def resolve(self, ref: str) -> str:
        """The run id `ref` names: an id; `@TAG` or `@KEY=VALUE` (the latest run with that tag);
        `JOB~N` (the Nth run of JOB before its latest); a job name (its latest run); a unique
        prefix or suffix of an id (like git's short hashes)."""
        ref = ref.strip()
        hint = "qtrain results list shows the runs"
        with self._connect() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id=?", (ref,)).fetchone():
                return ref
            if ref.startswith("@"):
                key, value = parse_tag(ref[1:], "run")
                sql = ("SELECT r.run_id FROM runs r JOIN tags t ON t.run_id=r.run_id WHERE t.key=?"
                       + (" AND t.value=?" if "=" in ref else "") + " ORDER BY r.created DESC LIMIT 1")
                row = db.execute(sql, (key, value) if "=" in ref else (key,)).fetchone()
                if row is None:
                    raise QtrainError(f"run {ref}: no run is tagged {ref[1:]}",
                                      hint="qtrain results tag RUN KEY=VALUE tags one")
                return row["run_id"]
            back = re.fullmatch(r"(.+)~(\d+)", ref)
            job, n = (back.group(1), int(back.group(2))) if back else (ref, 0)
            rows = db.execute("SELECT run_id FROM runs WHERE job_name=? ORDER BY created DESC",
                              (job,)).fetchall()
            if rows:
                if n >= len(rows):
                    raise QtrainError(f"run {ref}: job {job} has {len(rows)} run(s), so "
                                      f"{job}~{len(rows) - 1} is its oldest", hint=hint)
                return rows[n]["run_id"]
            if back:
                raise QtrainError(f"run {ref}: no run of a job named {job} in the store {self.root}",
                                  hint=hint)
            like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            ids = [r["run_id"] for r in db.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' OR run_id LIKE ? ESCAPE '\\' "
                "ORDER BY created DESC", (f"{like}%", f"%{like}"))]
        if not ids:
            raise QtrainError(f"run {ref}: not in the store {self.root} (no run id, job name or "
                              "tag matches)", hint=hint)
        if len(ids) > 1:
            shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
            raise QtrainError(f"run {ref}: ambiguous, {len(ids)} runs match: {shown}",
                              hint="give more of the id, a job name, JOB~N or @TAG")
        return ids[0]

    def get(self, ref: str) -> RunRecord:
        run_id = self.resolve(ref)
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            history = [dict(r) for r in db.execute(
                "SELECT state, at, detail FROM states WHERE run_id=? ORDER BY rowid", (run_id,))]
            metrics = {r["trial"]: json.loads(r["metrics"]) for r in db.execute(
                "SELECT trial, metrics FROM metrics WHERE run_id=?", (run_id,))}
            tags = {r["key"]: r["value"] for r in db.execute(
                "SELECT key, value FROM tags WHERE run_id=? ORDER BY key", (run_id,))}
        return _record(row, history, metrics, tags)

    def list(self, limit: int | None = None) -> list[RunRecord]:
        """Every run (or the newest `limit`), newest first, with metrics and tags."""
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC"
                              + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
            metrics: dict[str, dict[int, Any]] = {}
            for r in db.execute("SELECT run_id, trial, metrics FROM metrics"):
                metrics.setdefault(r["run_id"], {})[r["trial"]] = json.loads(r["metrics"])
            tags: dict[str, dict[str, str]] = {}
            for r in db.execute("SELECT run_id, key, value FROM tags ORDER BY key"):
                tags.setdefault(r["run_id"], {})[r["key"]] = r["value"]
        return [_record(r, [], metrics.get(r["run_id"], {}), tags.get(r["run_id"], {})) for r in rows]

    # ---------------------------------------------------------------------------- garbage
    def garbage(self, older_than: float = 3600.0) -> dict[str, list[Path | str]]:
        """What `gc` would remove: folders in runs/ no run owns (and runs/.trash), temporary
        files of retrievals that died (older than `older_than` seconds, so a retrieval going on
        now keeps its own), and half-written runs: submitted more than `older_than` seconds ago
        and never given a task, so nothing can ever come of them."""
        runs_dir = self.root / "runs"
        with self._connect() as db:
            known = {r["run_id"] for r in db.execute("SELECT run_id FROM runs")}
            stale_cut = datetime.fromtimestamp(time.time() - older_than, timezone.utc)
            half = [r["run_id"] for r in db.execute(
                "SELECT run_id FROM runs WHERE task_uuid IS NULL AND state='submitted' AND created < ?",
                (stale_cut.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),))]
        trash = runs_dir / TRASH
        orphans = [p for p in sorted(runs_dir.iterdir()) if p.is_dir() and p.name not in known
                   and p != trash]
        orphans += sorted(trash.iterdir()) if trash.is_dir() else []  # removals that died midway
        cutoff = time.time() - older_than
        temps = [p for d in sorted(runs_dir.iterdir()) if d.name in known
                 for p in d.rglob(".*") if p.is_file() and p.name.endswith((".tmp", ".part"))
                 and p.stat().st_mtime < cutoff]
        return {"orphan_folders": orphans, "temporary_files": temps, "half_written_runs": half}

    def collect(self, garbage: dict[str, list[Path | str]]) -> None:
        for path in garbage["orphan_folders"]:
            if Path(path).is_dir():
                shutil.rmtree(path, ignore_errors=True)
            else:
                Path(path).unlink(missing_ok=True)
        for path in garbage["temporary_files"]:
            Path(path).unlink(missing_ok=True)
        for run_id in garbage["half_written_runs"]:
            with self._write() as db:  # still half-written (no task) now?
                row = db.execute("SELECT task_uuid FROM runs WHERE run_id=?", (run_id,)).fetchone()
                if row is None or row["task_uuid"]:
                    continue
                db.execute("UPDATE runs SET state='failed', error=? WHERE run_id=?",
                           ("submission never completed", run_id))
            self.remove(str(run_id))


def _record(row: sqlite3.Row, history: list[dict[str, Any]], metrics: dict[int, dict[str, Any]],
            tags: dict[str, str]) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"], created=row["created"], job_name=row["job_name"],
        job_hash=row["job_hash"], dataset_hash=row["dataset_hash"], backend=row["backend"],
        profile=row["profile"], task_uuid=row["task_uuid"], state=row["state"], error=row["error"],
        trials=row["trials"], uploaded_bytes=row["uploaded_bytes"], job=json.loads(row["job_json"]),
        history=history, metrics=metrics, retrieved=bool(row["retrieved"]), note=row["note"],
        tags=tags, info=json.loads(row["info_json"] or "{}"))
