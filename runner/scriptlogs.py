"""A script's metrics when it never imports qtrain: read from what it prints and from the files its
loggers write.

- `script.metrics: {name: regex}` on its output (stdout and stderr), as SageMaker's
  `metric_definitions` are: the value is the group named `value`, else the first group; a group
  named `epoch` says which epoch the value belongs to (without one, a name's k-th match is epoch
  k).  A name with a split prefix (`test.accuracy`, `val.loss`) is a final metric of that split
  (its last match); any other name (`val_accuracy`, `train_loss`) is a per-epoch column of the
  history, printed as an epoch line as soon as its epoch is complete, so `qtrain run` shows it live.
  A value printed with `%` right after it is a percentage, taken as a fraction (99% -> 0.99).
- TensorBoard event files (`torch.utils.tensorboard.SummaryWriter`, Lightning's default logger),
  read with TensorBoard's own reader (`pip install 'qtrain[tensorboard]'`, or tensorboard in
  resources.requirements), and Lightning's `CSVLogger` files (`version_N/metrics.csv`): every scalar
  becomes a history column named `<split>_<metric>` where its tag names a split (`Loss/train` ->
  train_loss, `val_acc` stays), its last value a final metric of that split.  Steps are epochs unless
  the file logs an `epoch` scalar too (Lightning), which then maps each step to its epoch.

What comes out is a `Found`: history rows by epoch (1-based, as qtrain counts) and final metrics per
split, merged by `runner.userscript.finalize` under what the script reported itself.
"""

from __future__ import annotations

import csv
import math
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from jobs.results import epoch_line

SPLITS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
FINAL = re.compile(r"^(train|val|test)\.([A-Za-z0-9_]+)$")  # script.metrics: a split's final metric
IGNORED_TAGS = {"epoch", "step", "hp_metric", "lr-Adam", "created_at"}
EVENTS_GLOB = "events.out.tfevents.*"
EPOCH_LINE = "[qtrain] epoch="  # runner.script's own lines
EXTRA = "tensorboard"  # the extra (pyproject) that brings TensorBoard's reader


@dataclass
class Found:
    """Metrics found outside runner.script: history rows by epoch, final metrics by split."""

    rows: dict[int, dict[str, float]] = field(default_factory=dict)
    finals: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def merge(self, other: "Found") -> None:
        for epoch, row in other.rows.items():
            self.rows.setdefault(epoch, {}).update(row)
        for split, values in other.finals.items():
            self.finals.setdefault(split, {}).update(values)
        self.notes += other.notes


def _number(text: str) -> float | None:
    try:
        value = float(text.replace(",", "")) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


class OutputMetrics:
    """script.metrics matched against each line of the script's output, as it comes (thread-safe:
    stdout and stderr are read by two threads).  `say` prints an epoch line once its epoch is
    complete (a later epoch has begun), and the last one at `close`."""

    def __init__(self, patterns: dict[str, str], say: Callable[[str], None] | None = None):
        self.patterns = {name: re.compile(rx, re.MULTILINE) for name, rx in patterns.items()}
        self.say = say
        self.found = Found()
        self.counts: dict[str, int] = {}
        self.shown = 0  # the epochs up to this one have had their line
        self.latest = 0  # the latest epoch a value came for
        self.bad: set[str] = set()
        self.lock = threading.Lock()

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def feed(self, text: str) -> None:
        """Whole lines of the script's output, one or many: each pattern is matched line by line
        (a match across a line's end is not one), runner.script's own epoch lines left out (they
        are in history.csv already), the matches taken in the order they were printed."""
        found = []
        for name, rx in self.patterns.items():
            for match in rx.finditer(text):
                if "\n" in match.group(0):
                    continue
                start = text.rfind("\n", 0, match.start()) + 1
                if not text.startswith(EPOCH_LINE, start):
                    found.append((match.start(), name, match))
        if found:
            with self.lock:
                for _, name, match in sorted(found, key=lambda f: f[0]):
                    self._take(name, match)

    def _take(self, name: str, match: re.Match) -> None:
        groups = match.groupdict()
        which = "value" if "value" in groups else 1 if match.re.groups else 0
        raw = match.group(which)
        value = _number(raw)
        if value is not None and match.string[match.end(which):match.end(which) + 1] == "%":
            value /= 100  # a percentage, as printed: qtrain's accuracies are fractions
        if value is None:
            if name not in self.bad:
                self.bad.add(name)
                self.found.notes.append(f"script.metrics.{name} matched {str(raw)[:40]!r}, which is not a number: "
                                        f"put the number in the group named value")
            return
        final = FINAL.match(name)
        if final:
            self.found.finals.setdefault(final.group(1), {})[final.group(2)] = value
            return
        epoch = _number(groups["epoch"]) if groups.get("epoch") is not None else None
        if epoch is None:
            self.counts[name] = self.counts.get(name, 0) + 1
            epoch = self.counts[name]
        epoch = int(epoch)
        self.found.rows.setdefault(epoch, {})[name] = value
        if epoch > self.latest:  # a new epoch has begun: the ones before it are complete
            self.latest = epoch
            self._show(below=epoch)

    def _show(self, below: int | None = None) -> None:
        if self.say is None:
            return
        ready = sorted(e for e in self.found.rows if e > self.shown and (below is None or e < below))
        for epoch in ready:
            self.say(epoch_line({"epoch": epoch, **self.found.rows[epoch]}))
            self.shown = epoch

    def close(self) -> Found:
        with self.lock:
            self._show()
            return self.found


