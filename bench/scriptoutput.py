"""A script's output through qtrain (issue 36): the runner now reads what a script prints, line by
line, to pass it on and match `script.metrics` against it, where it used to hand the script its
own stdout and stderr.  What does that cost a script that prints a lot?

Each round, in turn (who goes first alternates), after a warm-up round:
  - reference: the script alone, `python train.py > out.txt` (as the runner used to run it: its
    output straight into the runner's own stream, here a file);
  - qtrain:    `qtrain train job.yaml --out DIR > out.txt`, with two script.metrics patterns that
    match every line, and the same without script.metrics, each less the same command's time for a
    script that prints nothing (qtrain's start and its results' files):
    passing on   = (qtrain without script.metrics - silent) / reference     (goal <= 1.2)
    and matching = (qtrain - silent) / reference                            (goal <= 2)
Both scripts print LINES lines of mnist/main.py's shapes (about 60 bytes each).

    python bench/scriptoutput.py [--lines 300000] [--rounds 5]  -> writes bench/results/scriptoutput.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import ROOT  # noqa: E402

SCRIPT = """
import sys
lines = int(sys.argv[1])
for i in range(lines):
    print(f"Train Epoch: {{i // 1000 + 1}} [{{i * 64}}/60000 ({{i % 100}}%)]\\tLoss: {{1.0 / (i + 1):.6f}}")
print("Test set: Average loss: 0.0321, Accuracy: 9890/10000 (99%)")
"""


def timed(argv: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    with open(cwd / "out.txt", "w") as out:
        subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    qtrain = str(Path(sys.executable).parent / "qtrain")
    with tempfile.TemporaryDirectory(prefix="qtrain-bench-") as tmp:
        folder = Path(tmp)
        (folder / "train.py").write_text(SCRIPT.format())
        job = {"name": "loud", "script": {"path": "train.py", "args": [str(args.lines)], "metrics": {
            "test.loss": r"Average loss: ([0-9.]+)",
            "train_loss": r"Train Epoch: (?P<epoch>\d+) .*Loss: (?P<value>[0-9.]+)"}}}
        (folder / "job.json").write_text(json.dumps(job))
        (folder / "quiet.json").write_text(json.dumps({**job, "name": "quiet", "script": {**job["script"], "args": ["0"]}}))
        (folder / "plain.json").write_text(json.dumps({**job, "name": "plain", "script": {**job["script"], "metrics": {}}}))
        ways = {"reference": [sys.executable, "train.py", str(args.lines)],
                "qtrain": [qtrain, "train", "job.json", "--out", "out"],
                "qtrain_no_metrics": [qtrain, "train", "plain.json", "--out", "out-plain"],
                "qtrain_silent": [qtrain, "train", "quiet.json", "--out", "out-quiet"]}
        rows = []
        for round_ in range(args.rounds + 1):  # round 0: warm-up, not counted
            order = list(ways) if round_ % 2 else list(reversed(ways))
            row = {name: timed(ways[name], folder) for name in order}
            metrics = json.loads((folder / "out" / "metrics.json").read_text())
            assert metrics["test"]["loss"] == 0.0321 and metrics["epochs_run"] == args.lines // 1000 + (args.lines % 1000 > 0)
            if round_:
                rows.append(row)
                print(f"round {round_}: reference {row['reference']:.2f}s, qtrain {row['qtrain']:.2f}s, "
                      f"without script.metrics {row['qtrain_no_metrics']:.2f}s (silent {row['qtrain_silent']:.2f}s)",
                      flush=True)
    ratios = [(r["qtrain"] - r["qtrain_silent"]) / r["reference"] for r in rows]
    passing = [(r["qtrain_no_metrics"] - r["qtrain_silent"]) / r["reference"] for r in rows]
    result = {"lines": args.lines, "rounds": rows, "ratio_median": statistics.median(ratios),
              "ratio_min": min(ratios), "ratio_max": max(ratios), "goal": "<= 2 with two patterns matching every line",
              "passing_on_ratio_median": statistics.median(passing), "passing_on_ratio_min": min(passing),
              "passing_on_ratio_max": max(passing), "passing_on_goal": "<= 1.2",
              "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()}}
    out = ROOT / "bench" / "results" / "scriptoutput.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"passing the lines on, (qtrain without script.metrics - silent) / reference: "
          f"{result['passing_on_ratio_median']:.2f} [{result['passing_on_ratio_min']:.2f}..{result['passing_on_ratio_max']:.2f}]")
    print(f"and matching two patterns on every line, (qtrain - silent) / reference: {result['ratio_median']:.2f} "
          f"[{result['ratio_min']:.2f}..{result['ratio_max']:.2f}] -> {out}")


if __name__ == "__main__":
    main()
