"""Is `qtrain run`'s estimate the upper bound it says it is (issue 28)?  For catalog jobs, on each
executor this machine has (process; docker where an engine answers and the runner image is built),
the estimate made before each run against what the local emulator then charged for it:

    bound ratio = estimated cost / emulated cost   (instances x cores x wall time: what is billed)
    wall ratio  = estimated wall seconds / the longest instance's wall seconds

Every run counts, the first after the emulator starts included (it may find no warm container or
fork server yet), and each job runs with its own settings (early stopping on where it is): the
bound must hold for all of them (goal: every bound ratio >= 1.0).  The median says how loose it is.

    python bench/estimate.py [--jobs penguins circles digits-cnn grid-search] [--repeats 3]
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

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402

# jobs whose own epochs would make the bench long are shortened (the bound is per epoch anyway)
SHORTER = {"circles": ["train.epochs=200"], "grid-search": ["train.epochs=5"]}


def qtrain(*args: str, env: dict[str, str]) -> dict:
    proc = subprocess.run([sys.executable, "-m", "submit", *args], capture_output=True, text=True, env=env,
                          cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"qtrain {' '.join(args)} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def executors() -> list[str]:
    from submit.image import CPU_TAG, docker_problem, image_id

    return ["process"] + (["docker"] if docker_problem() is None and image_id(CPU_TAG) else [])


def measure(executor: str, jobs: list[str], repeats: int) -> dict[str, list[dict]]:
    import qarnot

    found: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "QTRAIN_STATE_DIR": f"{tmp}/state", "QTRAIN_CONFIG_DIR": f"{tmp}/config",
               "QTRAIN_STORE": f"{tmp}/store", "QTRAIN_EMULATOR_EXECUTOR": executor}
        try:
            for job in jobs:
                for i in range(repeats):
                    sets = [a for s in SHORTER.get(job, []) for a in ("--set", s)]
                    run = qtrain("run", job, *sets, "--json", env=env)  # the first one starts the emulator
                    status = qtrain("emulator", "status", "--json", env=env)
                    token = (Path(tmp) / "config" / "emulator-token").read_text().strip()
                    conn = qarnot.connection.Connection(client_token=token, cluster_url=status["url"])
                    task = conn.retrieve_task(run["task_uuid"])
                    measured = max(inst.wall_time_sec for inst in task.completed_instances)
                    fp, est = run["footprint"], run["footprint"]["estimate"]
                    row = {"run": i, "estimated_cost_eur": est["cost_eur"], "cost_eur": fp["cost_eur"],
                           "bound_ratio": est["cost_eur"] / fp["cost_eur"],
                           "estimated_wall_seconds": est["wall_seconds"], "measured_wall_seconds": measured,
                           "wall_ratio": est["wall_seconds"] / measured, "epochs_run": run["metrics"]["epochs_run"]}
                    found.setdefault(job, []).append(row)
                    print(f"{executor:8} {job:12} #{i}: estimate {est['wall_seconds']:6.1f} s {est['cost_eur']:.3g} EUR, "
                          f"charged for {measured:5.1f} s {fp['cost_eur']:.3g} EUR: bound x{row['bound_ratio']:.2f}",
                          flush=True)
        finally:
            subprocess.run([sys.executable, "-m", "submit", "emulator", "stop"], env=env, cwd=ROOT,
                           capture_output=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", nargs="+", default=["penguins", "circles", "digits-cnn", "grid-search"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "estimate.json")
    args = parser.parse_args()
    results = {executor: measure(executor, args.jobs, args.repeats) for executor in executors()}
    summary = {}
    for executor, jobs in results.items():
        for job, rows in jobs.items():
            bounds = [r["bound_ratio"] for r in rows]
            summary[f"{executor}/{job}"] = {"bound_ratio_min": min(bounds), "bound_ratio_median": statistics.median(bounds),
                                            "bound_ratio_max": max(bounds), "holds": min(bounds) >= 1.0}
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "repeats": args.repeats, "shortened": SHORTER, "summary": summary, "runs": results,
           "bound_holds_everywhere": all(s["holds"] for s in summary.values())}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    for case, s in summary.items():
        print(f"{case:22} estimate / charged: min x{s['bound_ratio_min']:.2f}, median x{s['bound_ratio_median']:.2f}, "
              f"max x{s['bound_ratio_max']:.2f} {'(bound holds)' if s['holds'] else '(UNDER: the bound fails)'}")
    print(f"bound holds in every case: {out['bound_holds_everywhere']}  -> {args.out}")


if __name__ == "__main__":
    main()
