"""The daily loop (issue 8): each figure a ratio of paired runs taken alternately in this one
invocation, medians over --pairs pairs, with the spread (min..max of the ratios).

(a) check: wall(`qtrain check penguins --recheck`) / wall(`python -c "import torch, pandas,
    sklearn"`); goal <= 1.15.  A repeated check of the unchanged job (remembered): goal <= 0.3.
(b) run, process executor: wall(`qtrain run penguins`) / wall(`qtrain train penguins`) on a warm
    emulator; goal <= 0.6.
(c) sweep: wall(a 6-trial sweep) / wall(one of its trials alone), goal <= 1.15 x 6 / cores; and
    the same sweep with every trial on all cores (`train.threads` = cores, what the runner did
    before it honoured the emulator's CPU share), the reference for the oversubscription fix.
(b') the same through the docker executor (the runner image, as on Qarnot), warm container up:
    goal <= 0.7; and with the warm path off (a fresh container per instance) as the reference.
(f) a diamonds-sized generated table (50k rows, 10 features, regression), `qtrain train` with the
    defaults (batch `auto`: 256 here) against the defaults before (batch 64): wall ratio, and the
    test r2 of each (goal: no worse than 0.005).
(e) cold start: wall(`qtrain run penguins` with no emulator running: it starts the daemon) minus
    wall(the same run on the warm emulator), paired; goal <= +2 s.
(g) the emulator's API: the median GET /info on one kept-alive connection (as the SDK's session
    sends every request) / the same on a fresh connection each; goal <= 1.0 (a connection kept
    open must not be slower than a new one: with Nagle's algorithm on, it was 40 ms a request).
(d) the tabular training loop: steps/s of the runner's Trainer / steps/s of a minimal hand-written
    PyTorch loop over the same tensors, model, optimizer and batch size (in this process, a
    50k-row, 10-feature regression table); goal >= 0.9.

    python bench/loop.py [--pairs 5] [--parts check,run,api,sweep,loop,docker,cold,table]
        -> prints the figures, writes bench/results/loop.json (parts not run keep their old figures)

It uses its own emulator (state and config in a temporary folder) and stops it at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import io
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


def wall(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return seconds


def qtrain(*args: str) -> list[str]:
    return [sys.executable, "-m", "submit", *args]


def paired(a: list[str], b: list[str], env: dict[str, str], pairs: int) -> dict:
    """Alternate a and b `pairs` times: the median of a/b, its spread, the medians of each."""
    sa, sb = [], []
    for _ in range(pairs):
        sa.append(wall(a, env))
        sb.append(wall(b, env))
    ratios = sorted(x / y for x, y in zip(sa, sb))
    return {"ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
            "seconds": statistics.median(sa), "reference_seconds": statistics.median(sb),
            "samples": sa, "reference_samples": sb}


def api_latency(env: dict[str, str], requests_each: int = 60) -> dict:
    """(g): GET /info alternately on a kept-alive session and on a fresh connection."""
    import requests

    sys.path.insert(0, str(ROOT))
    os.environ.update({k: env[k] for k in ("QTRAIN_STATE_DIR", "QTRAIN_CONFIG_DIR")})
    from submit.emulator import daemon

    endpoint = daemon.running()
    headers = {"Authorization": endpoint.token}
    session = requests.Session()
    session.get(f"{endpoint.url}/info", headers=headers).raise_for_status()
    kept, fresh = [], []
    for _ in range(requests_each):
        t0 = time.perf_counter()
        session.get(f"{endpoint.url}/info", headers=headers).raise_for_status()
        kept.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        requests.get(f"{endpoint.url}/info", headers={**headers, "Connection": "close"}).raise_for_status()
        fresh.append(time.perf_counter() - t0)
    ratios = sorted(a / b for a, b in zip(kept, fresh))
    return {"ratio": statistics.median(ratios), "ratio_min": ratios[len(ratios) // 10],
            "ratio_max": ratios[-1 - len(ratios) // 10], "seconds": statistics.median(kept),
            "reference_seconds": statistics.median(fresh), "requests": requests_each, "goal": 1.0,
            "spread": "10th..90th percentile of the paired ratios"}


def loop_speed(pairs: int, epochs: int = 3) -> dict:
    """(d): the Trainer against a minimal loop, alternately, on one prepared table."""
    import numpy as np
    import pandas as pd
    import torch

    sys.path.insert(0, str(ROOT))
    from jobs.load import load_job_dict
    from runner.models import build_from_arch
    from runner.run import build
    from runner.train import Trainer

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50_000, 10))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(10)])
    frame["y"] = x @ rng.normal(size=10) + np.sin(x[:, 0] * 2) + rng.normal(scale=0.3, size=len(x))
    with tempfile.TemporaryDirectory(prefix="qtrain-loop-") as d:
        frame.to_csv(Path(d) / "t.csv", index=False)
        loaded = load_job_dict({"name": "loop", "task": "regression", "data": {"path": "t.csv", "target": "y"},
                                "train": {"epochs": epochs, "threads": 1, "batch_size": 64}}, Path(d))
        b = build(loaded)
    ours, minimal, steps = [], [], 0
    for _ in range(pairs):
        model = build_from_arch(b.arch)
        trainer = Trainer(model, b.prepared, loaded.job, torch.device("cpu"), "bench")
        with contextlib.redirect_stdout(io.StringIO()):  # the epoch lines
            result = trainer.fit()
        bs = loaded.job.train.batch_size
        n = len(trainer.data.x["train"])
        steps = epochs * -(-n // bs)
        ours.append(steps / result.train_seconds)

        xt, yt = trainer.data.x["train"], trainer.data.y["train"]
        model = build_from_arch(b.arch)
        opt = torch.optim.Adam(model.parameters(), lr=loaded.job.train.lr)
        loss_fn = torch.nn.MSELoss()
        t0 = time.perf_counter()
        for _ in range(epochs):
            order = torch.randperm(n)
            for start in range(0, n, bs):
                idx = order[start:start + bs]
                yb = yt[idx]
                loss = loss_fn(model(xt[idx]).reshape(yb.shape), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        minimal.append(steps / (time.perf_counter() - t0))
    ratios = sorted(a / b for a, b in zip(ours, minimal))
    return {"ratio": statistics.median(ratios), "ratio_min": ratios[0], "ratio_max": ratios[-1],
            "seconds": steps / statistics.median(ours), "reference_seconds": steps / statistics.median(minimal),
            "steps_per_second": statistics.median(ours), "minimal_steps_per_second": statistics.median(minimal),
            "steps": steps, "goal": 0.9, "table": "50k rows x 10 features, regression, batch 64, 1 thread"}


def large_table(tmp: Path, env: dict[str, str], pairs: int) -> dict:
    """(f): `qtrain train` of a generated 50k-row table, today's defaults against batch 64."""
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    x = rng.normal(size=(50_000, 10))
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(10)])
    frame["y"] = (x @ rng.normal(size=10) + np.sin(x[:, 0] * 2) + x[:, 1] * x[:, 2]
                  + rng.normal(scale=0.3, size=len(x)))
    frame.to_csv(tmp / "diamonds-like.csv", index=False)
    (tmp / "table.yaml").write_text("name: table\ntask: regression\n"
                                    "data: {path: diamonds-like.csv, target: y}\n")
    auto = qtrain("train", str(tmp / "table.yaml"), "--out", str(tmp / "t-auto"))
    old = qtrain("train", str(tmp / "table.yaml"), "--set", "train.batch_size=64", "--out", str(tmp / "t-64"))
    r = paired(auto, old, env, pairs)
    r2 = {name: json.loads((tmp / name / "metrics.json").read_text())["test"]["r2"] for name in ("t-auto", "t-64")}
    r.update({"r2": r2["t-auto"], "reference_r2": r2["t-64"], "r2_change": r2["t-auto"] - r2["t-64"],
              "goal_r2_change": -0.005, "batch_size": json.loads((tmp / "t-auto" / "metrics.json").read_text())["batch_size"]})
    return r


