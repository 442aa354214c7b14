"""Submission benchmark on the local emulator, each figure against a reference in the same run.

(a) Submission overhead: wall time of `qtrain run` minus `qtrain train` for the same 1-epoch job
    (penguins), with the emulator daemon already running (warm) and with it stopped (cold: the run
    starts it).  Medians of --repeat runs, each a fresh `python -m submit` process as a user types.
(b) A 100 MB dataset packaged and uploaded twice: bytes sent and seconds of each upload (the second
    must send 0 bytes of data), through the same code `qtrain run` uses.
(c) A 16-trial sweep: one task with 16 instances, total wall time against 16 x one trial submitted
    on its own.

    python bench/submission.py [--repeat 3] -> prints a table, writes bench/results/submission.json

It uses its own emulator (state and config in a temporary folder) and stops it at the end.
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def qtrain(*args: str, env: dict[str, str]) -> tuple[float, dict | None]:
    """Run `python -m submit ARGS` as a user would; (seconds, last-line JSON or None)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "submit", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"qtrain {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    return seconds, (json.loads(last) if last.startswith("{") else None)


def overhead(env: dict[str, str], tmp: Path, repeat: int) -> dict:
    job = ["penguins", "--set", "train.epochs=1"]
    store = ["--store", str(tmp / "store")]
    qtrain("emulator", "start", env=env)
    qtrain("run", *job, "--json", *store, env=env)  # warm-up: imports cached, fork server up
    train = [qtrain("train", *job, "--out", str(tmp / f"train-{i}"), env=env)[0] for i in range(repeat)]
    warm = [qtrain("run", *job, "--json", *store, env=env)[0] for _ in range(repeat)]
    cold = []
    for _ in range(repeat):
        qtrain("emulator", "stop", env=env)
        cold.append(qtrain("run", *job, "--json", *store, env=env)[0])
    t, w, c = (statistics.median(x) for x in (train, warm, cold))
    return {"job": "penguins, 1 epoch", "train_seconds": t, "run_warm_seconds": w, "run_cold_seconds": c,
            "overhead_warm_seconds": w - t, "overhead_cold_seconds": c - t,
            "run_warm_over_train": w / t, "target_overhead_warm_seconds": 1.0,
            "samples": {"train": train, "run_warm": warm, "run_cold": cold}}


def upload_twice(tmp: Path, size_mb: int) -> dict:
    import numpy as np

    from jobs.load import load_job
    from submit.backends import get_backend
    from submit.run.package import build_package

    n = size_mb * 1024 * 1024 // (32 * 32)
    rng = np.random.default_rng(0)
    np.save(tmp / "images.npy", rng.integers(0, 256, size=(n, 1, 32, 32), dtype=np.uint8))
    np.save(tmp / "labels.npy", rng.integers(0, 10, size=n, dtype=np.int64))
    (tmp / "big.yaml").write_text("name: big\ntask: classification\n"
                                  "data: {path: images.npy, labels: labels.npy}\nmodel: {kind: cnn}\n")
    backend = get_backend("local")
    rounds = []
    from jobs.files import _sha256

    for _ in range(2):
        _sha256.cache_clear()  # each `qtrain run` is a new process: it hashes the files again
        t0 = time.perf_counter()
        package = build_package(load_job(tmp / "big.yaml"))
        t1 = time.perf_counter()
        sent = backend.upload(package)
        t2 = time.perf_counter()
        rounds.append({"dataset_bytes": package.dataset_bytes, "uploaded_bytes": sent,
                       "hash_seconds": t1 - t0, "upload_seconds": t2 - t1})
    return {"dataset_mb": round(rounds[0]["dataset_bytes"] / 1e6, 1), "first": rounds[0],
            "second": rounds[1],
            "second_upload_over_first": rounds[1]["upload_seconds"] / rounds[0]["upload_seconds"]}


def sweep(env: dict[str, str], tmp: Path) -> dict:
    grid = "{model.hidden: [[8], [16], [32], [64]], train.lr: [0.001, 0.003, 0.01, 0.03]}"
    job = ["circles", "--set", "train.epochs=20"]
    store = ["--store", str(tmp / "store")]
    single, data = qtrain("run", *job, "--json", *store, env=env)
    total, swept = qtrain("run", *job, "--set", f"sweep={grid}", "--json", *store, env=env)
    return {"job": "circles, 20 epochs, 4 hidden sizes x 4 learning rates", "trials": len(swept["trials"]),
            "tasks": 1, "sweep_seconds": total, "single_trial_seconds": single,
            "sweep_over_16_singles": total / (16 * single),
            "best": swept["best"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "submission.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-") as d:
        tmp = Path(d)
        env = {**os.environ, "QTRAIN_STATE_DIR": str(tmp / "state"),
               "QTRAIN_CONFIG_DIR": str(tmp / "config"), "MPLBACKEND": "Agg",
               "QTRAIN_EMULATOR_EXECUTOR": "process"}  # bench/docker.py measures the other one
        env.pop("QARNOT_CLIENT_TOKEN", None)
        os.environ.update({k: env[k] for k in ("QTRAIN_STATE_DIR", "QTRAIN_CONFIG_DIR",
                                               "QTRAIN_EMULATOR_EXECUTOR")})
        try:
            results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                   "platform": platform.platform()},
                       "overhead": overhead(env, tmp, args.repeat)}
            qtrain("emulator", "start", env=env)
            results["upload"] = upload_twice(tmp, args.size_mb)
            results["sweep"] = sweep(env, tmp)
        finally:
            subprocess.run([sys.executable, "-m", "submit", "emulator", "stop"], cwd=ROOT, env=env,
                           capture_output=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    o, u, s = results["overhead"], results["upload"], results["sweep"]
    print(f"(a) qtrain train {o['train_seconds']:.2f}s; qtrain run warm {o['run_warm_seconds']:.2f}s "
          f"(overhead {o['overhead_warm_seconds']:+.2f}s, target <= 1 s), cold {o['run_cold_seconds']:.2f}s "
          f"(overhead {o['overhead_cold_seconds']:+.2f}s)")
    print(f"(b) {u['dataset_mb']} MB dataset: first upload {u['first']['uploaded_bytes']:,} bytes in "
          f"{u['first']['upload_seconds']:.2f}s; second {u['second']['uploaded_bytes']:,} bytes in "
          f"{u['second']['upload_seconds']:.2f}s (hashing {u['second']['hash_seconds']:.2f}s)")
    print(f"(c) {s['trials']}-trial sweep in one task: {s['sweep_seconds']:.1f}s against 16 x "
          f"{s['single_trial_seconds']:.1f}s = {16 * s['single_trial_seconds']:.1f}s "
          f"(ratio {s['sweep_over_16_singles']:.2f})")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
