"""The tables of `results compare` and `results list`, as the terminal fits them.

`results compare` puts one column per run (or trial) while they fit the terminal's width; past that
it turns the table around, one row per run, with the settings that differ first, then the metrics,
headline first, as many as fit, and one line naming the columns left out (`--json` has them all).
`results list` keeps the run and its state (a long run id folds), and the other columns in the
order they matter: its metrics, the footprint asked for, then (from 120 columns) backend and tags.
A column is never squeezed into nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table
from rich.text import Text

from submit.backends.footprint import FIELDS as FOOTPRINT_FIELDS
from submit.ui import fitting, fmt, left_out, metrics_table, natural_width, printable

CAP = 24  # a setting's value may fold: it is measured at this many characters at most


@dataclass
class Col:
    """One column of a table cut to the terminal: its header, its cells (rich markup), and where it
    stands when shown."""

    header: str
    cells: list[str]
    name: str = ""  # as the line of columns left out names it
    justify: str = "left"
    fold: bool = False  # a setting's value: it folds rather than widening the table
    cap: int = CAP  # a folding column is measured at this many characters at most
    style: str | None = None
    place: int = 0
    plain: list[str] = field(default_factory=list)  # its cells as text, for `fold` columns' measure


def fitted(console: Console, required: list[Col], optional: list[Col], **options: Any) -> tuple[Table, list[Col]]:
    """A table of the `required` columns and as many of the `optional` ones (in that priority) as
    fit the console's width; (the table, the columns left out)."""

    def build(n: int, measure: bool = True) -> Table:
        chosen = required + sorted(optional[:n], key=lambda c: c.place)
        t = Table(*(Column(c.header, justify=c.justify, style=c.style, no_wrap=not c.fold,
                           overflow="fold" if c.fold else "ellipsis") for c in chosen), **options)
        rows = len(chosen[0].cells) if chosen else 0
        for i in range(rows):
            t.add_row(*((escape(c.plain[i][:c.cap]) if measure and c.fold else c.cells[i]) for c in chosen))
        return t

    shown = fitting(console, build, len(optional))
    return build(shown, measure=False), optional[shown:]


# ------------------------------------------------------------------------------------- show
NOTHING = "no metrics reported"  # runner/userscript.py's note begins so


def metrics_view(metrics: dict[str, Any] | None, title: str, script: bool, done: bool) -> list[Any]:
    """What `results show` prints of a run's numbers: its splits' metrics, what a script reported
    itself (log_metrics' values, as they are), and its notes; a script run that reported nothing
    says so."""
    out: list[Any] = []
    splits = metrics_table(metrics or {}, title)
    if splits is not None:
        out.append(splits)
    reported = (metrics or {}).get("reported") or {}
    if reported:
        t = Table(title_justify="left")
        t.add_column("reported by the script" + title.removeprefix("metrics"), style="bold")
        t.add_column("value", justify="right", overflow="fold")
        for name, value in reported.items():
            t.add_row(escape(printable(str(name))), escape(value_text(value)))
        out.append(t)
    notes = [str(n) for n in (metrics or {}).get("notes") or []]
    if script and (metrics is not None or done) and splits is None and not reported \
            and not any(n.startswith(NOTHING) for n in notes):
        notes.insert(0, NOTHING)
    out += [Text(f"note: {printable(n)}", style="yellow") for n in notes]
    return out


# ---------------------------------------------------------------------------------- compare
def compare_view(table: dict[str, Any], labels: list[str], head: str, console: Console) -> list[Any]:
    """What `results compare` prints: the table (runs as columns, or as rows when they do not fit),
    and the lines under it."""
    wide = _by_columns(table, labels, measure=True)
    if natural_width(console, wide) <= console.width:
        return [_by_columns(table, labels, measure=False), *_same(table, "column")]
    return _by_rows(table, labels, head, console)


def _metric_cells(table: dict[str, Any], name: str) -> list[str]:
    best = set(table["best"].get(name, []))
    shown = [escape("unknown" if v is None and name in FOOTPRINT_FIELDS else value_text(v))
             for v in table["metrics"][name]]
    return [f"[bold green]{text}[/]" if i in best else text for i, text in enumerate(shown)]


def value_text(value: Any) -> str:
    """A metric as one cell: `-` when there is none, lists and dicts as JSON."""
    if value is None:
        return "-"
    return printable(json.dumps(value) if isinstance(value, (list, dict)) else fmt(value))


def setting_text(value: Any) -> str:
    """A setting as one cell: `none` when it is empty."""
    return "none" if value is None else value_text(value)