def docker_ready() -> bool:
    ok = subprocess.run(["docker", "image", "inspect", "qtrain/runner:latest"], capture_output=True)
    return ok.returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--parts", default="check,run,api,sweep,loop,docker,cold,table")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "loop.json")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(prefix="qtrain-loop-") as d:
        tmp = Path(d)
        env = {**os.environ, "QTRAIN_STATE_DIR": str(tmp / "state"), "QTRAIN_CONFIG_DIR": str(tmp / "config"),
               "MPLBACKEND": "Agg", "QTRAIN_EMULATOR_EXECUTOR": "process"}
        env.pop("QARNOT_CLIENT_TOKEN", None)
        store = ["--store", str(tmp / "store")]
        imports = [sys.executable, "-c", "import torch, pandas, sklearn"]
        results: dict = json.loads(args.out.read_text()) if args.out.is_file() else {}
        results.update({"machine": {"cpus": cores, "python": platform.python_version(),
                                    "platform": platform.platform()}, "pairs": args.pairs})
        try:
            if "loop" in parts:
                results["loop"] = loop_speed(args.pairs)
            if "check" in parts:
                results["check"] = paired(qtrain("check", "penguins", "--recheck"), imports, env, args.pairs)
                results["check"]["goal"] = 1.15
                results["check_remembered"] = paired(qtrain("check", "penguins"), imports, env, args.pairs)
                results["check_remembered"]["goal"] = 0.3
            if parts & {"run", "sweep", "api"}:
                wall(qtrain("emulator", "start"), env)
                wall(qtrain("run", "penguins", *store), env)  # warm-up: fork server, caches
            if "api" in parts:
                results["api"] = api_latency(env)
            if "run" in parts:
                results["run_process"] = paired(qtrain("run", "penguins", *store),
                                                qtrain("train", "penguins", "--out", str(tmp / "train")),
                                                env, args.pairs)
                results["run_process"]["goal"] = 0.6
            if "sweep" in parts:
                sweep = ["grid-search", "--set", "train.epochs=3", *store]
                one = ["--set", "sweep={model.n_layers: [2], model.dropout: [0.5]}"]
                n = max(1, args.pairs // 2)
                results["sweep"] = paired(qtrain("run", *sweep), qtrain("run", *sweep, *one), env, n)
                results["sweep"]["goal"] = 1.15 * 6 / cores
                results["sweep_all_cores_each"] = paired(
                    qtrain("run", *sweep, "--set", f"train.threads={cores}"), qtrain("run", *sweep), env, n)
            if "table" in parts:
                results["table"] = large_table(tmp, env, max(1, args.pairs // 2))
            if "cold" in parts:
                cold_s, warm_s = [], []
                for _ in range(args.pairs):
                    subprocess.run(qtrain("emulator", "stop"), cwd=ROOT, env=env, capture_output=True)
                    cold_s.append(wall(qtrain("run", "penguins", *store), env))
                    warm_s.append(wall(qtrain("run", "penguins", *store), env))
                diffs = sorted(c - w for c, w in zip(cold_s, warm_s))
                results["cold_start"] = {"extra_seconds": statistics.median(diffs), "min": diffs[0],
                                         "max": diffs[-1], "cold_samples": cold_s, "warm_samples": warm_s,
                                         "goal_extra_seconds": 2.0}
            if "docker" in parts and docker_ready():
                subprocess.run(qtrain("emulator", "stop"), cwd=ROOT, env=env, capture_output=True)
                denv = {**env, "QTRAIN_EMULATOR_EXECUTOR": "docker"}
                wall(qtrain("emulator", "start"), denv)
                wall(qtrain("run", "penguins", *store), denv)  # warm container up, check remembered
                train = qtrain("train", "penguins", "--out", str(tmp / "train"))
                results["run_docker"] = paired(qtrain("run", "penguins", *store), train, denv, args.pairs)
                results["run_docker"]["goal"] = 0.7
                subprocess.run(qtrain("emulator", "stop"), cwd=ROOT, env=env, capture_output=True)
                cold = {**denv, "QTRAIN_DOCKER_WARM": "0"}
                wall(qtrain("emulator", "start"), cold)
                results["run_docker_fresh_container"] = paired(qtrain("run", "penguins", *store), train,
                                                               cold, args.pairs)
        finally:
            subprocess.run(qtrain("emulator", "stop"), cwd=ROOT, env=env, capture_output=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for key, label in (("check", "check / import torch+pandas+sklearn"),
                       ("check_remembered", "remembered check / import"),
                       ("api", "emulator API request, kept-alive / fresh connection"),
                       ("run_process", "run (process executor) / train"),
                       ("run_docker", "run (docker executor, warm) / train"),
                       ("run_docker_fresh_container", "run (docker, fresh container) / train"),
                       ("sweep", "6-trial sweep / one trial"),
                       ("sweep_all_cores_each", "sweep, each trial on all cores / sweep, shared"),
                       ("loop", "Trainer steps/s / minimal loop steps/s")):
        r = results.get(key)
        if r is None:
            continue
        sign = ">=" if key == "loop" else "<="
        goal = f" (goal {sign} {r['goal']:.2f})" if "goal" in r else ""
        fmt = (lambda t: f"{t * 1000:.1f}ms") if r["reference_seconds"] < 0.1 else (lambda t: f"{t:.2f}s")
        print(f"{label}: {r['ratio']:.2f} [{r['ratio_min']:.2f}..{r['ratio_max']:.2f}]{goal}  "
              f"{fmt(r['seconds'])} vs {fmt(r['reference_seconds'])}")
    if "table" in results:
        t = results["table"]
        print(f"50k-row table, qtrain train defaults (batch {t['batch_size']}) / batch 64: {t['ratio']:.2f} "
              f"[{t['ratio_min']:.2f}..{t['ratio_max']:.2f}]  {t['seconds']:.1f}s vs {t['reference_seconds']:.1f}s; "
              f"test r2 {t['r2']:.4f} vs {t['reference_r2']:.4f} (change {t['r2_change']:+.4f}, goal >= -0.005)")
    if "cold_start" in results:
        c = results["cold_start"]
        print(f"cold start: +{c['extra_seconds']:.2f}s [{c['min']:+.2f}..{c['max']:+.2f}] over a warm run "
              f"(goal <= +2 s)")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
