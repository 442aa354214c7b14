"""`qtrain check`, `train`, `predict`, `catalog`: a job, here."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from jobs.errors import QtrainError
from submit.cli.common import (JobArgument, ScriptArgs, SetOption, RecheckOption, SmokeOption, _load, _open_run, command, console, output_file,
                               err_console)


# -------------------------------------------------------------------------------------- check
@command()
def check(
    job: str = JobArgument,
    script_args: Optional[list[str]] = ScriptArgs,
    set_: Optional[list[str]] = SetOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    recheck: bool = RecheckOption,
    smoke: bool = SmokeOption,
) -> None:
    """Preflight a job: validate it, load and preprocess the data, build the model and run one
    training step on a small batch.  Catches every mistake that can be caught before paying for a
    cloud task.  A job that passed with the same job, data and code is not checked again."""
    from submit.run.checks import check as check_job
    from submit.run.checks import smoke as smoke_run
    from submit.run.environment import job_site

    loaded = _load(job, set_, script_args)
    _, site = job_site(loaded, lambda line: err_console.print(line, style="dim", highlight=False, markup=False))
    report, remembered = check_job(loaded, recheck=recheck, site=site)
    if smoke:
        report = {**report, **smoke_run(loaded, site)}
    if as_json:
        print(json.dumps({**report, "remembered": remembered}))
        return
    _print_check(report, loaded.source, remembered, spread_line(loaded.job))
    if remembered:
        err_console.print("(passed before with this job, data and code: not checked again; "
                          "--recheck to check anyway)", style="dim", highlight=False)


def spread_line(job: Any) -> str | None:
    """How `qtrain run` spreads the training (resources.nodes x procs_per_node), or None."""
    res = job.resources
    if not res.spread():
        return None
    procs = "one process a GPU (one on CPU)" if res.procs_per_node == "auto" else f"{res.procs_per_node} processes"
    batch = "" if job.script is not None else f"; train.batch_size {job.train.batch_size} is per process"
    return f"{res.nodes} node(s) x {procs}, torchrun and DistributedDataParallel{batch}"


def _print_check(report: dict[str, Any], source: str, remembered: bool = False, spread: str | None = None) -> None:
    t = Table(title=f"qtrain check {source}: OK", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    if spread:
        t.add_row("distributed", spread)
    if "script" in report:  # a script job: what could be checked without running it (and a smoke run)
        t.add_row("job", f"{report['job']} (script {report['script']}, {report['code_files']} code file(s))")
        t.add_row("imports", ", ".join(report["imports"]) or "none")
        if report.get("trials"):
            t.add_row("trials", str(report["trials"]))
        if "smoke" in report:
            t.add_row("smoke run", f"passed in {report['smoke']['seconds']} s")
        console.print(t)
        return
    data = report["data"]
    t.add_row("job", f"{report['job']} ({report['task']})")
    shape = f", images {tuple(data['shape'])}" if data["kind"] == "images" else ""
    t.add_row("rows", f"{data['rows']}{shape}" + (f" + {data['test_rows']} test" if data.get("test_rows") else ""))
    sp = report["splits"]
    t.add_row("splits", f"train {sp['train']} / val {sp['val']} / test {sp['test']}")
    t.add_row("features", f"{report['features']} after encoding")
    if report.get("refit"):  # train.refit: how the epochs (and the model) will be chosen
        t.add_row("training", report["refit"])
    files = data.get("files")
    if files:  # image files: the sizes found, and what could not be read
        found = ", ".join(f"{size} ({n})" for size, n in files["sizes_found"].items())
        more = f" and {files['distinct_sizes'] - len(files['sizes_found'])} more" if files["distinct_sizes"] > len(
            files["sizes_found"]) else ""
        h, w = files["image_size"]
        t.add_row("image files", f"sizes found (h x w) {found}{more}; each brought to {h}x{w}, "
                                 f"{'grayscale' if files['channels'] == 1 else 'RGB'}")
        if files["unreadable"]:
            t.add_row("unreadable", f"{files['unreadable']} skipped: {', '.join(files['unreadable_files'])}"
                                    + (" ..." if files["unreadable"] > len(files["unreadable_files"]) else ""))
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
    for line in (report.get("warnings") or []) if remembered else []:  # a fresh check printed them
        err_console.print(f"warning: {line}", style="yellow", highlight=False, markup=False)


# -------------------------------------------------------------------------------------- train
@command()
def train(
    job: str = JobArgument,
    script_args: Optional[list[str]] = ScriptArgs,
    out: Path = typer.Option(..., "--out", "-o", help="Directory for the results."),
    set_: Optional[list[str]] = SetOption,
    resume: bool = typer.Option(False, help="Continue from OUT/checkpoint.pt."),
    trial: Optional[int] = typer.Option(None, help="Run only this sweep trial."),
) -> None:
    """Train here, in this process, with no submission: the quickest local dry run.  Writes the
    results contract (metrics.json, confusion matrix, curves, model.pt, ...) to --out."""
    from runner.api import run_job
    from submit.run.environment import job_site

    loaded = _load(job, set_, script_args)
    res = loaded.job.resources
    if res.spread():  # the same model, without torch.distributed
        err_console.print(f"note: resources.nodes {res.nodes} x procs_per_node {res.procs_per_node}: qtrain train "
                          f"trains in this one process; qtrain run spreads it", style="dim", highlight=False,
                          markup=False)
    _, site = job_site(loaded, lambda line: err_console.print(line, style="dim", highlight=False, markup=False))
    run_job(loaded, out, resume=resume, trial=trial, site=site)


# ------------------------------------------------------------------------------------ predict
@command()
def predict(
    run: str = typer.Argument(..., help="A run from the results store (id, job name, JOB~N, @TAG; "
                                        "a sweep: its best trial), a results directory, or a model.pt."),
    data: Path = typer.Argument(..., help="CSV/Parquet of feature columns, .npy/.npz images, or a folder of image files."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write CSV here (default: stdout); "
                                       "with the target column present, its metrics beside it "
                                       "(OUT.metrics.json)."),
    id_column: Optional[str] = typer.Option(None, "--id", metavar="COLUMN",
                                            help="Copy this column of the input into the output."),
    store_dir: Optional[Path] = typer.Option(None, "--store", metavar="DIR",
                                             help="Results store to look the run id up in."),
) -> None:
    """Predict with a trained model, treating the data as training did: the model's feature
    columns (one missing is an error; extra ones are ignored, and said so), missing values imputed
    or, for a model trained with `missing: drop`, those rows left without a prediction (and
    counted), unseen categories named.  The output keeps each input row's number (`row`).  When
    the file holds the target column, its metrics are printed as a run's are."""
    from jobs.results import atomic_write
    from runner.api import load_model, read_input
    from submit.ui import metrics_table

    if out is not None:
        output_file(out, "--out")  # before the model is loaded and the data read
    is_path = Path(run).exists() or "/" in run or run.endswith(".pt")
    predictor = load_model(run if is_path else _run_model_dir(run, store_dir))
    na_values = (predictor.job.get("data") or {}).get("na_values")
    result = predictor.report(read_input(data, na_values), where=str(data), id_column=id_column)
    for note in result.notes:
        err_console.print(f"warning: {note}", style="yellow", highlight=False, markup=False)
    if out is None:
        sys.stdout.write(result.frame.to_csv(index=False))
    else:
        result.frame.to_csv(out, index=False)
        made = int(result.frame["predicted"].notna().sum())
        err_console.print(f"{made} prediction(s) for {len(result.frame)} row(s) -> {out}", highlight=False,
                          markup=False)
    if result.metrics:
        table = metrics_table({"file": result.metrics}, f"metrics on {data.name} (its {predictor.target} column)")
        (console if out is not None else err_console).print(table)
        if out is not None:
            path = out.with_name(out.stem + ".metrics.json")
            atomic_write(path, json.dumps(result.metrics, indent=2) + "\n")
            err_console.print(f"metrics -> {path}", highlight=False, markup=False)


def _run_model_dir(ref: str, store_dir: Optional[Path]) -> Path:
    """The folder of the model a stored run stands for (a sweep: the trial chosen on validation)."""
    from submit.results.query import user_job

    store, record = _open_run(ref, store_dir)
    trial, metrics = record.chosen()
    script = user_job(record, trial).get("script")
    if script:
        raise QtrainError(f"run {record.run_id}: a script job ({script.get('path')}): its model.pt is the script's "
                          "own, which only its code can load", hint="load it with your script's model class; qtrain "
                          "predict takes runs of model jobs (kind mlp, cnn, transfer or module)")
    if metrics is None:
        raise QtrainError(f"run {record.run_id}: no trained model in the store ({record.state})",
                          hint=f"qtrain fetch {record.run_id} retrieves it once its task has ended")
    return store.artifacts_dir(record.run_id, trial)


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
