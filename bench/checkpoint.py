"""Timed checkpoints (issue 11): what `train.checkpoint_minutes` costs when it asks for more than the
2% budget allows.  Each figure is a ratio of paired runs taken alternately in this process
(medians of --pairs pairs, with the spread):

    training seconds with train.checkpoint_minutes=0.0001 (a checkpoint "every 6 ms", so the
    budget rule sets the pace: at most one save per 50 save-durations)
  / training seconds with train.checkpoint_minutes=0 (only the final checkpoint)        goal <= 1.02

on a 20,000-row, 20-feature table with a [512, 512] MLP (a ~10 MB checkpoint with Adam's state),
and the number of checkpoints the first wrote.

    python bench/checkpoint.py [--pairs 5]  -> prints the figures, writes bench/results/checkpoint.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from jobs.load import load_job  # noqa: E402
from runner import train as train_module  # noqa: E402
from runner.run import run_job  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "checkpoint.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        rng = np.random.default_rng(0)
        x = rng.normal(size=(20_000, 20))
        frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(20)])
        frame["y"] = x[:, :5].sum(axis=1) + rng.normal(scale=0.1, size=len(x))
        frame.to_csv(folder / "t.csv", index=False)
        (folder / "job.yaml").write_text(
            "name: ckpt\ntask: regression\ndata: {path: t.csv, target: y}\nsplit: {val_size: 0}\n"
            "model: {hidden: [512, 512]}\ntrain: {epochs: 12, batch_size: 256, threads: 1}\n")
        saves = {"count": 0}
        real = train_module.Trainer.save_checkpoint

        def counting(self, *a, **kw):
            saves["count"] += 1
            return real(self, *a, **kw)

        def run(minutes: float, tag: str) -> float:
            loaded = load_job(folder / "job.yaml", [f"train.checkpoint_minutes={minutes}"])
            metrics = run_job(loaded, folder / tag)
            return metrics["timings"]["train_seconds"]

        ratios, timed, plain, counts = [], [], [], []
        run(0, "warm-up")
        for i in range(args.pairs):
            saves["count"] = 0
            with mock.patch.object(train_module.Trainer, "save_checkpoint", counting):
                a = run(0.0001, f"timed-{i}")
            counts.append(saves["count"])
            b = run(0, f"plain-{i}")
            timed.append(a)
            plain.append(b)
            ratios.append(a / b)
    result = {
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "pairs": args.pairs,
        "timed_checkpoints": {
            "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "seconds": statistics.median(timed), "reference_seconds": statistics.median(plain),
            "checkpoints_written": statistics.median(counts), "goal": 1.02,
            "table": "20k rows x 20 features, MLP [512, 512], 12 epochs, batch 256, 1 thread",
        },
    }
    t = result["timed_checkpoints"]
    print(f"training with timed checkpoints / without: {t['ratio']:.3f} [{t['ratio_min']:.3f}..{t['ratio_max']:.3f}] "
          f"(goal <= 1.02)  {t['seconds']:.2f}s vs {t['reference_seconds']:.2f}s, "
          f"{t['checkpoints_written']:.0f} checkpoints")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
