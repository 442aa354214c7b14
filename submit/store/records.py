"""What the store says a run is: its record, the states it moves through, its tags."""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from jobs.errors import QtrainError
from jobs.load import sweep_trials
from jobs.results import Metrics, SweepSummary, headline, parse_metrics, summarize

# submitting: recorded before anything is sent, and until the backend has named its task (a run
# left so by a killed submitter is recovered by its tag, `submit.run.submission.recover`)
STATES = ("submitting", "submitted", "running", "succeeded", "failed", "cancelled")
FINAL_STATES = ("succeeded", "failed", "cancelled")
TAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,63}")


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
        """classification or regression: the job's; a script job's, what its predictions were
        (classification, for the headline's sake, when it reported none)."""
        if self.job.get("task"):
            return self.job["task"]
        for m in self.metrics.values():
            if isinstance(m, dict) and m.get("task") in ("classification", "regression"):
                return m["task"]
        return "classification"

    @property
    def kind(self) -> str:
        """What the run trained, in words: its task; a script job: "script" and what it reported."""
        if not self.job.get("script"):
            return self.task
        reported = {m.get("task") for m in self.metrics.values() if isinstance(m, dict)} - {None}
        return "script" + (f", {reported.pop()}" if len(reported) == 1 else "")

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


def record_from_row(row: sqlite3.Row, history: list[dict[str, Any]], metrics: dict[int, dict[str, Any]],
            tags: dict[str, str]) -> RunRecord:
    return RunRecord(
        run_id=row["run_id"], created=row["created"], job_name=row["job_name"],
        job_hash=row["job_hash"], dataset_hash=row["dataset_hash"], backend=row["backend"],
        profile=row["profile"], task_uuid=row["task_uuid"], state=row["state"], error=row["error"],
        trials=row["trials"], uploaded_bytes=row["uploaded_bytes"], job=json.loads(row["job_json"]),
        history=history, metrics=metrics, retrieved=bool(row["retrieved"]), note=row["note"],
        tags=tags, info=json.loads(row["info_json"] or "{}"))