# ------------------------------------------------------------------------------------ files
def column(tag: str) -> str:
    """A logged scalar's tag as a history column: `<split>_<metric>` when a part of it names a
    split (`Loss/train` -> train_loss, `val/acc` -> val_acc), else the tag in plain characters."""
    parts = [p for p in re.split(r"[/\-_. ]+", tag.strip()) if p]
    lower = [p.lower() for p in parts]
    if lower and lower[-1] == "epoch" and len(lower) > 1:  # Lightning's epoch aggregate: train_loss_epoch
        lower = lower[:-1]
    for i, part in enumerate(lower):
        if part in SPLITS and len(lower) > 1:
            return "_".join([SPLITS[part], *(lower[:i] + lower[i + 1:])])
    return "_".join(lower) or "value"


def from_series(series: dict[str, list[tuple[int, float]]]) -> Found:
    """Scalars {tag: [(step, value)]} as history rows (each tag's last value in an epoch) and final
    metrics (each split column's last value).  An `epoch` series maps steps to epochs (Lightning's,
    0-based); without one the step is the epoch, 0-based when the first is 0."""
    found = Found()
    epochs = sorted(series.get("epoch", []))
    first = min((s for values in series.values() for s, _ in values), default=1)

    def epoch_of(step: int) -> int:
        if epochs:
            at = [int(e) for s, e in epochs if s <= step]
            return (at[-1] if at else int(epochs[0][1])) + 1
        return step + 1 if first == 0 else step

    for tag, values in series.items():
        if tag in IGNORED_TAGS or tag.endswith("_step") or not values:
            continue
        name = column(tag)
        for step, value in sorted(values, key=lambda v: v[0]):
            if math.isfinite(value):
                found.rows.setdefault(epoch_of(step), {})[name] = float(value)
        split, _, metric = name.partition("_")
        if split in ("train", "val", "test") and metric:
            last = max(values, key=lambda v: v[0])[1]
            if math.isfinite(last):
                found.finals.setdefault(split, {})[metric] = float(last)
    return found


def read_csv_logs(folder: Path) -> Found:
    """Lightning CSVLogger files below `folder` (`*/version_N/metrics.csv`, with a step column)."""
    found = Found()
    for path in sorted(folder.rglob("version_*/metrics.csv"), key=lambda p: p.stat().st_mtime):
        series: dict[str, list[tuple[int, float]]] = {}
        with open(path, newline="") as fh:
            for row in csv.DictReader(fh):
                step = _number(row.get("step") or "")
                if step is None:
                    continue
                for key, text in row.items():
                    value = _number(text or "")
                    if key and key != "step" and value is not None:
                        series.setdefault(key, []).append((int(step), value))
        found.merge(from_series(series))
    return found


def read_event_files(folder: Path) -> Found:
    """TensorBoard event files below `folder`, read with TensorBoard's own reader; without it, a
    note naming the extra to install."""
    files = sorted(folder.rglob(EVENTS_GLOB), key=lambda p: p.stat().st_mtime)
    if not files:
        return Found()
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        shown = files[0].relative_to(folder).as_posix()
        return Found(notes=[f"the script wrote TensorBoard event files ({shown}) that qtrain reads with TensorBoard's "
                            f"reader: pip install 'qtrain[{EXTRA}]' where the runner runs, or add tensorboard to "
                            f"resources.requirements"])
    found = Found()
    for path in files:
        events = EventAccumulator(str(path), size_guidance={"scalars": 0})
        events.Reload()
        series = {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags().get("scalars", [])}
        found.merge(from_series(series))
    return found


def read_files(folder: Path) -> Found:
    found = read_csv_logs(folder)
    found.merge(read_event_files(folder))
    return found


def history_finals(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """The last epoch's `<split>_<metric>` values of a history, as final metrics by split."""
    finals: dict[str, dict[str, float]] = {}
    for row in sorted(rows, key=lambda r: r.get("epoch", 0)):
        for key, value in row.items():
            split, _, metric = key.partition("_")
            if split in ("train", "val", "test") and metric and isinstance(value, (int, float)) \
                    and math.isfinite(value):
                finals.setdefault(split, {})[metric] = float(value)
    return finals
