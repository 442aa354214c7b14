"""`qtrain emulator ...`: the local Qarnot emulator daemon."""

from __future__ import annotations

import json
from typing import Optional

import typer

from jobs.errors import QtrainError
from submit.cli.common import JsonOption, YesOption, app, command, confirm, console


def _port(value: int, option: str = "--port") -> int:
    if not 0 <= value <= 65535:
        raise QtrainError(f"{option} {value}: a TCP port is 0 to 65535", hint="0 picks any free port")
    return value


# ------------------------------------------------------------------------------------ emulator
emulator_app = typer.Typer(help="The local Qarnot-compatible emulator (API + S3 on 127.0.0.1).",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(emulator_app, name="emulator")
ExecutorOption = typer.Option(None, "--executor", help="How instances run: docker (the task's "
                                                       "image) or process (DOCKER_CMD here, no image). "
                                                       "Default: docker where an engine answers and "
                                                       "the runner image exists, else process.")
StateOption = typer.Option(None, "--state", metavar="DIR",
                           help="Where the emulator keeps its tasks (SQLite) and buckets (on disk); "
                                "they survive a stop, a crash or a reboot. Default: "
                                "~/.local/state/qtrain/emulator.")


@command("start", group=emulator_app)
def emulator_start(executor: Optional[str] = ExecutorOption,
                   port: int = typer.Option(0, help="API port (0: any free port)."),
                   state: Optional[str] = StateOption,
                   as_json: bool = JsonOption) -> None:
    """Start the emulator daemon in the background (a no-op when it already runs).  Tasks and
    buckets of earlier runs of the emulator are still there; tasks it was running when it died
    are Failure.  QTRAIN_EMULATOR_HARDWARE=wait|strict|lenient says what becomes of a task whose
    hardware constraints this machine does not meet (a GPU job without a GPU): it waits queued
    (default), is refused, or runs anyway on what there is; QTRAIN_EMULATOR_LIMITS lowers or
    raises the account limits (e.g. max_running_tasks=2)."""
    from submit.emulator import daemon

    ep, started = daemon.start(executor, port=_port(port), state=state)
    _print_emulator(ep, "started" if started else "already running", as_json)


@command("stop", group=emulator_app)
def emulator_stop() -> None:
    """Stop the daemon; its running tasks are cancelled (their results uploaded). Ended tasks and
    buckets are kept for the next start."""
    from submit.emulator import daemon

    console.print("emulator stopped" if daemon.stop() else "the emulator was not running")


@command("reset", group=emulator_app)
def emulator_reset(state: Optional[str] = StateOption, yes: bool = YesOption) -> None:
    """Stop the emulator and delete everything it keeps: tasks, buckets, cached resources. Runs
    already fetched into the results store are not touched; the token stays."""
    from submit.emulator import daemon

    data = daemon.data_dir(state)
    if not yes:
        confirm(f"stop the emulator and delete its tasks and buckets in {data}?")
    gone = daemon.reset(state)
    console.print(f"emulator reset: {gone['tasks']} task(s) and {gone['bytes'] / 1e6:.1f} MB deleted "
                  f"from {data}", highlight=False, markup=False)


@command("status", group=emulator_app)
def emulator_status(as_json: bool = JsonOption) -> None:
    """Is the daemon running, where, with which executor; do its API and its storage answer (exit
    status 1, with what to do, when one of them does not)."""
    from submit.emulator import daemon

    ep = daemon.running()
    if ep is None:
        if as_json:
            print(json.dumps({"running": False, "token_file": str(daemon.token_file())}))
        else:
            console.print("the emulator is not running (qtrain emulator start, or just qtrain run)")
        return
    found = daemon.health(ep)
    _print_emulator(ep, "running", as_json, found)
    silent = [part for part, how in found.items() if how != "answers"]
    if silent:
        if not as_json:
            for part in silent:
                console.print(f"  its {part} {found[part]}", style="red", highlight=False, markup=False)
            console.print("  restart it: qtrain emulator stop; qtrain emulator start (tasks and buckets are "
                          "kept; a task running now ends as Failure, with what it uploaded)",
                          highlight=False, markup=False)
        raise typer.Exit(1)


def _print_emulator(ep, state: str, as_json: bool, health: dict[str, str] | None = None) -> None:
    from submit.emulator import daemon

    info = {"running": True, "state": state, "url": ep.url, "s3_url": ep.s3_url, "pid": ep.pid,
            "executor": ep.executor, "log": str(ep.log), "token_file": str(daemon.token_file()),
            "data": str(ep.data) if ep.data else None, "storage_kind": ep.storage, **(health or {})}
    if as_json:
        print(json.dumps(info))
        return
    kept = f"data in {ep.data}" if ep.storage != "moto" else "storage moto: nothing is kept"
    console.print(f"emulator {state}: API {ep.url}, S3 {ep.s3_url} ({ep.storage}), executor {ep.executor}, "
                  f"pid {ep.pid}\n  {kept}\n  token in {info['token_file']} (0600), log {ep.log}",
                  highlight=False, markup=False)


@command("serve", group=emulator_app)
def emulator_serve(port: int = typer.Option(8642, help="API port."),
                   token: Optional[str] = typer.Option(None, help="Token clients must send "
                                                       "(default: the one in the token file)."),
                   executor: Optional[str] = ExecutorOption,
                   s3_port: int = typer.Option(0, help="S3 port (0: any free port)."),
                   state: Optional[str] = StateOption) -> None:
    """Run the emulator in the foreground until Ctrl-C (for a container or a debugger)."""
    from submit.emulator import daemon

    _port(port), _port(s3_port, "--s3-port")
    daemon.serve(port=port, token=token, executor=executor or daemon.default_executor(), s3_port=s3_port,
                 announce=lambda m: console.print(m, highlight=False), state=state)
