"""`qtrain results ...`: the results store as a workbench (list, show, compare, organise, export)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer
from rich.table import Table

from jobs.errors import QtrainError
from submit.cli.common import (RUN_HELP, JsonOption, RunArgument, StoreOption, YesOption, _open_run, _store,
                               app, command, confirm, console, err_console, output_file)

results_app = typer.Typer(help="List, show, compare, tag and export the runs in the results store. "
                               "RUN is " + RUN_HELP[len("A run: "):],
                          no_args_is_help=True, rich_markup_mode=None)
app.add_typer(results_app, name="results")
RunsArgument = typer.Argument(..., help=RUN_HELP, metavar="RUN...")


def _refreshed(store, records):
    """The records, with pending runs brought up to date (their ended tasks retrieved)."""
    from submit.run.retrieve import refresh_all
    from submit.ui import Ui

    records, notes = refresh_all(records, store, Ui(json_mode=True))
    for note in notes:
        err_console.print(note, style="dim", highlight=False, markup=False)
    return records


# ------------------------------------------------------------------------------------- list
@command("list", group=results_app)
def results_list(
    limit: int = typer.Option(20, help="How many runs (0: all)."),
    job: Optional[str] = typer.Option(None, "--job", help="Only the runs of this job."),
    tag: Optional[list[str]] = typer.Option(None, "--tag", metavar="KEY[=VALUE]",
                                            help="Only runs with this tag (repeatable: all must match)."),
    where: Optional[list[str]] = typer.Option(
        None, "--where", metavar="FIELD OP VALUE",
        help="Only runs where this holds, e.g. 'test.r2>0.9', state=succeeded, train.lr<=0.01, "
             "tag.owner=ana (OP: = != > >= < <= ~; repeatable: all must hold). FIELD: state, job, "
             "backend, profile, executor, tag.KEY, SPLIT.METRIC (train|val|test|baseline of the "
             "run's model; a sweep: its best trial), reported.NAME (a script's log_metrics), epochs_run, "
             "train_seconds, cost_eur, energy_wh, co2_g, co2_saved_g, or a job setting."),
    sort: Optional[str] = typer.Option(None, "--sort", metavar="[-]FIELD",
                                       help="Sort by FIELD (-FIELD: descending; runs without it last). "
                                            "Default: newest first."),
    refresh: bool = typer.Option(True, help="Bring pending runs up to date first (their ended "
                                            "tasks are retrieved); --no-refresh reads the store only."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON array of runs."),
    footprint: bool = typer.Option(False, "--footprint", help="Also show what each run cost and emitted "
                                                               "(cost_eur, energy_wh, co2_g; * emulated)."),
    store_dir: Optional[Path] = StoreOption,
) -> None:
    """The runs in the store, newest first, with the test metrics that fit each run's task
    (classification: accuracy, f1_macro; regression: r2, rmse) of its model (a sweep: the trial
    chosen on validation).  Runs whose task has ended are retrieved on the way."""
    from submit.results.query import TASK_COLUMNS, select

    if limit < 0:
        raise QtrainError(f"--limit {limit}: give how many runs to show (0: all)")
    store = _store(store_dir)
    wanted = [_tag_filter(t) for t in tag or []]  # refused before anything is asked of a backend
    runs = store.list()
    if refresh:
        runs = _refreshed(store, runs)
    runs = select(runs, job=job, tags=wanted, where=where or [], sort=sort, limit=limit or None)
    metrics = [m for task in ("classification", "regression") if any(r.task == task for r in runs)
               for m in TASK_COLUMNS[task]]
    rows = []
    for r in runs:
        name, value = r.headline()
        test = (r.chosen()[1] or {}).get("test") or {}
        rows.append({"run_id": r.run_id, "created": r.created, "state": r.state, "retrieved": r.retrieved,
                     "job_name": r.job_name, "task": r.task, "backend": r.backend, "profile": r.profile,
                     "task_uuid": r.task_uuid, "trials": r.trials, "tags": r.tags, "note": r.note,
                     "headline": {"metric": name, "value": value},
                     "test": {m: test.get(m) for m in TASK_COLUMNS.get(r.task, ())},
                     "footprint": r.info.get("footprint")})
    if as_json:
        print(json.dumps(rows))
        return
    if not rows:
        console.print("no runs match" if (job or tag or where) else
                      f"no runs yet in {store.root}  (qtrain run JOB)", highlight=False)
        return
    from submit.results.query import Condition, Fields
    from submit.results.tables import list_view

    # a metric or setting the runs were filtered or sorted on is shown, first (`test.loss`, `train.lr`)
    asked = [Condition.parse(w).field for w in where or []] + ([sort.lstrip("-")] if sort else [])
    asked = [f for f in dict.fromkeys(asked) if "." in f and not f.startswith(("tag.", "tags."))
             and f.removeprefix("test.") not in metrics]
    fields = Fields()
    cells = [{**{f: fields.value(r, f) for f in asked}, **row["test"]} for r, row in zip(runs, rows)]
    for part in list_view(runs, cells, asked + metrics, footprint, console):
        console.print(part, soft_wrap=False)


def _state(record) -> str:
    from submit.results.tables import state_text

    return state_text(record)


def _tags(tags: dict[str, str]) -> str:
    from submit.results.tables import tags_text

    return tags_text(tags)


def _tag_filter(item: str) -> tuple[str, str | None]:
    """--tag KEY=VALUE: that value; --tag KEY: any value."""
    from submit.store import parse_tag

    key, value = parse_tag(item, "--tag")
    return key, (value if "=" in item else None)


# ------------------------------------------------------------------------------------- show
@command("show", group=results_app)
def results_show(run_ref: str = RunArgument, as_json: bool = JsonOption,
                 store_dir: Optional[Path] = StoreOption) -> None:
    """Everything about one run: states with times, where and how it ran (executor, image digest,
    your data path), its hyperparameters, metrics, confusion matrix, timings, files; a sweep's
    trials with their parameters and metrics."""
    from jobs.results import headline
    from submit.results.query import job_fields, own_settings, user_job
    from submit.results.tables import metrics_view
    from submit.run.retrieve import backend_for, refresh
    from submit.run.summary import summary
    from submit.ui import Ui, confusion_table, fmt, printable, trials_table

    store, record = _open_run(run_ref, store_dir)
    if record.pending:
        try:
            record = refresh(record, backend_for(record, start=False), store, Ui(json_mode=True))
        except QtrainError as exc:
            err_console.print(f"(not updated: {exc.one_line()})", style="dim", highlight=False, markup=False)
    trial, metrics = record.chosen()
    job = user_job(record, trial)
    data = summary(record, store)
    data["hyperparameters"] = own_settings(job)  # a script job: a script job's settings only
    if as_json:
        print(json.dumps(data))
        return
    t = Table(title=f"run {record.run_id}", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("state", _state(record) + (f"  ({record.error})" if record.error else ""))
    t.add_row("job", f"{record.job_name} ({record.kind})")
    info = record.info
    t.add_row("ran on", f"{record.backend}/{record.profile}"
              + (f", {info['execution']}" if info.get("execution") else
                 f", {info['executor']}" if info.get("executor") else "")
              + (f", host {info['host']}" if info.get("host") else "")
              + (f", {info['device']}" if info.get("device") else "")
              + (f", {info['threads']} thread(s)" if info.get("threads") else ""))
    spread = (metrics or {}).get("distributed") or info.get("distributed")
    if spread:  # resources.nodes x procs_per_node (runner.distributed)
        t.add_row("distributed", distributed_line(spread))
    if record.task_uuid:
        t.add_row("task", record.task_uuid)
    if info.get("image"):
        t.add_row("image", info["image"] + (f" ({info['image_digest']})" if info.get("image_digest") else ""))
    for field, path in (info.get("data") or {}).items():
        t.add_row(field, path)
    if info.get("resumed_from"):
        t.add_row("resumes", info["resumed_from"])
    if record.tags:
        t.add_row("tags", _tags(record.tags))
    if record.note:
        t.add_row("note", printable(record.note))
    t.add_row("job / dataset hash", f"{record.job_hash[:12]} / {record.dataset_hash[:12]}")
    if info.get("code_hash"):
        t.add_row("code hash", info["code_hash"][:12] + "  (its code: " + ", ".join(
            f"{k} {v}" for k, v in (info.get("data") or {}).items() if k in ("model.source", "script.path")) + ")")
    t.add_row("uploaded", f"{record.uploaded_bytes:,} bytes")
    if record.done:
        t.add_row("cost & carbon", _footprint_line(info.get("footprint")))
    t.add_row("states", "  ".join(f"{h['state']} {h['at'][11:19]}" for h in record.history))
    timings = (metrics or {}).get("timings") or {}
    if timings:
        t.add_row("timings", ", ".join(f"{k.removesuffix('_seconds')} {v:.2f}s" for k, v in timings.items()
                                       if k.endswith("_seconds") and isinstance(v, (int, float))))
    chosen = (metrics or {}).get("refit") or {}
    if chosen.get("text"):  # train.refit: what the held-out rows chose (runner/refit.py)
        t.add_row("chosen", printable(str(chosen["text"])))
    t.add_row("files", data["artifacts_dir"])
    console.print(t)
    params = job_fields(job)
    hp = Table(title="hyperparameters" + ("" if trial is None else f" (trial {trial})"),
               show_header=False, title_justify="left")
    hp.add_column(style="bold")
    hp.add_column()
    for key, value in params.items():
        hp.add_row(key, "none" if value is None else fmt(value) if not isinstance(value, (list, dict))
                   else json.dumps(value))
    console.print(hp)
    if record.trials:
        console.print(trials_table(record.sweep(), headline(record.task).metric))
    for part in metrics_view(metrics, "metrics" if trial is None else f"metrics of trial {trial}",
                             script=bool(record.job.get("script")), done=record.done):
        console.print(part, soft_wrap=False)
    if metrics:
        for part in confusion_table(store.artifacts_dir(record.run_id, trial), console):
            console.print(part, soft_wrap=False)


def _footprint_line(fp: dict | None) -> str:
    """One line of what the run cost and emitted; unknown where the backend did not say."""
    from submit.backends.footprint import FIELDS, show

    if not fp:
        return "unknown (the backend reported no figures)"
    labels = {"cost_eur": "cost", "energy_wh": "energy", "co2_g": "CO2", "co2_saved_g": "CO2 saved"}
    parts = [f"{labels[name]} {show(fp.get(name), unit)}" for name, unit in FIELDS.items()]
    if fp.get("co2_saved_percent") is not None:
        parts[-1] += f" ({fp['co2_saved_percent']:.0f}% less than {fp.get('datacenter') or 'a datacenter'})"
    if fp.get("erf") is not None:
        parts.append(f"heat reused (ERF) {fp['erf']:.2f}")
    estimate = fp.get("estimate") or {}
    if estimate.get("bounded") is False:
        parts.append("estimated before: unknown (a script job without resources.max_minutes)")
    elif estimate.get("cost_eur") is not None:
        parts.append(f"estimated before: {show(estimate['cost_eur'], 'EUR')}, "
                     f"{show(estimate.get('wall_seconds'), 's')}")
    source = "emulated: the local emulator's model, not Qarnot's figures" if fp.get("source") == "emulated" \
        else f"from {fp.get('source') or 'the backend'}"
    return ", ".join(parts) + f"  ({source})"


# ---------------------------------------------------------------------------------- compare
@command("compare", group=results_app)
def results_compare(
    run_refs: list[str] = RunsArgument,
    plot: Optional[Path] = typer.Option(None, "--plot", metavar="FILE.png",
                                        help="Also draw the runs' validation curves on one figure."),
    as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption,
) -> None:
    """Runs side by side (a sweep: its best trial, with that trial's settings), or one sweep's
    trials side by side: metrics with the best value of each marked, and the settings that
    differ marked with *.  `none`: an empty setting; `n/a`: a setting that model does not have."""
    from jobs.results import headline
    from submit.results.compare import compare_runs, curves, short

    if plot is not None:
        output_file(plot, "--plot")
    store = _store(store_dir)
    records = [store.get(r) for r in run_refs]
    if len(records) == 1 and not records[0].trials:
        raise QtrainError(f"results compare {run_refs[0]}: one run that is not a sweep has nothing "
                          "to be compared with", hint="give two or more runs, or a sweep run")
    table = compare_runs(records, store)
    if plot is not None:
        from runner.api import plot_curves

        metric = headline(records[0].task).metric
        drawn = plot_curves(plot, curves(records, store), metric,
                            title=" vs ".join(r.run_id for r in records)[:120])
        err_console.print(f"curves of {drawn} run(s) -> {plot}", highlight=False, markup=False)
    if as_json:
        print(json.dumps(table))
        return
    from submit.results.tables import compare_view

    for part in compare_view(table, [short(label) for label in table["runs"]], headline(records[0].task).metric,
                             console):
        console.print(part, highlight=False, soft_wrap=False)


# -------------------------------------------------------------------------------- organise
@command("tag", group=results_app)
def results_tag(run_ref: str = RunArgument,
                tags: list[str] = typer.Argument(..., metavar="KEY[=VALUE]...", help="Tags to set."),
                store_dir: Optional[Path] = StoreOption) -> None:
    """Tag a run (KEY=VALUE, or a bare KEY).  A tag names a run too: `qtrain results show @KEY`."""
    from submit.store import parse_tag

    parsed = dict(parse_tag(t) for t in tags)
    store, record = _open_run(run_ref, store_dir)
    store.tag(record.run_id, parsed)
    console.print(f"{record.run_id}: {_tags(store.get(record.run_id).tags)}", highlight=False, markup=False)


@command("untag", group=results_app)
def results_untag(run_ref: str = RunArgument,
                  keys: list[str] = typer.Argument(..., metavar="KEY...", help="Tag keys to remove."),
                  store_dir: Optional[Path] = StoreOption) -> None:
    """Remove tags from a run."""
    store, record = _open_run(run_ref, store_dir)
    missing = store.untag(record.run_id, [k.partition("=")[0] for k in keys])
    if missing:
        err_console.print(f"{record.run_id} had no tag {', '.join(missing)}", style="yellow", highlight=False,
                          markup=False)
    console.print(f"{record.run_id}: {_tags(store.get(record.run_id).tags) or '(no tags)'}", highlight=False,
                  markup=False)


@command("note", group=results_app)
def results_note(run_ref: str = RunArgument,
                 note: str = typer.Argument(..., help="The note (\"\" removes it)."),
                 store_dir: Optional[Path] = StoreOption) -> None:
    """Attach a note to a run (replacing the one it had)."""
    store, record = _open_run(run_ref, store_dir)
    store.set_note(record.run_id, note.strip() or None)
    console.print(f"{record.run_id}: note {'set' if note.strip() else 'removed'}", highlight=False, markup=False)


@command("rm", group=results_app)
def results_rm(run_refs: list[str] = RunsArgument, yes: bool = YesOption,
               store_dir: Optional[Path] = StoreOption) -> None:
    """Remove runs from the store: their index rows and folders, together, and their task and
    result bucket from the account where they are still there.  Refuses runs whose task has not
    ended (cancel them first)."""
    from submit.run.account import forget_remote
    from submit.run.retrieve import backend_for

    store = _store(store_dir)
    records = [store.get(r) for r in run_refs]
    records = list({r.run_id: r for r in records}.values())
    running = [r.run_id for r in records if not r.done]
    if running:
        raise QtrainError(f"results rm: {', '.join(running)} not ended yet; nothing removed",
                          hint="qtrain cancel RUN first, or wait for it")
    if not yes:
        confirm(f"remove {len(records)} run(s) and their files: {', '.join(r.run_id for r in records)}?")
    for r in records:
        try:
            deleted = forget_remote(r, backend_for(r))
        except QtrainError as exc:
            deleted = []
            err_console.print(f"warning: {r.run_id}: its remote copy stays ({exc.one_line()}); qtrain results gc "
                              f"--remote finds it", style="yellow", highlight=False, markup=False)
        store.remove(r.run_id)
        console.print(f"removed {r.run_id}" + (f" ({', '.join(deleted)})" if deleted else ""), highlight=False,
                      markup=False)


@command("gc", group=results_app)
def results_gc(yes: bool = YesOption,
               dry_run: bool = typer.Option(False, "--dry-run", help="Only say what would go."),
               older_than: float = typer.Option(3600.0, metavar="SECONDS",
                                                 help="Leave temporary files and unsubmitted runs "
                                                      "younger than this (work going on now)."),
               remote: bool = typer.Option(False, "--remote", help="The account instead: list the result "
                                           "buckets and qtrain tasks that no run in the store needs; --yes "
                                           "deletes them."),
               backend: Optional[str] = typer.Option(None, help="With --remote: local or qarnot (default as for run)."),
               as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption) -> None:
    """Clean the store of what is provably debris: folders no run owns that hold nothing a run
    produced, what a `results rm` that died left, temporary files of retrievals and reindexes
    that died, and half-written runs (never given a task).  A folder holding a model, metrics, a
    checkpoint or run.json is never removed, whatever the index says: it is named instead
    (`qtrain results reindex` indexes it).  With --remote, the account: result buckets and tasks
    tagged qtrain that no run in the store needs (nothing else is touched; the data bucket stays)."""
    from submit.store.gc import collect
    from submit.store.gc import garbage as find_garbage

    store = _store(store_dir)
    if remote:
        _gc_remote(store, backend, yes and not dry_run, as_json)
        return
    garbage = find_garbage(store, older_than)
    kept = [str(p) for p in garbage.pop("kept_with_results")]
    found = {k: [str(p) for p in v] for k, v in garbage.items()}
    total = sum(len(v) for v in found.values())
    for item in kept:
        err_console.print(f"kept (it holds results, and no run in the index owns it; qtrain results reindex "
                          f"indexes it): {item}", highlight=False, markup=False)
    if as_json and (dry_run or not total):
        print(json.dumps({"removed": False, **found, "kept_with_results": kept}))
        return
    for kind, items in found.items():
        for item in items:
            err_console.print(f"{kind.replace('_', ' ')[:-1]}: {item}", highlight=False, markup=False)
    if not total:
        console.print("nothing to clean", highlight=False)
        return
    if dry_run:
        return
    if not yes:
        confirm(f"remove these {total} item(s)?")
    collect(store, garbage)
    if as_json:
        print(json.dumps({"removed": True, **found, "kept_with_results": kept}))
    else:
        console.print(f"removed {total} item(s)", highlight=False, markup=False)


def _gc_remote(store, backend: Optional[str], delete: bool, as_json: bool) -> None:
    from submit.backends import get_backend
    from submit.run.account import delete_leftovers, leftovers

    be = get_backend(backend)
    found = leftovers(be, store)
    for item in found:
        err_console.print(f"{item.remote.kind} {item.remote.name}" + (f" ({item.remote.detail})" if item.remote.detail
                                                                       else "") + f": {item.why}",
                          highlight=False, markup=False)
    deleted = delete_leftovers(be, store, found) if delete and found else []
    if as_json:
        print(json.dumps({"found": [{"kind": i.remote.kind, "name": i.remote.name, "run_id": i.remote.run_id,
                                     "why": i.why} for i in found], "deleted": deleted}))
    elif not found:
        console.print(f"nothing of qtrain's to clean on {be.describe()}", highlight=False, markup=False)
    elif delete:
        console.print(f"deleted {len(deleted)} item(s) from {be.describe()}", highlight=False, markup=False)
    else:
        console.print(f"{len(found)} item(s) no run in the store needs: qtrain results gc --remote --yes deletes "
                      f"them", highlight=False, markup=False)


@command("reindex", group=results_app)
def results_reindex(yes: bool = typer.Option(False, "--yes", "-y", hidden=True, help="(accepted; it asks nothing)"),
                    as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption) -> None:
    """Rebuild the store's index (index.sqlite) from the run folders, for an index that was lost,
    truncated or damaged.  No run folder is ever left out: a run is taken from its own record, or,
    when that cannot be read, from the old index, or from the files in its folder (run.json,
    metrics), then tagged needs-attention and listed.  The new index holds every run the old one
    did; the old one is kept as index.sqlite.bak."""
    from jobs import settings
    from submit.store import Store
    from submit.store.reindex import reindex as rebuild

    found = rebuild(Store(settings.paths().store_dir(store_dir), open_index=False))
    if as_json:
        print(json.dumps(found))
        return
    console.print(f"indexed {found['runs']} run(s) (the old index was {found['old_index']}"
                  + (f"; kept as {found['backup']}" if found["backup"] else "") + ")", highlight=False, markup=False)
    if found["repaired"]:
        console.print(f"{len(found['repaired'])} run record(s) written again from the old index: "
                      f"{', '.join(found['repaired'][:5])}", highlight=False, markup=False)
    for run_id in found["needs_attention"]:
        err_console.print(f"needs attention: {run_id}: its record {found['reasons'][run_id]}; rebuilt from "
                          f"its folder's files (tag needs-attention)", style="yellow", highlight=False,
                          markup=False)


# ----------------------------------------------------------------------------------- export
@command("export", group=results_app)
def results_export(
    run_refs: list[str] = RunsArgument,
    mlflow_uri: Optional[str] = typer.Option(
        None, "--mlflow", metavar="URI",
        help="MLflow tracking URI (http://host:5000, sqlite:///mlflow.db, databricks, ...). "
             "Default: $MLFLOW_TRACKING_URI."),
    as_json: bool = JsonOption, store_dir: Optional[Path] = StoreOption,
) -> None:
    """Export runs to MLflow (`pip install 'qtrain[mlflow]'`): one MLflow run per run (a sweep: a
    parent run with one nested run per trial) in the experiment named after the job, with the
    resolved job as params, metrics per epoch, final metrics, tags, the results files and the
    model (mlflow.pytorch.load_model loads it).  Exporting again updates the same MLflow run.
    QTRAIN_MLFLOW_EXPORT=1 exports every run as it is retrieved."""
    from submit.results.export import export_run

    store = _store(store_dir)
    records = [store.get(r) for r in run_refs]
    done = []
    for record in records:
        exported = export_run(record, store, mlflow_uri)
        done.append(exported.as_dict())
        if not as_json:
            console.print(f"{record.run_id} -> MLflow experiment {exported.experiment!r}, run "
                          f"{exported.mlflow_run_id}"
                          + (f" (+{len(exported.trial_runs)} trial runs)" if exported.trial_runs else "")
                          + (" (updated)" if exported.updated else ""), highlight=False, markup=False)
    if as_json:
        print(json.dumps(done))


def distributed_line(spread: dict[str, Any]) -> str:
    """"2 nodes x 1 process, world size 2 (gloo), global batch 64 (32 a process)"."""
    nodes, procs = spread.get("nodes", 1), spread.get("procs_per_node", 1)
    text = (f"{nodes} node{'s' if nodes != 1 else ''} x {procs} process{'es' if procs != 1 else ''}, "
            f"world size {spread.get('world_size', nodes * procs)}")
    if spread.get("backend"):
        text += f" ({spread['backend']})"
    if spread.get("global_batch_size"):
        text += f", global batch {spread['global_batch_size']} ({spread.get('batch_size_per_process')} a process)"
    return text
