"""`qtrain run`, `status`, `fetch`, `logs`, `cancel`, `profiles`: a run on a backend."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from jobs.errors import QtrainError, RunError
from submit.cli.common import (JobArgument, JsonOption, RecheckOption, ScriptArgs, SmokeOption, RunArgument, SetOption, StoreOption, _load, _open_run, _store,
                               command, console)


def _finish(run, store, ui, as_json: bool, show_results: bool = True) -> None:
    """Print a finished run (metrics, confusion matrix, where its files are) and set the exit
    status: 0 succeeded, 1 failed or cancelled (3: something failed on the way, `RunError`)."""
    from submit.run.summary import summary
    from submit.ui import confusion_table, metrics_table

    data = summary(run, store)
    trial, metrics = run.chosen()
    if show_results and metrics:
        title = ("metrics" if trial is None
                 else f"metrics of the best trial ({trial}, chosen on {data['selection']})")
        for table in (metrics_table(metrics, title),
                      *confusion_table(store.artifacts_dir(run.run_id, trial), ui.out)):
            if table is not None:
                ui.out.print(table, soft_wrap=False)
    for note in (metrics or {}).get("notes") or [] if show_results else []:
        ui.warn(note)
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


def _follow_and_retrieve(run, backend, store, ui, as_json: bool, wait: bool = True) -> None:
    """Follow a sent run to its end (`wait`; else take its state now), retrieve its results and
    print it.  Whatever fails from here is named with the run and exits 3 (`RunError`): the run
    was sent, so "a mistake to fix, nothing sent" (2) would be a lie."""
    from submit.backends.base import TaskNotFound
    from submit.run.follow import follow
    from submit.run.retrieve import retrieve, task_gone
    from submit.run.summary import failure_report

    try:
        status = follow(run, backend, store, ui) if wait else backend.status(run.task_uuid or "")
        if status.state == "Failure":
            for line in failure_report(run, backend, status):
                ui.err.print(line, style="red", markup=False, highlight=False)
        run = retrieve(run, backend, store, ui, status)
    except KeyboardInterrupt:
        ui.err.print(f"stopped following; the task keeps running. Later: qtrain fetch {run.run_id}"
                     f"  (or qtrain cancel {run.run_id})", style="yellow")
        raise typer.Exit(130) from None
    except TaskNotFound as exc:
        ended = run.done
        run = task_gone(run, store, exc)
        if run.info.get("remote") == "deleted":  # another qtrain retrieved it meanwhile, then deleted the task
            ui.say(f"run {run.run_id} was retrieved by another qtrain meanwhile: it is in the store", style="dim")
        elif not ended:
            raise RunError(f"run {run.run_id}: {exc.message}", hint=exc.hint) from exc
        else:
            ui.say(f"the task is no longer on {backend.describe()}; what was retrieved is in the store")
    except RunError:
        raise
    except QtrainError as exc:
        raise RunError(f"run {run.run_id}: {exc.message}", hint=exc.hint or f"qtrain fetch {run.run_id}") from exc
    _finish(run, store, ui, as_json)


@command()
def run(
    job: str = JobArgument,
    script_args: Optional[list[str]] = ScriptArgs,
    backend: Optional[str] = typer.Option(
        None, help="local (the emulator on this machine) or qarnot. Default: qarnot when a Qarnot "
                   "account is configured (QARNOT_CLIENT_TOKEN or its config file), else local."),
    profile: Optional[str] = typer.Option(None, help="cpu, gpu, or a profile name (qtrain profiles). "
                                                     "Default: the job's resources.profile."),
    set_: Optional[list[str]] = SetOption,
    detach: bool = typer.Option(False, "--detach", help="Return once submitted, with the run id."),
    tag: Optional[list[str]] = typer.Option(None, "--tag", metavar="KEY[=VALUE]",
                                            help="Tag the run (repeatable); `@KEY` then names it."),
    note: Optional[str] = typer.Option(None, "--note", help="A note kept with the run."),
    recheck: bool = RecheckOption,
    smoke: bool = SmokeOption,
    dry_run: bool = typer.Option(False, "--dry-run", help="Do what run does up to the sending (check, "
                                                          "requirements, placement, estimate), list every "
                                                          "file and byte an upload would send, and stop: "
                                                          "nothing is sent or recorded."),
    estimate: bool = typer.Option(False, "--estimate", help="Check the job and print what the run would take: "
                                                            "wall time, cost (EUR) and energy, with the "
                                                            "account's credits left; nothing is sent."),
    max_cost: Optional[float] = typer.Option(None, "--max-cost", metavar="EUR", min=0,
                                             help="Refuse to submit (nothing sent) when the estimated "
                                                  "cost is over this many euros."),
    as_json: bool = JsonOption,
    store_dir: Optional[Path] = StoreOption,
) -> None:
    """Check the job, package it, submit it, follow it live and retrieve its results into the
    results store.  Nothing is uploaded when the check fails.  Interrupting only stops following:
    the task goes on, and `qtrain fetch RUN` retrieves it later.

    Exit status: 0 succeeded; 1 the run failed or was cancelled; 2 a mistake in the job, its data
    or the setup, and nothing was sent; 3 something failed after the run was recorded (the message
    names it; `qtrain status RUN` tells more); 130 interrupted."""
    from submit.backends import get_backend
    from submit.run.submission import submit_run
    from submit.run.summary import summary
    from submit.store import parse_tag
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    tags = dict(parse_tag(t, "--tag") for t in tag or [])  # before anything is checked or sent
    loaded = _load(job, set_, script_args)
    if dry_run:
        _dry_run(loaded, get_backend(backend), ui, profile, recheck, max_cost, smoke, as_json)
        return
    if estimate:
        _estimate(loaded, get_backend(backend), ui, profile, recheck, max_cost, as_json)
        return
    store = _store(store_dir)
    be = get_backend(backend)
    record = submit_run(loaded, be, store, ui, profile=profile, recheck=recheck, tags=tags,
                        note=(note or "").strip() or None, max_cost=max_cost, smoke=smoke)
    if detach:
        ui.say(f"detached: qtrain status {record.run_id}  |  qtrain fetch {record.run_id}")
        if as_json:
            print(json.dumps(summary(record, store)), flush=True)
        return
    _follow_and_retrieve(record, be, store, ui, as_json)


def _estimate(loaded, be, ui, profile: str | None, recheck: bool, max_cost: float | None, as_json: bool) -> None:
    """`run --estimate`: the run's own path up to the estimate; nothing is sent or recorded."""
    from submit.run.submission import plan_run

    planned = plan_run(loaded, be, ui, profile, recheck, max_cost)
    est, credits = planned.estimate, planned.credits
    if as_json:
        print(json.dumps({"estimate": est.record(), "credits_left": credits,
                          "backend": be.name}), flush=True)
        return
    for line in est.basis:
        ui.say(f"  {line}", style="dim")


