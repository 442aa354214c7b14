"""The grammar of run names: how a RUN on the command line finds its run in the index."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

from jobs.errors import QtrainError
from submit.store.records import parse_tag


def resolve(db: sqlite3.Connection, ref: str, root: Path) -> str:
    """The run id `ref` names: an id; `@TAG` or `@KEY=VALUE` (the latest run with that tag);
    `JOB~N` (the Nth run of JOB before its latest); a job name (its latest run); a unique
    prefix or suffix of an id (like git's short hashes)."""
    ref = ref.strip()
    hint = "qtrain results list shows the runs"
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
        raise QtrainError(f"run {ref}: no run of a job named {job} in the store {root}",
                          hint=hint)
    like = ref.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    ids = [r["run_id"] for r in db.execute(
        "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' OR run_id LIKE ? ESCAPE '\\' "
        "ORDER BY created DESC", (f"{like}%", f"%{like}"))]
    if not ids:
        raise QtrainError(f"run {ref}: not in the store {root} (no run id, job name or "
                          "tag matches)", hint=hint)
    if len(ids) > 1:
        shown = ", ".join(ids[:4]) + (f" and {len(ids) - 4} more" if len(ids) > 4 else "")
        raise QtrainError(f"run {ref}: ambiguous, {len(ids)} runs match: {shown}",
                          hint="give more of the id, a job name, JOB~N or @TAG")
    return ids[0]
