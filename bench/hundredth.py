"""The hundredth run works too (issue 42): runs in a row on a local emulator with its default
account limits (maxBucket 100, maxTask 1000), one invocation, the process executor, each run
`qtrain run penguins --set train.epochs=1` through the CLI in this process.

1. reference: with QTRAIN_KEEP_REMOTE=1 (every run keeps its task and result bucket, as qtrain did
   before), runs until the first that fails: how many, and how it fails;
2. then `qtrain results gc --remote --yes` frees what the reference left;
3. qtrain as it is: RUNS runs in a row; how many succeed, every run's metrics.json in the store, and
   the buckets and tasks left on the account after them; the seconds a run takes over the first ten
   and the last ten (the hundredth run is not slower either).

    python bench/hundredth.py [--runs 300]  -> prints the figures, writes bench/results/hundredth.json
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402


def cli(*args: str) -> tuple[int, str, float]:
    """(exit status, stdout then stderr, seconds)."""
    from submit.cli import main

    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue() + err.getvalue(), time.perf_counter() - started


def account(endpoint) -> tuple[int, int]:
    import qarnot

    conn = qarnot.connection.Connection(client_token=endpoint.token, cluster_url=endpoint.url,
                                        storage_url=endpoint.s3_url)
    info = conn.user_info
    return info.bucket_count, info.task_count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=300)
    args = parser.parse_args()
    from jobs import settings
    from submit.emulator import daemon
    from submit.store import Store

    run = ["run", "penguins", "--set", "train.epochs=1", "--json"]
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-") as tmp:
        home = Path(tmp)
        store = home / "store"
        env = {"QTRAIN_STORE": str(store), "QARNOT_CLIENT_TOKEN": None, "QTRAIN_EMULATOR_LIMITS": None}
        with daemon.isolated(home, "process", env) as endpoint:
            # 1. the reference: every run keeps its task and bucket
            kept, failure = 0, None
            with settings.overriding({"QTRAIN_KEEP_REMOTE": "1"}):
                for _ in range(1000):
                    code, said, _ = cli(*run)
                    if code != 0:
                        failure = next((ln for ln in said.splitlines() if ln.startswith("error:")), said[-300:])
                        break
                    kept += 1
            buckets_full, tasks_full = account(endpoint)
            print(f"reference (tasks and buckets kept): {kept} runs succeeded, then: {failure}", flush=True)
            code, said, _ = cli("results", "gc", "--remote", "--yes")
            freed = next(ln for ln in said.splitlines() if ln.startswith("deleted"))
            buckets_freed, tasks_freed = account(endpoint)
            print(f"results gc --remote --yes: {freed} ({buckets_full} -> {buckets_freed} buckets, "
                  f"{tasks_full} -> {tasks_freed} tasks)", flush=True)
            # 3. qtrain as it is
            seconds, ok, ids = [], 0, []
            for i in range(args.runs):
                code, said, took = cli(*run)
                seconds.append(took)
                if code == 0:
                    ok += 1
                    ids.append(json.loads([ln for ln in said.splitlines() if ln.startswith("{")][-1])["run_id"])
                if (i + 1) % 50 == 0:
                    print(f"  {i + 1} runs: {ok} succeeded, account {account(endpoint)} (buckets, tasks)", flush=True)
            buckets_after, tasks_after = account(endpoint)
            db = Store(store)
            complete = sum((db.artifacts_dir(r) / "metrics.json").is_file() for r in ids)
    result = {
        "reference_runs_before_failing": kept, "reference_failure": failure,
        "reference_account": {"buckets": buckets_full, "tasks": tasks_full},
        "gc_remote": freed, "after_gc": {"buckets": buckets_freed, "tasks": tasks_freed},
        "runs": args.runs, "succeeded": ok, "metrics_in_store": complete,
        "account_after": {"buckets": buckets_after, "tasks": tasks_after},
        "seconds_first_10": statistics.median(seconds[:10]), "seconds_last_10": statistics.median(seconds[-10:]),
        "ratio_last_to_first": statistics.median(seconds[-10:]) / statistics.median(seconds[:10]),
        "machine": {"cpus": os.cpu_count()},
    }
    out = ROOT / "bench" / "results" / "hundredth.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{ok} of {args.runs} runs succeeded, {complete} with their metrics in the store; the account holds "
          f"{buckets_after} bucket(s) and {tasks_after} task(s); a run took {result['seconds_first_10']:.2f} s over "
          f"the first ten, {result['seconds_last_10']:.2f} s over the last ten -> {out}")


if __name__ == "__main__":
    main()
