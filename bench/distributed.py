"""One training across processes (issue 26), measured in one invocation.

CPU (default): the same job through `qtrain run` on a local emulator of its own (process executor),
as 1 process and as 2 nodes x 1 process (gloo, the instances on loopback), with the same global
batch (64 = 64 x 1 = 32 x 2), seed and epochs, in turn (each goes first every other round),
`--repeats` times after a warm-up round.  The data: a generated 3-class table of 20,000 rows and 20
features (sklearn's make_classification), an MLP, 8 epochs, no early stopping.
    tolerance: |test accuracy (2 nodes) - test accuracy (1 process)| <= 0.02 in every round
    wall ratio = 2-node wall time / 1-process wall time   (reported as it is: on a 2-core machine
    the two nodes share the cores and pay for the rendezvous and the all-reduce of every step)

GPU (`--gpus N`, on a machine with N GPUs): the seed-004 CNN (catalog `mnist-cnn`) on MNIST-shaped
images made offline, run the way an instance runs it (`python -m runner` in a task folder, which
starts torchrun with procs_per_node workers, NCCL) on 1 GPU and on N, the global batch kept:
    scaling = images/s on N GPUs / images/s on 1 GPU   (ideal: N)

    python bench/distributed.py [--repeats 3]      -> bench/results/distributed.json
    python bench/distributed.py --gpus 2           -> bench/results/distributed-gpu.json
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

from bench.common import ROOT, digits28  # noqa: E402
from submit.emulator import daemon  # noqa: E402

TOLERANCE = 0.02
JOB = {"name": "dist-bench", "task": "classification", "data": {"path": "table.csv", "target": "y"},
       "split": {"val_size": 0.1}, "model": {"kind": "mlp", "hidden": [128, 128]},
       "train": {"epochs": 8, "lr": 0.002, "seed": 0, "early_stopping": None}}


def make_table(path: Path, rows: int = 20_000) -> None:
    import pandas as pd
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=rows, n_features=20, n_informative=12, n_classes=3,
                               class_sep=0.8, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(x.shape[1])])
    frame["y"] = y
    frame.to_csv(path, index=False)


def qtrain(*args: str) -> dict:
    proc = subprocess.run([sys.executable, "-m", "submit", *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, env=os.environ.copy())
    if proc.returncode != 0:
        raise SystemExit(f"qtrain {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def cpu(repeats: int, tmp: Path) -> dict:
    import yaml

    make_table(tmp / "table.csv")
    jobs = {"1 process": {**JOB, "train": {**JOB["train"], "batch_size": 64}},
            "2 nodes x 1": {**JOB, "train": {**JOB["train"], "batch_size": 32}, "resources": {"nodes": 2}}}
    paths = {}
    for kind, job in jobs.items():
        paths[kind] = tmp / f"{kind.replace(' ', '-')}.yaml"
        paths[kind].write_text(yaml.safe_dump(job))
    rows: dict[str, list[dict]] = {k: [] for k in jobs}
    with daemon.isolated(tmp / "home", "process"):
        for i in range(-1, repeats):  # round -1 warms up (the fork server, the check's cache)
            order = list(paths.items()) if i % 2 == 0 else list(paths.items())[::-1]
            for kind, path in order:
                started = time.perf_counter()
                data = qtrain("run", path, "--json", "--store", tmp / "store")
                wall = time.perf_counter() - started
                if i < 0:
                    continue
                m = data["metrics"]
                rows[kind].append({"wall_seconds": wall, "train_seconds": m["timings"]["train_seconds"],
                                   "test_accuracy": m["test"]["accuracy"], "test_log_loss": m["test"]["log_loss"],
                                   "global_batch": (m.get("distributed") or {}).get("global_batch_size",
                                                                                    m["batch_size"])})
                print(f"  {kind:12} #{i}: wall {wall:6.1f} s, train {m['timings']['train_seconds']:6.1f} s, "
                      f"test accuracy {m['test']['accuracy']:.4f}", flush=True)
    one, two = rows["1 process"], rows["2 nodes x 1"]
    gaps = [abs(b["test_accuracy"] - a["test_accuracy"]) for a, b in zip(one, two)]
    walls = [b["wall_seconds"] / a["wall_seconds"] for a, b in zip(one, two)]
    trains = [b["train_seconds"] / a["train_seconds"] for a, b in zip(one, two)]
    return {"rows": 20_000, "epochs": JOB["train"]["epochs"], "global_batch": 64, "runs": rows,
            "accuracy_gap_max": max(gaps), "tolerance": TOLERANCE, "within_tolerance": max(gaps) <= TOLERANCE,
            "wall_ratio_median": statistics.median(walls), "wall_ratio_min": min(walls),
            "wall_ratio_max": max(walls), "train_ratio_median": statistics.median(trains),
            "train_ratio_min": min(trains), "train_ratio_max": max(trains),
            "goal": f"test accuracy within {TOLERANCE} of one process; the wall ratio reported as it is"}


def write_idx(path: Path, array) -> None:
    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def gpu(gpus: int, repeats: int, tmp: Path) -> dict:
    """`python -m runner` in a task folder, as an instance runs it, on 1 GPU and on `gpus`."""
    import yaml

    x, y, xt, yt = digits28(n_train=30_000, n_test=2_000)
    job = yaml.safe_load((ROOT / "jobs" / "catalog" / "mnist-cnn.yaml").read_text())
    rows: dict[int, list[float]] = {1: [], gpus: []}
    for i in range(-1, repeats):
        for n in (1, gpus):
            folder = tmp / f"task-{n}-{i}"
            (folder / "data" / "mnist").mkdir(parents=True)
            for name, arr in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                              ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)):
                write_idx(folder / "data" / "mnist" / name, arr)
            per = max(1, 256 // n)  # the global batch kept at 256
            spec = {**job, "data": {**job["data"], "path": "data/mnist"},
                    "train": {**job["train"], "epochs": 3, "batch_size": per, "device": "cuda",
                              "early_stopping": None},
                    "resources": {"procs_per_node": n}}
            (folder / "job.json").write_text(json.dumps(spec))
            env = {**os.environ, "QARNOT_RESOURCES_DIRECTORY": str(folder), "PYTHONPATH": str(ROOT)}
            proc = subprocess.run([sys.executable, "-m", "runner"], cwd=folder, env=env, capture_output=True, text=True)
            if proc.returncode != 0:
                raise SystemExit(f"{n} GPU(s) failed:\n{proc.stderr[-3000:]}")
            metrics = json.loads((folder / "out" / "metrics.json").read_text())
            if i >= 0:
                rows[n].append(metrics["timings"]["samples_per_second"])
                print(f"  {n} GPU(s) #{i}: {rows[n][-1]:9.0f} images/s, test accuracy "
                      f"{metrics['test']['accuracy']:.4f}", flush=True)
    scaling = [b / a for a, b in zip(rows[1], rows[gpus])]
    return {"gpus": gpus, "images_per_second": {str(k): v for k, v in rows.items()}, "global_batch": 256,
            "scaling_median": statistics.median(scaling), "scaling_min": min(scaling),
            "scaling_max": max(scaling), "ideal": gpus}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpus", type=int, default=0, help="N: 1 GPU against N (a GPU machine)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-dist-") as tmp:
        if args.gpus:
            result = {"gpu": gpu(args.gpus, args.repeats, Path(tmp))}
            name = "distributed-gpu.json"
        else:
            result = {"cpu": cpu(args.repeats, Path(tmp))}
            name = "distributed.json"
    result["machine"] = {"cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}
    out = ROOT / "bench" / "results" / name
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in next(iter(result.values())).items() if k != "runs"}, indent=1))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
