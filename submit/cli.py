"""The `qtrain` command line.

Every user mistake is a `QtrainError`: one line on stderr, exit status 2, no traceback.  Anything
else is an internal error and keeps its traceback.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from jobs.errors import QtrainError

app = typer.Typer(
    name="qtrain",
    help="Check, train and run PyTorch training jobs locally or on Qarnot, and keep their results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console()
err_console = Console(stderr=True)

def command(*args: Any, **kwargs: Any):
    """`app.command` whose function reports a QtrainError as one line and exit status 2, and any
    other exception as an internal error with its traceback (exit status 1)."""

    def decorate(fn):
        @functools.wraps(fn)
        def guarded(*a: Any, **kw: Any):
            try:
                return fn(*a, **kw)
            except QtrainError as exc:
                err_console.print(f"[bold red]error:[/] {exc.one_line()}", highlight=False,
                                  soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                err_console.print("interrupted")
                raise typer.Exit(130) from None
            except (typer.Exit, typer.Abort):
                raise
            except Exception:  # noqa: BLE001
                err_console.print("[bold red]internal error[/] (please report it with this traceback):")
                traceback.print_exc()
                raise typer.Exit(1) from None

        return app.command(*args, **kwargs)(guarded)

    return decorate


SetOption = typer.Option(None, "--set", "-s", metavar="KEY.PATH=VALUE",
                         help="Override a job field, e.g. --set train.epochs=5 (repeatable).")


def _load(job: str, overrides: Optional[list[str]]):
    from jobs.load import load_job

    return load_job(job, overrides or [])


# -------------------------------------------------------------------------------------- check
@command()
def check(
    job: str = typer.Argument(..., help="Job file (.yaml/.json) or a catalog job name."),
    set_: Optional[list[str]] = SetOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
) -> None:
    """Preflight a job: validate it, load and preprocess the data, build the model and run one
    training step on a small batch.  Catches every mistake that can be caught before paying for a
    cloud task."""
    from runner.run import check_job

    loaded = _load(job, set_)
    report = check_job(loaded)
    if as_json:
        print(json.dumps(report))
        return
    _print_check(report, loaded.source)


def _print_check(report: dict[str, Any], source: str) -> None:
    t = Table(title=f"qtrain check {source}: OK", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    data = report["data"]
    t.add_row("job", f"{report['job']} ({report['task']})")
    shape = f", images {tuple(data['shape'])}" if data["kind"] == "images" else ""
    t.add_row("rows", f"{data['rows']}{shape}" + (f" + {data['test_rows']} test" if data.get("test_rows") else ""))
    sp = report["splits"]
    t.add_row("splits", f"train {sp['train']} / val {sp['val']} / test {sp['test']}")
    t.add_row("features", f"{report['features']} after encoding")
    if "classes" in report:
        total = sum(report["classes"].values())
        t.add_row("classes", ", ".join(f"{c}: {n} ({100 * n / total:.0f}%)"
                                       for c, n in report["classes"].items()))
    else:
        tg = report["target"]
        t.add_row("target", f"mean {tg['mean']:.4g}, std {tg['std']:.4g}, "
                            f"range {tg['min']:.4g}..{tg['max']:.4g}")
    for m in report["models"]:
        label = "parameters" if m["trial"] is None else f"trial {m['trial']}"
        extra = "" if m["overrides"] is None else f"  [{', '.join(f'{k}={v}' for k, v in m['overrides'].items())}]"
        t.add_row(label, f"{m['trainable']:,} trainable of {m['parameters']:,}, first step loss "
                         f"{m['first_step_loss']:.4f}{extra}")
    t.add_row("device", report["device"])
    console.print(t)


# -------------------------------------------------------------------------------------- train
@command()
def train(
    job: str = typer.Argument(..., help="Job file (.yaml/.json) or a catalog job name."),
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the results."),
    set_: Optional[list[str]] = SetOption,
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint.pt."),
    trial: Optional[int] = typer.Option(None, help="Run only this sweep trial."),
) -> None:
    """Train here, in this process, with no submission: the quickest local dry run.  Writes the
    results contract (metrics.json, confusion matrix, curves, model.pt, ...) to --out."""
    from runner.run import run_job

    loaded = _load(job, set_)
    run_job(loaded, out, resume=resume, trial=trial)


# ------------------------------------------------------------------------------------ predict
@command()
def predict(
    run: Path = typer.Argument(..., help="A run's results directory or its model.pt."),
    data: Path = typer.Argument(..., help="CSV/Parquet of feature columns, or .npy/.npz images."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write CSV here (default: stdout)."),
) -> None:
    """Predict with a trained model."""
    from runner.predict import load_model, read_input

    predictor = load_model(run)
    frame = predictor.predict(read_input(data), where=str(data))
    if out is None:
        sys.stdout.write(frame.to_csv(index=False))
    else:
        frame.to_csv(out, index=False)
        err_console.print(f"{len(frame)} predictions -> {out}")


# ------------------------------------------------------------------------------------ catalog
@command()
def catalog() -> None:
    """List the ready job files for the seed workloads."""
    import yaml

    from jobs.load import CATALOG_DIR

    t = Table("job", "task", "data", "description")
    for f in sorted(CATALOG_DIR.glob("*.yaml")):
        raw = yaml.safe_load(f.read_text())
        t.add_row(f.stem, raw.get("task", ""), str(raw.get("data", {}).get("path", "")),
                  raw.get("description", ""))
    console.print(t)


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the CLI (click's standalone mode handles usage errors and --help) and return its status."""
    try:
        app(args=argv, prog_name="qtrain")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