def _by_columns(table: dict[str, Any], labels: list[str], measure: bool) -> Table:
    t = Table("", *(Column(escape(label), justify="right", overflow="fold") for label in labels),
              title="compare (best value in green; * setting differs)", title_justify="left")
    for name in table["metrics"]:
        t.add_row(escape(name), *_metric_cells(table, name))
    t.add_section()
    for key in table["differs"]:
        texts = [escape(setting_text(v)[:CAP] if measure else setting_text(v)) for v in table["settings"][key]]
        t.add_row(f"* {escape(key)}", *(f"[yellow]{text}[/]" for text in texts))
    return t


def _same(table: dict[str, Any], where: str) -> list[Text]:
    """The line of the settings every column shares (shown once, not once a column)."""
    same = [k for k in table["settings"] if k not in table["differs"]]
    if not same:
        return []
    return [Text(f"the same in every {where}: " + ", ".join(
        f"{key} {setting_text(table['settings'][key][0])}" for key in same), style="dim")]


def _priority(names: list[str], head: str) -> list[str]:
    """Metrics in the order they matter: which trial, the headline, what a script reported, the
    rest, and the counts of rows last."""
    groups: list[list[str]] = [[], [], [], [], []]
    for name in names:
        groups[0 if name in ("trial", "chosen on") else 1 if name.endswith(f" {head}") else
               2 if name.startswith("reported ") else 4 if name.endswith(" n") else 3].append(name)
    return [name for group in groups for name in group]


def _by_rows(table: dict[str, Any], labels: list[str], head: str, console: Console) -> list[Any]:
    differs = [k for k in table["settings"] if k in table["differs"]]
    names = _priority(list(table["metrics"]), head)
    optional = [Col(escape(key), [f"[yellow]{escape(setting_text(v))}[/]" for v in table["settings"][key]],
                    name=key, fold=True, place=i, plain=[setting_text(v) for v in table["settings"][key]])
                for i, key in enumerate(differs)]
    optional += [Col(escape(name.replace(" ", "\n", 1)), _metric_cells(table, name), name=name, justify="right",
                     place=len(differs) + i) for i, name in enumerate(names)]
    label = Col("", [escape(label) for label in labels], style="bold")
    shown, left = fitted(console, [label], optional, title="compare (best value in green; settings that "
                         "differ in yellow)", title_justify="left")
    out: list[Any] = [shown]
    if left:
        out.append(left_out(f"{len(left)} of {len(optional)} columns", [c.name for c in left]))
    return out + _same(table, "row")


# ------------------------------------------------------------------------------------- list
FOOTPRINT_COLUMNS = ("cost_eur", "energy_wh", "co2_g")


def list_view(runs: list[Any], tests: list[dict[str, Any]], metrics: list[str], footprint: bool,
              console: Console) -> list[Any]:
    """What `results list` prints: a row a run (its test metrics in `tests`), the run and its state
    always, then as many of its metrics, the footprint (when asked), backend and tags as fit."""
    from rich import box

    # the id starts with its creation time; a long one folds rather than leave the metrics out
    required = [Col("run", [escape(r.run_id) for r in runs], fold=True, cap=40, plain=[r.run_id for r in runs]),
                Col("state", [escape(state_text(r)) for r in runs])]
    optional = [Col(m, [fmt(t.get(m)) if m in t else "" for t in tests], justify="right", place=2 + i)
                for i, m in enumerate(metrics)]
    if footprint:
        cells = [footprint_cells(r) for r in runs]
        optional += [Col(f, [c[i] for c in cells], justify="right", place=10 + i)
                     for i, f in enumerate(FOOTPRINT_COLUMNS)]
    if console.width >= 120:  # where there is room: the backend, and tags when a run has some
        optional.append(Col("backend", [escape(f"{r.backend}/{r.profile}") for r in runs], place=0))
    if console.width >= 120 and any(r.tags for r in runs):
        optional.append(Col("tags", [escape(tags_text(r.tags)) for r in runs], place=1, fold=True,
                            plain=[tags_text(r.tags) for r in runs]))
    for c in optional:
        c.name = c.name or c.header
    shown, left = fitted(console, required, optional, box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left",
                         caption="metrics: test split of each run's model (a sweep: its best trial)"
                         + ("; * emulated figures (the local emulator's model, not Qarnot's)" if footprint else ""))
    return [shown] + ([left_out(f"{len(left)} column{'s' if len(left) > 1 else ''}", [c.name for c in left])]
                      if left else [])


def footprint_cells(run: Any) -> list[str]:
    from submit.backends.footprint import show

    fp = run.info.get("footprint") or {}
    mark = "*" if fp.get("source") == "emulated" else ""
    return [show(fp.get(f)) + (mark if fp.get(f) is not None else "") for f in FOOTPRINT_COLUMNS]


def state_text(record: Any) -> str:
    if record.done and not record.retrieved and record.task_uuid:
        return f"{record.state} (not retrieved)"
    return record.state


def tags_text(tags: dict[str, str]) -> str:
    return printable(" ".join(k if not v else f"{k}={v}" for k, v in tags.items()))