def _dry_run(loaded, be, ui, profile: str | None, recheck: bool, max_cost: float | None, smoke: bool,
             as_json: bool) -> None:
    """`run --dry-run`: the run's own path up to the sending (check, requirements, package,
    placement, estimate: refused as the run refuses them), then what would travel: the data's
    objects (shards and lone files), the code, job.json, and which of them the backend lacks.
    Nothing is sent or recorded: no task, no bucket."""
    from rich.markup import escape
    from rich.table import Table

    from jobs.files import human_bytes
    from submit.run.submission import carried, plan_run, upload_plan

    planned = plan_run(loaded, be, ui, profile, recheck, max_cost, smoke)
    package, where = planned.package, planned.where
    plan = upload_plan(package, be)
    plan["placement"] = {"profile": where.profile, "gpu": where.gpu, "instances": where.instances,
                         "nodes": where.nodes, "procs_per_node": where.procs}
    plan["estimate"], plan["credits_left"] = planned.estimate.record(), planned.credits
    if as_json:
        print(json.dumps({"dry_run": True, **plan}), flush=True)
        return
    known = plan["send"] is not None
    table = Table(title=f"qtrain run {loaded.job.name} --dry-run: what an upload sends", title_justify="left")
    table.add_column("object")
    table.add_column("in the task")
    table.add_column("bytes", justify="right")
    if known:
        table.add_column("sent")
    by_key = {o["key"]: o for o in plan["objects"]}
    for obj in package.objects:
        files = [f.remote for f in obj.files]
        what = files[0] if len(files) == 1 else f"{len(files):,} files: {files[0]} ... {files[-1]}"
        name = f"shard {obj.shard[:12]}" if obj.shard else "file"
        row = [name, escape(what), f"{obj.payload:,}"]
        table.add_row(*row, *(["yes" if by_key[obj.key]["sent"] else "has it"] if known else []))
    for f in plan["files"]:
        if f["kind"] == "data":
            continue
        origin = "(the job, resolved)" if f["from"] is None else f["kind"]
        table.add_row(escape(origin), escape(f["path"]), f"{f['bytes']:,}", *(["if absent"] if known else []))
    console.print(table)
    data = f"dataset {plan['dataset_hash'][:12]}: {carried(package)}" if package.files else "no data files"
    console.print(f"{len(plan['files'])} file(s), {plan['total_bytes']:,} bytes ({human_bytes(plan['total_bytes'])}) "
                  f"at most; {data}.", highlight=False, markup=False)
    if known:
        send = plan["send"]
        console.print(f"{be.describe()} lacks {send['objects']} of the {len(package.objects)} data object(s): "
                      f"{human_bytes(send['data_bytes'])} of data would be sent.", highlight=False, markup=False)
    else:
        console.print(f"what the backend already has is not sent again (not asked: {plan.get('send_unknown')}).",
                      highlight=False, markup=False)
    links = [f for f in plan["files"] if f.get("link_to")]
    for f in links:
        console.print(f"{f['path']} comes from {f['link_to']}, outside its folder (data.follow_symlinks)",
                      highlight=False, markup=False)
    spread = f", {where.nodes} nodes x {where.procs} process(es)" if where.world > 1 else ""
    console.print(f"It would run on {be.describe()}, profile {where.profile}, {where.instances} instance(s){spread}. "
                  f"Nothing was sent.", highlight=False, markup=False)
    if plan.get("requirements"):
        reqs = plan["requirements"]
        console.print(f"requirements {reqs['requirements_hash'][:12]} ({', '.join(reqs['requirements'])}): not "
                      f"uploaded; the task runs the image with them (docker, Qarnot) or their folder (process: "
                      f"{', '.join(reqs['installed']) or 'nothing this interpreter lacks'})", highlight=False,
                      markup=False)


