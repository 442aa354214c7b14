"""What the CLI shows: consoles, transfer progress bars, metric and confusion tables.

A table wider than the terminal is never squeezed into empty boxes: `fitting` finds how many of its
columns fit, and the columns left out are named in one line (`left_out`) that says how to see them.

Live output (states, epoch lines, progress) goes to `ui.out`, which is stdout normally and stderr
under --json, so that stdout's last line stays the one JSON object scripts read.
"""

from __future__ import annotations

import csv
import unicodedata
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                           TransferSpeedColumn)
from rich.table import Table
from rich.text import Text

from jobs.results import CONFUSION, SweepSummary


def printable(text: str) -> str:
    """User text (notes, tags) as it may go to a terminal: control and format characters (escape
    sequences, bells, bidirectional overrides) written out as escapes, never sent raw; newlines
    and tabs stay."""
    return "".join(c if c in "\n\t" or unicodedata.category(c) not in ("Cc", "Cf")
                   else (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


class Ui:
    def __init__(self, json_mode: bool = False):
        self.json_mode = json_mode
        self.out = Console(stderr=json_mode, highlight=False, soft_wrap=True)
        self.err = Console(stderr=True, highlight=False, soft_wrap=True)

    def say(self, text: str, style: str | None = None) -> None:
        self.out.print(text, style=style, markup=False)

    def warn(self, text: str) -> None:
        self.err.print(f"warning: {text}", style="yellow", markup=False)

    @contextmanager
    def transfer(self, description: str, total: int | None = None) -> Iterator["Transfer"]:
        """A bytes progress bar on stderr (only on a terminal)."""
        progress = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeRemainingColumn(), console=self.err,
                            transient=True, disable=not self.err.is_terminal)
        with progress:
            yield Transfer(progress, progress.add_task(description, total=total or None))


    @contextmanager
    def steps(self, description: str, total: int) -> Iterator[Any]:
        """A progress bar over `total` steps on stderr (only on a terminal, and only when it
        takes long enough to be worth drawing); yields a callable that advances it by one."""
        progress = Progress(TextColumn("{task.description}"), BarColumn(),
                            TextColumn("{task.completed}/{task.total}"), console=self.err,
                            transient=True, disable=not self.err.is_terminal or total < 2)
        with progress:
            task = progress.add_task(description, total=total)
            yield lambda: progress.advance(task, 1)


class Transfer:
    """A running progress bar: `advance(n)` bytes, `set_total(n)` once it is known."""

    def __init__(self, progress: Progress, task: Any):
        self.progress, self.task = progress, task

    def advance(self, n: int) -> None:
        self.progress.advance(self.task, n)

    def set_total(self, n: int) -> None:
        self.progress.update(self.task, total=n or None)


def metrics_table(metrics: dict[str, Any], title: str = "metrics") -> Table | None:
    splits = [s for s in ("train", "val", "test", "baseline", "file") if isinstance(metrics.get(s), dict)]
    if not splits:
        return None
    names: list[str] = []
    for s in splits:
        names += [k for k, v in metrics[s].items() if isinstance(v, (int, float)) and k not in names]
    t = Table(title=title, title_justify="left")
    t.add_column("metric", style="bold")
    for s in splits:
        t.add_column(s, justify="right")
    for name in names:
        t.add_row(name, *(fmt(metrics[s].get(name)) for s in splits))
    return t


def confusion_table(folder: Path, console: Console) -> list[Any]:
    """The test confusion matrix of the results in `folder` (nothing for regression), with as many
    predicted classes as fit the console's width, and a line naming those left out."""
    path = folder / CONFUSION
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh))
    if len(rows) < 2:
        return []
    classes = rows[0][1:]

    def build(n: int) -> Table:
        t = Table(title="confusion matrix (test; rows = true, columns = predicted)", title_justify="left")
        t.add_column("true \\ predicted", style="bold", no_wrap=True)
        for c in classes[:n]:
            t.add_column(c, justify="right", no_wrap=True)
        for i, row in enumerate(rows[1:]):
            t.add_row(row[0], *(f"[bold]{v}[/]" if j == i else v for j, v in enumerate(row[1:n + 1])))
        return t

    shown = fitting(console, build, len(classes), least=1)
    out: list[Any] = [build(shown)]
    if shown < len(classes):
        out.append(left_out(f"{len(classes) - shown} columns", classes[shown:], f"or see its {CONFUSION}"))
    return out


def fitting(console: Console, build: Callable[[int], Table], most: int, least: int = 0) -> int:
    """The most optional columns (`least` to `most`) with which the table `build(n)` fits the
    console's width, nothing wrapped (the widths grow with n)."""
    lo, hi = least, most
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if natural_width(console, build(mid)) <= console.width:
            lo = mid
        else:
            hi = mid - 1
    return lo


def natural_width(console: Console, renderable: Any) -> int:
    """The width `renderable` takes with nothing wrapped (measured past the console's width, which
    a measure is otherwise clamped to)."""
    return console.measure(renderable, options=console.options.update_width(1 << 20)).maximum


def left_out(what: str, names: list[str], more: str = "or --json") -> Text:
    """The line under a table cut to the terminal: what was left out and how to see it."""
    return Text(f"{what} left out (widen the terminal, {more}): "
                + ", ".join(printable(n) for n in names), style="yellow")


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1e4 else f"{value:.4g}"
    return str(value)


def trials_table(sweep: SweepSummary, metric: str) -> Table:
    """A sweep's trials: what each one changed, its validation and test headline, the best marked
    (chosen on validation, or on the training loss when there is none: the title says which)."""
    best = sweep.best.trial if sweep.best else None
    title = f"trials (best: {best}, chosen on {sweep.selection})" if best is not None else "trials"
    if sweep.selection.startswith("val_"):  # the metric the trials were chosen on (a script's own: val_acc)
        metric = sweep.selection.removeprefix("val_")
    t = Table(title=title, title_justify="left", caption=sweep.note)
    columns = ["trial", "overrides", f"val {metric}", f"test {metric}"]
    if sweep.selection == "train_loss":
        columns.insert(2, "train loss")
    for col in columns:
        t.add_column(col, justify="right" if col != "overrides" else "left")
    for row in sweep.trials:
        m = row.metrics
        overrides = ", ".join(f"{k}={v}" for k, v in row.overrides.items())
        cells = [fmt(m.score("val", metric)) if m else "-",
                 fmt(m.score("test", metric)) if m else "failed"]
        if sweep.selection == "train_loss":
            cells.insert(0, fmt(m.train_loss) if m else "-")
        t.add_row(str(row.trial), overrides, *cells,
                  style="bold green" if row.trial == best else None)
    return t
