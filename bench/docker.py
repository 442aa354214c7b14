"""Docker executor benchmark, each figure against a reference measured in the same run.

(a) Start-to-first-epoch: seconds from the task's submission to the runner's first epoch line,
    through the emulator's docker executor (the runner image) and through its process executor,
    on the same job (penguins).  Medians of --repeat tasks, after one warm-up task each.
    A bare `docker run IMAGE true` is timed too, to tell the container from the Python start-up.
(b) Image rebuild after a one-line change to runner/: `qtrain image build --offline` seconds,
    against the same build with nothing changed (all layers cached).

    python bench/docker.py [--repeat 3]     -> prints a table, writes bench/results/docker.json

Needs a Docker engine and the runner image (`qtrain image build --offline`).
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
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402
from submit.emulator import daemon  # noqa: E402


def first_epoch_seconds(executor: str, home: Path, repeat: int) -> list[float]:
    from jobs.load import load_job
    from submit.backends.local import LocalBackend
    from submit.run.follow import follow
    from submit.run.submission import submit_run
    from submit.store import Store
    from submit.ui import Ui

    loaded = load_job("penguins", ["train.epochs=3"])
    store = Store(home / "store")
    ui = Ui(json_mode=True)
    seconds = []
    with daemon.isolated(home, executor):
        backend = LocalBackend(executor)
        for i in range(repeat + 1):  # the first task warms caches up and is not counted
            run = submit_run(loaded, backend, store, ui)
            t0 = time.perf_counter()
            text = ""
            while "epoch=" not in text:
                text += backend.fresh_output(run.task_uuid)[0]
                time.sleep(0.02)
            if i:
                seconds.append(time.perf_counter() - t0)
            status = follow(run, backend, store, ui, quiet=True)
            assert status.state == "Success", status
    return seconds


def bare_start_seconds(repeat: int) -> dict:
    """`docker run --rm --network none IMAGE true` against `sh -c true`: the container alone."""
    from submit.image import CPU_TAG

    def timed(cmd):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        return time.perf_counter() - t0

    docker = [timed(["docker", "run", "--rm", "--network", "none", CPU_TAG, "true"]) for _ in range(repeat)]
    shell = [timed(["sh", "-c", "true"]) for _ in range(repeat)]
    return {"docker_run_true_seconds": statistics.median(docker), "sh_true_seconds": statistics.median(shell)}


def build_seconds() -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-m", "submit", "image", "build", "--offline"], cwd=ROOT,
                   check=True, capture_output=True)
    return time.perf_counter() - t0


def rebuild(repeat: int) -> dict:
    build_seconds()  # make sure the cache holds the current code
    cached = [build_seconds() for _ in range(repeat)]
    probe = ROOT / "runner" / "log.py"
    original = probe.read_text()
    changed = []
    try:
        for i in range(repeat):
            probe.write_text(original + f"# bench: one-line change {i}\n")
            changed.append(build_seconds())
    finally:
        probe.write_text(original)
        build_seconds()  # leave the image built from the real code
    return {"nothing_changed_seconds": statistics.median(cached),
            "one_line_change_seconds": statistics.median(changed),
            "samples": {"nothing_changed": cached, "one_line_change": changed}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "docker.json")
    args = parser.parse_args()
    from submit.image import CPU_TAG, docker_problem, image_id

    problem = docker_problem() or (None if image_id(CPU_TAG) else f"{CPU_TAG} is not built")
    if problem:
        raise SystemExit(f"bench/docker.py: {problem}")
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-docker-") as d:
        docker = first_epoch_seconds("docker", Path(d) / "docker", args.repeat)
        process = first_epoch_seconds("process", Path(d) / "process", args.repeat)
    dm, pm = statistics.median(docker), statistics.median(process)
    results = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "first_epoch": {"job": "penguins, 3 epochs", "docker_seconds": dm, "process_seconds": pm,
                        "docker_overhead_seconds": dm - pm, "docker_over_process": dm / pm,
                        "samples": {"docker": docker, "process": process}},
        "bare_container": bare_start_seconds(args.repeat),
        "rebuild": rebuild(args.repeat),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    r, b = results["rebuild"], results["bare_container"]
    print(f"(a) submission to first epoch: docker {dm:.2f}s, process {pm:.2f}s "
          f"(docker adds {dm - pm:+.2f}s, x{dm / pm:.1f}); a bare container start+stop takes "
          f"{b['docker_run_true_seconds']:.2f}s against {b['sh_true_seconds'] * 1000:.0f} ms for sh")
    print(f"(b) image rebuild: one-line runner change {r['one_line_change_seconds']:.1f}s, "
          f"nothing changed {r['nothing_changed_seconds']:.1f}s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
