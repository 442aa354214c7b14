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
from rich.table import Column, Table

from jobs.errors import QtrainError

app = typer.Typer(
    name="qtrain",
    help="Check, train and run PyTorch training jobs locally or on Qarnot, and keep their results.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def _version(value: bool) -> None:
    if value:
        from jobs import __version__

        print(f"qtrain {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")) -> None:
    """Check, train and run PyTorch training jobs locally or on Qarnot, and keep their results."""

def command(*args: Any, group: typer.Typer | None = None, **kwargs: Any):
    """`app.command` (or `group.command`) whose function reports a QtrainError as one line and exit status 2, and any
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

        return (group or app).command(*args, **kwargs)(guarded)

    return decorate


SetOption = typer.Option(None, "--set", "-s", metavar="KEY.PATH=VALUE",
                         help="Override a job field, e.g. --set train.epochs=5 (repeatable).")


RecheckOption = typer.Option(False, "--recheck", help="Check again even if this job, its data "
                                                      "and the code passed before.")


def _load(job: str, overrides: Optional[list[str]]):
    from jobs.load import load_job

    return load_job(job, overrides or [])


# -------------------------------------------------------------------------------------- check
@command()
def check(
    job: str = typer.Argument(..., help="Job file (.yaml/.json) or a catalog job name."),
    set_: Optional[list[str]] = SetOption,
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    recheck: bool = RecheckOption,
) -> None:
    """Preflight a job: validate it, load and preprocess the data, build the model and run one
    training step on a small batch.  Catches every mistake that can be caught before paying for a
    cloud task.  A job that passed with the same job, data and code is not checked again."""
    from submit.checks import check as check_job

    loaded = _load(job, set_)
    report, remembered = check_job(loaded, recheck=recheck)
    if as_json:
        print(json.dumps({**report, "remembered": remembered}))
        return
    _print_check(report, loaded.source)
    if remembered:
        err_console.print("(passed before with this job, data and code: not checked again; "
                          "--recheck to check anyway)", style="dim", highlight=False)


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
    run: str = typer.Argument(..., help="A run id from the results store (a sweep: its best "
                                        "trial), a results directory, or a model.pt."),
    data: Path = typer.Argument(..., help="CSV/Parquet of feature columns, or .npy/.npz images."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Write CSV here (default: stdout)."),
    store_dir: Optional[Path] = typer.Option(None, "--store", metavar="DIR",
                                             help="Results store to look the run id up in."),
) -> None:
    """Predict with a trained model."""
    from runner.predict import load_model, read_input

    is_path = Path(run).exists() or "/" in run or run.endswith(".pt")
    predictor = load_model(run if is_path else _run_model_dir(run, store_dir))
    frame = predictor.predict(read_input(data), where=str(data))
    if out is None:
        sys.stdout.write(frame.to_csv(index=False))
    else:
        frame.to_csv(out, index=False)
        err_console.print(f"{len(frame)} predictions -> {out}")


def _run_model_dir(ref: str, store_dir: Optional[Path]) -> Path:
    """The folder of the model a stored run stands for (a sweep: the trial chosen on validation)."""
    store, record = _open_run(ref, store_dir)
    trial, metrics = record.chosen()
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


# ---------------------------------------------------------------------------- run and friends
StoreOption = typer.Option(None, "--store", metavar="DIR",
                           help="Results store folder (default: $QTRAIN_STORE, else "
                                "~/.local/share/qtrain/store).")
JsonOption = typer.Option(False, "--json", help="Print one JSON object as the last line of stdout.")
RunArgument = typer.Argument(..., help="A run id, or a unique prefix or suffix of one.")


def _store(path: Optional[Path]):
    from submit import config
    from submit.store import Store

    return Store(config.store_dir(path))


def _open_run(run_ref: str, store_dir: Optional[Path]):
    """(store, the run's record) for the commands that take a RUN."""
    store = _store(store_dir)
    return store, store.get(run_ref)


def _finish(run, store, ui, as_json: bool, show_results: bool = True) -> None:
    """Print a finished run (metrics, confusion matrix, where its files are) and set the exit
    status: 0 succeeded, 1 failed or cancelled."""
    from submit.runs import summary
    from submit.ui import confusion_table, metrics_table

    data = summary(run, store)
    trial, metrics = run.chosen()
    if show_results and metrics:
        title = ("metrics" if trial is None
                 else f"metrics of the best trial ({trial}, chosen on {data['selection']})")
        for table in (metrics_table(metrics, title),
                      confusion_table(store.artifacts_dir(run.run_id, trial))):
            if table is not None:
                ui.out.print(table)
    if run.trials:
        ui.out.print(_trials_table(run))
    style = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(run.state)
    ui.say(f"run {run.run_id}: {run.state}  ->  {data['artifacts_dir']}", style=style)
    if as_json:
        print(json.dumps(data), flush=True)
    if run.state in ("failed", "cancelled"):
        raise typer.Exit(1)


def _trials_table(run):
    from jobs.results import headline
    from submit.ui import trials_table

    return trials_table(run.sweep(), headline(run.task).metric)


def _follow_and_retrieve(run, backend, store, ui, as_json: bool) -> None:
    from submit.runs import failure_report, follow, retrieve

    try:
        status = follow(run, backend, store, ui)
    except KeyboardInterrupt:
        ui.err.print(f"stopped following; the task keeps running. Later: qtrain fetch {run.run_id}"
                     f"  (or qtrain cancel {run.run_id})", style="yellow")
        raise typer.Exit(130) from None
    if status.state == "Failure":
        for line in failure_report(run, backend, status):
            ui.err.print(line, style="red", markup=False, highlight=False)
    run = retrieve(run, backend, store, ui, status)
    _finish(run, store, ui, as_json)


@command()
def run(
    job: str = typer.Argument(..., help="Job file (.yaml/.json) or a catalog job name."),
    backend: Optional[str] = typer.Option(
        None, help="local (the emulator on this machine) or qarnot. Default: qarnot when a Qarnot "
                   "account is configured (QARNOT_CLIENT_TOKEN or its config file), else local."),
    profile: Optional[str] = typer.Option(None, help="cpu, gpu, or a profile name (qtrain profiles). "
                                                     "Default: the job's resources.profile."),
    set_: Optional[list[str]] = SetOption,
    detach: bool = typer.Option(False, "--detach", help="Return once submitted, with the run id."),
    recheck: bool = RecheckOption,
    as_json: bool = JsonOption,
    store_dir: Optional[Path] = StoreOption,
) -> None:
    """Check the job, package it, submit it, follow it live and retrieve its results into the
    results store.  Nothing is uploaded when the check fails.  Interrupting only stops following:
    the task goes on, and `qtrain fetch RUN` retrieves it later."""
    from submit.backends import get_backend
    from submit.runs import submit_run, summary
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    loaded = _load(job, set_)
    store = _store(store_dir)
    be = get_backend(backend)
    record = submit_run(loaded, be, store, ui, profile=profile, recheck=recheck)
    if detach:
        ui.say(f"detached: qtrain status {record.run_id}  |  qtrain fetch {record.run_id}")
        if as_json:
            print(json.dumps(summary(record, store)), flush=True)
        return
    _follow_and_retrieve(record, be, store, ui, as_json)


@command()
def status(run_ref: str = RunArgument, as_json: bool = JsonOption,
           store_dir: Optional[Path] = StoreOption) -> None:
    """Show a run's state (asking the backend while the task runs)."""
    from submit.runs import backend_for, summary
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    if not record.done and record.task_uuid:
        st = backend_for(record).status(record.task_uuid)
        if not st.done:
            store.set_state(record.run_id, st.run_state, detail=st.state)
        else:
            ui.say(f"the task ended ({st.state}): qtrain fetch {record.run_id} retrieves it")
        record = store.get(record.run_id)
        task_state = st.state
    else:
        task_state = record.history[-1]["detail"] if record.history else None
    data = summary(record, store)
    data["task_state"] = task_state
    ui.say(f"{record.run_id}  {record.state}" + (f" (task {task_state})" if task_state else "")
           + f"  {record.backend}/{record.profile}  task {record.task_uuid}")
    if record.error:
        ui.say(f"error: {record.error}", style="red")
    if as_json:
        print(json.dumps(data), flush=True)


@command()
def fetch(run_ref: str = RunArgument,
          wait: bool = typer.Option(True, help="Follow the task until it ends (--no-wait: take "
                                               "what it has uploaded so far)."),
          as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption) -> None:
    """Retrieve a run's results into the store (waiting for its task to end).  Safe to repeat:
    files already retrieved and unchanged are not downloaded again."""
    from submit.runs import backend_for, retrieve
    from submit.ui import Ui

    from submit.backends.base import TaskNotFound

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    be = backend_for(record)
    try:
        if wait:
            _follow_and_retrieve(record, be, store, ui, as_json)
            return
        st = be.status(record.task_uuid or "")
        record = retrieve(record, be, store, ui, st)
    except TaskNotFound as exc:
        if not record.done:  # it can never be retrieved now: say so in the store
            store.set_state(record.run_id, "failed", error=f"the task is gone: {exc.message}")
            raise
        ui.say(f"the task is no longer on {be.describe()}; what was retrieved is in the store")
        record = store.get(record.run_id)
    _finish(record, store, ui, as_json)


@command()
def logs(run_ref: str = RunArgument,
         stderr: bool = typer.Option(False, "--stderr", help="Show stderr instead of stdout."),
         instance: Optional[int] = typer.Option(None, help="Only this instance (sweep trial)."),
         store_dir: Optional[Path] = StoreOption) -> None:
    """Print a task's output (from the backend, else the copy saved when it was fetched)."""
    from jobs.errors import QtrainError
    from submit.runs import LOG_FILES, backend_for

    store, record = _open_run(run_ref, store_dir)
    try:
        text = backend_for(record).output(record.task_uuid or "", instance, stderr)
    except QtrainError:
        saved = store.artifacts_dir(record.run_id) / LOG_FILES["stderr" if stderr else "stdout"]
        if instance is not None or not saved.is_file():
            raise
        text = saved.read_text()
    sys.stdout.write(text)


@command()
def cancel(run_ref: str = RunArgument, as_json: bool = JsonOption,
           store_dir: Optional[Path] = StoreOption) -> None:
    """Abort a run's task, then retrieve whatever results it had uploaded."""
    from submit.runs import backend_for, cancel as cancel_run
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    if record.done:
        ui.say(f"run {record.run_id} already ended: {record.state}")
    else:
        record = cancel_run(record, backend_for(record), store, ui)
    _finish(record, store, ui, as_json, show_results=False)


# ------------------------------------------------------------------------------------ profiles
@command()
def profiles(backend: Optional[str] = typer.Option(None, help="local or qarnot (default as for run)."),
             as_json: bool = JsonOption) -> None:
    """List the profiles the account (or the emulator) offers, and what cpu/gpu map to."""
    from submit import config
    from submit.backends import get_backend

    be = get_backend(backend)
    names = be.profiles()
    if as_json:
        print(json.dumps({"backend": be.name, "profiles": names,
                          "cpu": config.PROFILE_CPU, "gpu": config.PROFILE_GPU}))
        return
    for name in names:
        alias = [a for a, p in (("cpu", config.PROFILE_CPU), ("gpu", config.PROFILE_GPU)) if p == name]
        console.print(name + (f"   (= {alias[0]})" if alias else ""), highlight=False)


# ------------------------------------------------------------------------------------- results
results_app = typer.Typer(help="List, show and compare the runs in the results store.",
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(results_app, name="results")


@command("list", group=results_app)
def results_list(limit: int = typer.Option(20, help="How many runs, newest first (0: all)."),
                 as_json: bool = typer.Option(False, "--json", help="Print a JSON array of runs."),
                 store_dir: Optional[Path] = StoreOption) -> None:
    """The runs in the store, newest first, with the test headline of each run's model (a sweep:
    of the trial chosen on validation)."""
    store = _store(store_dir)
    runs = store.list(limit or None)
    rows = []
    for r in runs:
        name, value = r.headline()
        rows.append({"run_id": r.run_id, "created": r.created, "state": r.state,
                     "job_name": r.job_name, "backend": r.backend, "profile": r.profile,
                     "trials": r.trials, "headline": {"metric": name, "value": value}})
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print(f"no runs yet in {store.root}  (qtrain run JOB)")
        return
    wide = console.width >= 110  # the backend column only where it fits
    t = Table(Column("run", no_wrap=True), Column("created", no_wrap=True), "state",
              *(["backend"] if wide else []), Column("test metric", no_wrap=True))
    for row in rows:
        h = row["headline"]
        t.add_row(row["run_id"], row["created"][5:16].replace("T", " "), row["state"],
                  *([f"{row['backend']}/{row['profile']}"] if wide else []),
                  "-" if h["value"] is None else f"{h['metric']} {h['value']:.4f}")
    console.print(t)


@command("show", group=results_app)
def results_show(run_ref: str = RunArgument, as_json: bool = JsonOption,
                 store_dir: Optional[Path] = StoreOption) -> None:
    """Everything about one run: states with times, metrics, confusion matrix, files."""
    from submit.runs import summary
    from submit.ui import confusion_table, metrics_table

    store, record = _open_run(run_ref, store_dir)
    data = summary(record, store)
    if as_json:
        print(json.dumps(data))
        return
    t = Table(title=f"run {record.run_id}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    for key in ("state", "job_name", "backend", "profile", "task_uuid", "created", "error"):
        if data.get(key) is not None:
            t.add_row(key.replace("_", " "), str(data[key]))
    t.add_row("uploaded", f"{record.uploaded_bytes:,} bytes")
    t.add_row("job / dataset", f"{record.job_hash[:12]} / {record.dataset_hash[:12]}")
    t.add_row("states", "  ".join(f"{h['state']} {h['at'][11:19]}" for h in record.history))
    t.add_row("files", data["artifacts_dir"])
    console.print(t)
    if record.trials:
        console.print(_trials_table(record))
    trial, metrics = record.chosen()
    if metrics:
        console.print(metrics_table(metrics, "metrics" if trial is None else f"metrics of trial {trial}"))
        table = confusion_table(store.artifacts_dir(record.run_id, trial))
        if table is not None:
            console.print(table)


@command("compare", group=results_app)
def results_compare(run_refs: list[str] = typer.Argument(..., help="Two or more runs."),
                    as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption) -> None:
    """Runs side by side: test metrics and the job settings that differ."""
    from submit.compare import compare_runs
    from submit.ui import fmt

    store = _store(store_dir)
    records = [store.get(r) for r in run_refs]
    table = compare_runs(records)
    if as_json:
        print(json.dumps(table))
        return
    t = Table("", *(r.run_id for r in records), title="compare", title_justify="left")
    for section in ("metrics", "settings"):
        for key, values in table[section].items():
            t.add_row(key, *(fmt(v) for v in values))
    console.print(t)


# --------------------------------------------------------------------------------------- image
image_app = typer.Typer(help="The runner images (docker/Dockerfile) that Qarnot and the emulator run.",
                        no_args_is_help=True, rich_markup_mode=None)
app.add_typer(image_app, name="image")


@command("build", group=image_app)
def image_build(gpu: bool = typer.Option(False, "--gpu", help="The CUDA variant (a CUDA build of torch)."),
                tag: Optional[str] = typer.Option(None, help="Image tag (default qtrain/runner:latest, "
                                                             "--gpu: qtrain/runner:gpu)."),
                offline: bool = typer.Option(False, "--offline", help="No registry access: a debootstrap "
                                             "base (unless --base) and packages from a wheelhouse made "
                                             "here with pip download."),
                base: Optional[str] = typer.Option(None, help="Base image (default python:3.11-slim-"
                                                              "bookworm; --gpu: an nvidia/cuda image)."),
                as_json: bool = JsonOption) -> None:
    """Build the runner image.  A rebuild after a code change reuses every cached layer but the
    last two and takes seconds."""
    from submit.image import build

    stream = sys.stderr if as_json else sys.stdout
    built = build(gpu=gpu, tag=tag, offline=offline, base=base,
                  log=lambda line: print(line, file=stream, flush=True))
    print(f"built {built.tag} ({built.image_id[:19]}) in {built.seconds:.1f}s", file=stream, flush=True)
    if as_json:
        print(json.dumps({"tag": built.tag, "image_id": built.image_id, "seconds": built.seconds,
                          "source_digest": built.source_digest}))


@command("push", group=image_app)
def image_push(target: str = typer.Argument(..., help="REPO:TAG in your registry, e.g. "
                                                      "registry.example.com/team/qtrain-runner:1"),
               source: str = typer.Option("qtrain/runner:latest", help="The local image to push.")) -> None:
    """Push the runner image to a registry Qarnot can pull from (log in with `docker login`
    first).  Then set resources.image to REPO:TAG; for a private registry export
    QTRAIN_DOCKER_SRV, QTRAIN_REGISTRY_LOGIN and QTRAIN_REGISTRY_PASSWORD before qtrain run."""
    from submit.image import push

    digest = push(source, target, log=lambda line: print(line, flush=True))
    console.print(f"pushed {target} ({digest})", highlight=False)


# ------------------------------------------------------------------------------------ emulator
emulator_app = typer.Typer(help="The local Qarnot-compatible emulator (API + S3 on 127.0.0.1).",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(emulator_app, name="emulator")
ExecutorOption = typer.Option(None, "--executor", help="How instances run: docker (the task's "
                                                       "image) or process (sh -c DOCKER_CMD here). "
                                                       "Default: docker where an engine answers and "
                                                       "the runner image exists, else process.")


@command("start", group=emulator_app)
def emulator_start(executor: Optional[str] = ExecutorOption,
                   port: int = typer.Option(0, help="API port (0: any free port)."),
                   as_json: bool = JsonOption) -> None:
    """Start the emulator daemon in the background (a no-op when it already runs)."""
    from submit.emulator import daemon

    ep, started = daemon.start(executor, port=port)
    _print_emulator(ep, "started" if started else "already running", as_json)


@command("stop", group=emulator_app)
def emulator_stop() -> None:
    """Stop the daemon; its running tasks are aborted."""
    from submit.emulator import daemon

    console.print("emulator stopped" if daemon.stop() else "the emulator was not running")


@command("status", group=emulator_app)
def emulator_status(as_json: bool = JsonOption) -> None:
    """Is the daemon running, where, with which executor."""
    from submit.emulator import daemon

    ep = daemon.running()
    if ep is None:
        if as_json:
            print(json.dumps({"running": False, "token_file": str(daemon.token_file())}))
        else:
            console.print("the emulator is not running (qtrain emulator start, or just qtrain run)")
        return
    _print_emulator(ep, "running", as_json)


def _print_emulator(ep, state: str, as_json: bool) -> None:
    from submit.emulator import daemon

    info = {"running": True, "state": state, "url": ep.url, "s3_url": ep.s3_url, "pid": ep.pid,
            "executor": ep.executor, "log": str(ep.log), "token_file": str(daemon.token_file())}
    if as_json:
        print(json.dumps(info))
        return
    console.print(f"emulator {state}: API {ep.url}, S3 {ep.s3_url}, executor {ep.executor}, "
                  f"pid {ep.pid}\n  token in {info['token_file']} (0600), log {ep.log}", highlight=False)


@command("serve", group=emulator_app)
def emulator_serve(port: int = typer.Option(8642, help="API port."),
                   token: Optional[str] = typer.Option(None, help="Token clients must send "
                                                       "(default: the one in the token file)."),
                   executor: Optional[str] = ExecutorOption,
                   s3_port: int = typer.Option(0, help="S3 port (0: any free port).")) -> None:
    """Run the emulator in the foreground until Ctrl-C (for a container or a debugger)."""
    from submit.emulator import daemon

    daemon.serve(port=port, token=token, executor=executor or daemon.default_executor(), s3_port=s3_port,
                 announce=lambda m: console.print(m, highlight=False))


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