@command()
def resume(
    run_ref: str = RunArgument,
    epochs: Optional[int] = typer.Option(None, "--epochs", help="Train up to this many epochs in all "
                                                                 "(default: the run's own; a script job: its "
                                                                 "script.args.epochs)."),
    detach: bool = typer.Option(False, "--detach", help="Return once submitted, with the run id."),
    as_json: bool = JsonOption,
    store_dir: Optional[Path] = StoreOption,
) -> None:
    """Continue a failed, cancelled or killed run from its latest checkpoint, in a new task on the
    same backend and profile: weights, optimiser, schedule, random state and epoch carry on, so
    the result is the one an uninterrupted run would have given.  A succeeded run goes on only
    with --epochs above the epochs it trained (the new total).  The new run records the one it
    resumes (`resumed_from`); it reads the data from where the first run did, unchanged.  One
    resume of a run at a time.  A script job is handed its last checkpoint (QTRAIN_CHECKPOINT,
    runner.script.load_checkpoint), and goes on as far as the script makes it."""
    from submit.backends import get_backend
    from submit.run.resume import resume_job
    from submit.run.retrieve import refresh
    from submit.run.submission import submit_run
    from submit.run.summary import summary
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    be = get_backend(record.backend)
    if record.pending:
        record = refresh(record, be, store, Ui(json_mode=True))
    with store.run_lock(record.run_id, "resume", wait=False) as alone:
        if not alone:
            raise QtrainError(f"run {record.run_id}: another qtrain is resuming it now",
                              hint="wait for it: qtrain results list shows the run it makes")
        earlier = [r.run_id for r in store.list() if r.info.get("resumed_from") == record.run_id]
        if earlier:
            ui.warn(f"run {record.run_id} was resumed before, as {', '.join(earlier)}: this is one more "
                    f"continuation of the same checkpoint")
        loaded = resume_job(record, store, epochs)
        new = submit_run(loaded, be, store, ui, profile=record.profile, resume=record,
                         tags=record.tags, note=f"resumes {record.run_id}")
    ui.say(f"resuming {record.run_id} from its checkpoint as run {new.run_id}")
    if detach:
        if as_json:
            print(json.dumps(summary(new, store)), flush=True)
        return
    _follow_and_retrieve(new, be, store, ui, as_json)


@command()
def status(run_ref: str = RunArgument, as_json: bool = JsonOption,
           store_dir: Optional[Path] = StoreOption) -> None:
    """Show a run's state, asking the backend while its task runs.  A run whose task has ended
    is retrieved into the store on the way (as `fetch` would), so its state is final:
    succeeded, failed or cancelled.  Exit status 1 for a failed or cancelled run."""
    from submit.run.retrieve import backend_for, refresh
    from submit.run.summary import summary
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    if record.pending:
        record = refresh(record, backend_for(record), store, Ui(json_mode=True))
    task_state = record.history[-1]["detail"] if record.history else None
    data = summary(record, store)
    data["task_state"] = task_state
    retrieved = "" if record.retrieved or not record.task_uuid else ", not retrieved"
    ui.say(f"{record.run_id}  {record.state}" + (f" (task {task_state}{retrieved})" if task_state else "")
           + f"  {record.backend}/{record.profile}  task {record.task_uuid}")
    if record.error:
        ui.say(f"error: {record.error}", style="red")
    if as_json:
        print(json.dumps(data), flush=True)
    if record.state in ("failed", "cancelled"):
        raise typer.Exit(1)  # as run, fetch and cancel: 0 succeeded (or not ended yet), 1 failed or cancelled


