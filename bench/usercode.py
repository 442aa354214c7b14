"""Your own code through qtrain (issue 23), measured in one invocation:

1. module vs built-in: the seed-004 notebook's CNN written as a class (catalog `mnist-cnn-module`)
   against the built-in `cnn` kind with the same network (catalog `mnist-cnn`), trained in this
   process on MNIST-shaped images after a warm-up round, in turn (each goes first every other
   round), `--repeats` times each:
       ratio = module samples/s / built-in samples/s   (goal >= 0.95), and the same test metrics
2. an unchanged script job sent again (the catalog's `rain-tutorial` on a generated
   weatherAUS-shaped file, process executor): bytes of code uploaded the first and the second time
   (goal: 0 the second time);
3. a derived image for a one-package requirements file (a wheel made here, no network): the build
   on first use, and the second run's (goal: 0 s).  Skipped, saying why, where no Docker engine
   answers or the runner image is not built.

    python bench/usercode.py [--repeats 5] [--epochs 2]  -> prints the figures, writes bench/results/usercode.json
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


def write_idx(path: Path, array) -> None:
    import numpy as np

    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    path.write_bytes(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def module_vs_builtin(repeats: int, epochs: int, tmp: Path) -> dict:
    from jobs.load import load_job
    from runner.api import run_job

    mnist = tmp / "mnist"
    mnist.mkdir()
    x, y, xt, yt = digits28(n_train=6000, n_test=1000)
    for name, arr in (("train-images-idx3-ubyte", x), ("train-labels-idx1-ubyte", y),
                      ("t10k-images-idx3-ubyte", xt), ("t10k-labels-idx1-ubyte", yt)):
        write_idx(mnist / name, arr)
    catalog = ROOT / "jobs" / "catalog"
    jobs = {"builtin": catalog / "mnist-cnn.yaml", "module": catalog / "mnist-cnn-module.yaml"}
    rows: dict[str, list[dict]] = {k: [] for k in jobs}
    for i in range(-1, repeats):  # round -1 warms up (its figures are not kept)
        order = list(jobs.items()) if i % 2 == 0 else list(jobs.items())[::-1]  # in turn first: no drift favoured
        for kind, path in order:
            loaded = load_job(path, overrides=[f"data.path={mnist}", f"train.epochs={epochs}"])
            metrics = run_job(loaded, tmp / f"{kind}-{i}")
            if i < 0:
                continue
            rows[kind].append({"samples_per_second": metrics["timings"]["samples_per_second"],
                               "test": metrics["test"]})
            print(f"  {kind:8} #{i}: {rows[kind][-1]['samples_per_second']:8.0f} samples/s, "
                  f"test accuracy {metrics['test']['accuracy']:.4f}", flush=True)
    ratios = [m["samples_per_second"] / b["samples_per_second"] for m, b in zip(rows["module"], rows["builtin"])]
    same = all(m["test"] == b["test"] for m, b in zip(rows["module"], rows["builtin"]))
    return {"epochs": epochs, "train_images": 6000, "runs": rows, "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios), "same_metrics": same,
            "goal": "ratio >= 0.95, same metrics", "met": statistics.median(ratios) >= 0.95 and same}


def qtrain(*args: str, env: dict) -> dict:
    proc = subprocess.run([sys.executable, "-m", "submit", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"qtrain {' '.join(map(str, args))} failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def weather(path: Path, rows: int = 2000) -> None:
    import numpy as np
    import pandas as pd

    rng = np.random.default_rng(0)
    wet = rng.normal(size=rows)
    pd.DataFrame({"Date": pd.date_range("2010-01-01", periods=rows).strftime("%Y-%m-%d"),
                  "Location": rng.choice(["Sydney", "Perth", "Darwin"], rows),
                  "Humidity3pm": 50 + 15 * wet + rng.normal(0, 8, rows),
                  "Pressure3pm": 1015 - 4 * wet + rng.normal(0, 3, rows),
                  "RainToday": np.where(wet + rng.normal(0, 1, rows) > 1, "Yes", "No"),
                  "RainTomorrow": np.where(wet + rng.normal(0, 0.7, rows) > 0.8, "Yes", "No")}).to_csv(path, index=False)


def unchanged_script(tmp: Path) -> dict:
    env = {**os.environ, "QTRAIN_STATE_DIR": str(tmp / "state"), "QTRAIN_CONFIG_DIR": str(tmp / "config"),
           "QTRAIN_STORE": str(tmp / "store"), "QTRAIN_EMULATOR_EXECUTOR": "process"}
    weather(tmp / "weatherAUS.csv")
    args = ("run", "rain-tutorial", "--set", f"data.path={tmp / 'weatherAUS.csv'}", "--set", "script.args.epochs=5",
            "--json")
    try:
        first = qtrain(*args, env=env)
        second = qtrain(*args, env=env)
    finally:
        subprocess.run([sys.executable, "-m", "submit", "emulator", "stop"], env=env, cwd=ROOT, capture_output=True)
    code = ROOT / "jobs" / "catalog" / "rain-tutorial" / "train.py"
    print(f"  script job sent twice: {first['uploaded_bytes']:,} then {second['uploaded_bytes']:,} bytes uploaded "
          f"(its code: {code.stat().st_size:,} bytes)", flush=True)
    return {"first_uploaded_bytes": first["uploaded_bytes"], "second_uploaded_bytes": second["uploaded_bytes"],
            "code_bytes": code.stat().st_size, "goal": "0 bytes the second time",
            "met": second["uploaded_bytes"] == 0}


def derived_image(tmp: Path) -> dict:
    from jobs.requirements import read_file
    from submit.image import CPU_TAG, build_derived, docker_problem, image_id

    problem = docker_problem() or (None if image_id(CPU_TAG) else f"the runner image {CPU_TAG} is not built")
    if problem:
        print(f"  derived image: skipped ({problem})")
        return {"skipped": problem}
    project = tmp / "pkg"
    (project / "qtrain_bench_pkg").mkdir(parents=True)
    (project / "qtrain_bench_pkg" / "__init__.py").write_text(f"STAMP = {time.time()!r}\n")  # a new hash each time
    (project / "pyproject.toml").write_text('[project]\nname = "qtrain-bench-pkg"\nversion = "1.0"\n'
                                            '[build-system]\nrequires = ["setuptools"]\nbuild-backend = '
                                            '"setuptools.build_meta"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w",
                    str(tmp / "wheels"), str(project)], check=True)
    (tmp / "requirements.txt").write_text("--no-index\n--find-links wheels\nqtrain-bench-pkg==1.0\n")
    reqs = read_file(tmp / "requirements.txt")
    with tempfile.TemporaryDirectory() as state:
        os.environ["QTRAIN_STATE_DIR"] = state
        first = build_derived(reqs, CPU_TAG, log=lambda line: None)
        second = build_derived(reqs, CPU_TAG, log=lambda line: None)
    subprocess.run(["docker", "rmi", "-f", first.tag], capture_output=True)
    print(f"  derived image {first.tag}: {first.seconds:.1f} s on first use, {second.seconds:.2f} s the second time",
          flush=True)
    return {"tag": first.tag, "first_seconds": first.seconds, "second_seconds": second.seconds,
            "goal": "0 s the second time", "met": second.seconds < 0.5}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "usercode.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "a").mkdir(), (root / "b").mkdir(), (root / "c").mkdir()
        print("module vs built-in cnn (same network, same seed):")
        module = module_vs_builtin(args.repeats, args.epochs, root / "a")
        print("unchanged script job:")
        script = unchanged_script(root / "b")
        print("derived image:")
        image = derived_image(root / "c")
    out = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
           "repeats": args.repeats, "module_vs_builtin": module, "unchanged_script": script, "derived_image": image}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"module/built-in samples/s: median x{module['ratio_median']:.3f} (min x{module['ratio_min']:.3f}, max "
          f"x{module['ratio_max']:.3f}), same metrics: {module['same_metrics']}; script resent: "
          f"{script['second_uploaded_bytes']} bytes; derived image: "
          + (f"{image['first_seconds']:.1f} s then {image['second_seconds']:.2f} s" if "skipped" not in image
             else f"skipped ({image['skipped']})") + f"  -> {args.out}")


if __name__ == "__main__":
    main()
