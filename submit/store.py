"""The results store: a SQLite index of runs plus one artifact directory per run (per trial).

    <root>/index.sqlite          runs, their state history, metrics per trial
    <root>/runs/<run_id>/        the results contract of a run (trial-<i>/ for sweeps)

SQLite in WAL mode with a busy timeout and `BEGIN IMMEDIATE` transactions: several `qtrain run`
processes writing into one store at once lose nothing.  The store keeps what a run is (job, hashes,
backend, profile, task uuid, states with times, metrics), never credentials.
"""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from jobs.errors import QtrainError
from jobs.load import sweep_trials
from jobs.results import Metrics, SweepSummary, headline, parse_metrics, summarize, trial_dir

STATES = ("submitted", "running", "succeeded", "failed", "cancelled")
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
CREATE INDEX IF NOT EXISTS runs_created ON runs(created);
"""


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

    @property
    def done(self) -> bool:
        return self.state in FINAL_STATES

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


class Store:
    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        try:
            (self.root / "runs").mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise QtrainError(f"results store {self.root}: cannot create it ({exc.strerror})",
                              hint="choose another folder with --store or QTRAIN_STORE") from exc
        self.db_path = self.root / "index.sqlite"
        self._init_db()

    def _init_db(self) -> None:
        """WAL mode (kept in the file, so set once) and the schema.  Several processes opening a
        new store at once can get SQLITE_BUSY here without the busy handler being called: retry."""
        for attempt in range(100):
            try:
                with self._connect() as db:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.executescript(SCHEMA)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                time.sleep(0.02 * (attempt + 1))
        raise QtrainError(f"results store {self.db_path}: locked by another process")

    # ------------------------------------------------------------------------------ plumbing
    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.db_path, timeout=60, isolation_level=None)
        try:
            db.execute("PRAGMA busy_timeout=60000")
            db.row_factory = sqlite3.Row
            yield db
        finally:
            db.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as db:
            for attempt in range(50):
                try:
                    db.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError:  # locked past the busy timeout: back off
                    time.sleep(0.05 * (attempt + 1))
            else:
                raise QtrainError(f"results store {self.db_path}: locked by another process")
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
                   profile: str, job: dict[str, Any], trials: int = 0) -> RunRecord:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        run_id = f"{stamp}-{job_name}-{secrets.token_hex(3)}"
        created = now()
        with self._write() as db:
            db.execute(
                "INSERT INTO runs (run_id, created, job_name, job_hash, dataset_hash, backend, "
                "profile, state, trials, job_json) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (run_id, created, job_name, job_hash, dataset_hash, backend, profile, "submitted",
                 trials, json.dumps(job, sort_keys=True)))
            db.execute("INSERT INTO states VALUES (?,?,?,?)", (run_id, "submitted", created, None))
        self.artifacts_dir(run_id).mkdir(parents=True, exist_ok=True)
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

    def update(self, run_id: str, *, task_uuid: str | None = None,
               uploaded_bytes: int | None = None) -> None:
        with self._write() as db:
            if task_uuid is not None:
                db.execute("UPDATE runs SET task_uuid=? WHERE run_id=?", (task_uuid, run_id))
            if uploaded_bytes is not None:
                db.execute("UPDATE runs SET uploaded_bytes=? WHERE run_id=?", (uploaded_bytes, run_id))

    def set_metrics(self, run_id: str, metrics: dict[str, Any], trial: int | None = None) -> None:
        with self._write() as db:
            db.execute("INSERT OR REPLACE INTO metrics VALUES (?,?,?)",
                       (run_id, -1 if trial is None else trial, json.dumps(metrics)))

    # ------------------------------------------------------------------------------- reading
    def artifacts_dir(self, run_id: str, trial: int | None = None) -> Path:
        base = self.root / "runs" / run_id
        return base if trial is None else base / trial_dir(trial)

    def resolve(self, ref: str) -> str:
        """A run id, or a unique prefix or suffix of one (like git's short hashes)."""
        with self._connect() as db:
            rows = db.execute("SELECT run_id FROM runs WHERE run_id=? OR run_id LIKE ? OR "
                              "run_id LIKE ? ORDER BY created", (ref, f"{ref}%", f"%{ref}")).fetchall()
        ids = [r["run_id"] for r in rows]
        if ref in ids:
            return ref
        if not ids:
            raise QtrainError(f"run {ref}: not in the store {self.root}",
                              hint="qtrain results list shows the runs")
        if len(ids) > 1:
            raise QtrainError(f"run {ref}: ambiguous, matches {', '.join(ids[:5])}",
                              hint="give more of the run id")
        return ids[0]

    def get(self, ref: str) -> RunRecord:
        run_id = self.resolve(ref)
        with self._connect() as db:
            row = db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
            history = [dict(r) for r in db.execute(
                "SELECT state, at, detail FROM states WHERE run_id=? ORDER BY rowid", (run_id,))]
            metrics = {r["trial"]: json.loads(r["metrics"]) for r in db.execute(
                "SELECT trial, metrics FROM metrics WHERE run_id=?", (run_id,))}
        return _record(row, history, metrics)

    def list(self, limit: int | None = None) -> list[RunRecord]:
        with self._connect() as db:
            rows = db.execute("SELECT * FROM runs ORDER BY created DESC"
                              + (" LIMIT ?" if limit else ""), (limit,) if limit else ()).fetchall()
            metrics: dict[str, dict[int, Any]] = {}
            for r in db.execute("SELECT run_id, trial, metrics FROM metrics"):
                metrics.setdefault(r["run_id"], {})[r["trial"]] = json.loads(r["metrics"])
        return [_record(r, [], metrics.get(r["run_id"], {})) for r in rows]


def _record(row: sqlite3.Row, history: list[dict[str, Any]],
            metrics: dict[int, dict[str, Any]]) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"], created=row["created"], job_name=row["job_name"],
        job_hash=row["job_hash"], dataset_hash=row["dataset_hash"], backend=row["backend"],
        profile=row["profile"], task_uuid=row["task_uuid"], state=row["state"], error=row["error"],
        trials=row["trials"], uploaded_bytes=row["uploaded_bytes"], job=json.loads(row["job_json"]),
        history=history, metrics=metrics)