@command()
def fetch(run_ref: str = RunArgument,
          wait: bool = typer.Option(True, help="Follow the task until it ends (--no-wait: take "
                                               "what it has uploaded so far)."),
          as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption) -> None:
    """Retrieve a run's results into the store (waiting for its task to end).  Safe to repeat:
    files already retrieved and unchanged are not downloaded again."""
    from submit.run.retrieve import backend_for
    from submit.run.submission import recover
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    be = backend_for(record)
    record = recover(record, be, store)
    if not record.task_uuid and record.done:
        _finish(record, store, ui, as_json)  # its submission never made a task: nothing to fetch
        return
    if record.done and record.retrieved and record.info.get("remote") == "deleted":
        ui.say(f"run {record.run_id} is in the store: its task and result bucket were deleted once its files "
               f"were verified there", style="dim")
        _finish(record, store, ui, as_json)
        return
    _follow_and_retrieve(record, be, store, ui, as_json, wait=wait)


@command()
def logs(run_ref: str = RunArgument,
         stderr: bool = typer.Option(False, "--stderr", help="Show stderr instead of stdout."),
         instance: Optional[int] = typer.Option(None, help="Only this instance (sweep trial)."),
         store_dir: Optional[Path] = StoreOption) -> None:
    """Print a task's output (from the backend, else the copy saved when it was fetched)."""
    from submit.run.retrieve import LOG_FILES, backend_for

    store, record = _open_run(run_ref, store_dir)
    saved = store.artifacts_dir(record.run_id) / LOG_FILES["stderr" if stderr else "stdout"]
    try:
        if record.info.get("remote") == "deleted":  # retrieved, verified, deleted from the account
            raise QtrainError(f"run {record.run_id}: its task was deleted once retrieved")
        text = backend_for(record).output(record.task_uuid or "", instance, stderr)
    except QtrainError:
        if not saved.is_file():
            raise
        text = saved.read_text()
        lines = text.splitlines(keepends=True)
        if instance is not None and any(re.match(r"\d+> ", line) for line in lines):
            mark = f"{instance}> "  # a task of several instances prefixes each of their lines so
            text = "".join(line[len(mark):] for line in lines if line.startswith(mark))
        elif instance:
            raise QtrainError(f"run {record.run_id}: its task had one instance (0), no instance {instance}",
                              hint="qtrain logs RUN without --instance shows it") from None
    sys.stdout.write(text)


@command()
def cancel(run_ref: str = RunArgument, as_json: bool = JsonOption,
           store_dir: Optional[Path] = StoreOption) -> None:
    """Abort a run's task, then retrieve whatever results it had uploaded."""
    from submit.run.retrieve import backend_for
    from submit.run.submission import recover
    from submit.run.retrieve import cancel as cancel_run
    from submit.ui import Ui

    ui = Ui(json_mode=as_json)
    store, record = _open_run(run_ref, store_dir)
    if record.state == "submitting":
        record = recover(record, backend_for(record), store)
    if record.done:
        ui.say(f"run {record.run_id} already ended: {record.state}")
    else:
        record = cancel_run(record, backend_for(record), store, ui)
    _finish(record, store, ui, as_json, show_results=False)


# ------------------------------------------------------------------------------------ profiles
@command()
def profiles(backend: Optional[str] = typer.Option(None, help="local or qarnot (default as for run)."),
             as_json: bool = JsonOption) -> None:
    """List the profiles the account (or the emulator) offers, and what cpu/gpu map to (on one
    node, and with resources.nodes > 1: the cluster profiles)."""
    from submit.backends import get_backend

    be = get_backend(backend)
    names = be.profiles()
    aliases = be.profile_aliases()
    if as_json:
        print(json.dumps({"backend": be.name, "profiles": names, **aliases}))
        return
    for name in names:
        alias = [a.replace("_cluster", " with resources.nodes > 1") for a, p in aliases.items() if p == name]
        kind = ", a cluster profile" if be.is_cluster(name) and not alias else ""
        console.print(name + (f"   (= {alias[0]})" if alias else "") + (f"   ({kind[2:]})" if kind else ""),
                      highlight=False)
