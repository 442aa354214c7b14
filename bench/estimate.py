"""How good `qtrain run --estimate` is (issue 12): for catalog jobs, the estimate made before the
run against what the run took on the local emulator, as ratios (goal: within a factor of 2 either
way; medians of --repeats runs, with the spread):

    estimated wall seconds / measured wall seconds of the task's instances
    estimated cost         / the cost the emulator reported (its emulated rate)

Early stopping only shortens a run, so `--set train.early_stopping=null` is passed: the estimate
and the run train the same epochs; one run before them is not counted (the first after the emulator starts may find no
warm container yet).  The measured wall time is the instances' (the SDK's
`completed_instances[*].wall_time_sec`, the longest of a sweep's), which is what the emulator bills.

    python bench/estimate.py [--jobs penguins digits-cnn] [--repeats 3]
        -> prints the figures, writes bench/results/estimate.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def qtrain(*args: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "submit", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"qtrain {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", nargs="+", default=["penguins", "digits-cnn"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimate.json")
    args = parser.parse_args()
    import qarnot

    from submit.emulator import daemon

    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "QTRAIN_STATE_DIR": f"{tmp}/state", "QTRAIN_CONFIG_DIR": f"{tmp}/config",
               "QTRAIN_STORE": f"{tmp}/store"}
        os.environ.update({k: env[k] for k in ("QTRAIN_STATE_DIR", "QTRAIN_CONFIG_DIR")})
        endpoint, _ = daemon.start()
        try:
            conn = qarnot.connection.Connection(client_token=endpoint.token, cluster_url=endpoint.url)
            # not counted: the first run after the emulator starts may find no warm container yet
            # (a fresh one costs ~3 s more than the estimate's startup)
            qtrain("run", "penguins", "--set", "train.epochs=1", "--json", env=env)
            for job in args.jobs:
                walls, costs, rows = [], [], []
                for i in range(args.repeats):
                    run = qtrain("run", job, "--set", "train.early_stopping=null", "--json", env=env)
                    fp = run["footprint"]
                    task = conn.retrieve_task(run["task_uuid"])
                    measured = max(inst.wall_time_sec for inst in task.completed_instances)
                    est = fp["estimate"]
                    walls.append(est["wall_seconds"] / measured)
                    costs.append(est["cost_eur"] / fp["cost_eur"])
                    rows.append({"estimated_wall_seconds": est["wall_seconds"], "measured_wall_seconds": measured,
                                 "estimated_cost_eur": est["cost_eur"], "cost_eur": fp["cost_eur"]})
                    print(f"{job} #{i}: estimate {est['wall_seconds']:.1f} s, measured {measured:.1f} s "
                          f"(x{walls[-1]:.2f}); cost x{costs[-1]:.2f}", flush=True)
                results[job] = {
                    "wall_ratio": statistics.median(walls), "wall_ratio_min": min(walls),
                    "wall_ratio_max": max(walls), "cost_ratio": statistics.median(costs),
                    "cost_ratio_min": min(costs), "cost_ratio_max": max(costs), "runs": rows,
                    "within_factor_2": all(0.5 <= r <= 2 for r in walls)}
        finally:
            daemon.stop()
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                       "platform": platform.platform()},
           "executor": endpoint.executor, "repeats": args.repeats, "jobs": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for job, r in results.items():
        print(f"{job}: estimated / measured wall time x{r['wall_ratio']:.2f} "
              f"[{r['wall_ratio_min']:.2f}-{r['wall_ratio_max']:.2f}], cost x{r['cost_ratio']:.2f} "
              f"(goal: within x0.5-x2)")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
