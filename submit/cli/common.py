"""What every command group of the `qtrain` command line shares: the app, the `command`
decorator, common options, the store, and `main`.

Every user mistake is a `QtrainError`: one line on stderr, exit status 2, no traceback.  Anything
else is an internal error and keeps its traceback.  Output into a closed pipe (`| head`) ends
quietly with the status a shell gives a program killed by SIGPIPE (141).
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

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
                err_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False,
                                  soft_wrap=True)
                raise typer.Exit(exc.exit_code) from None
            except KeyboardInterrupt:
                err_console.print("interrupted")
                raise typer.Exit(130) from None
            except BrokenPipeError:  # the reader went away (`| head`): stop, quietly
                raise typer.Exit(closed_pipe()) from None
            except (typer.Exit, typer.Abort):
                raise
            except Exception as exc:  # noqa: BLE001
                problem = environment_problem(exc)
                if problem is not None:
                    err_console.print(f"[bold red]error:[/] {escape(problem.one_line())}", highlight=False,
                                      soft_wrap=True)
                    raise typer.Exit(problem.exit_code) from None
                err_console.print("[bold red]internal error[/] (please report it with this traceback):")
                traceback.print_exc()
                raise typer.Exit(1) from None

        return (group or app).command(*args, **kwargs)(guarded)

    return decorate


def environment_problem(exc: BaseException) -> QtrainError | None:
    """A full disk, a read-only or forbidden folder, a locked or read-only index: not a bug but
    this machine's state, said in one line with what to do.  Whatever was written before stays (the
    store writes files whole, then renames them, and the index in transactions)."""
    import errno
    import sqlite3

    if isinstance(exc, sqlite3.OperationalError):
        text = str(exc)
        if "locked" in text or "busy" in text:
            return QtrainError(f"the results store's index is locked by another process ({text})",
                               hint="wait for the other qtrain to finish, or stop it, then run this again")
        if "readonly" in text or "read-only" in text:
            return QtrainError(f"the results store's index cannot be written ({text})",
                               hint="make the store writable, or choose another with --store")
        if "disk is full" in text or "disk I/O" in text:
            return QtrainError(f"the results store's index cannot be written ({text})",
                               hint="free some space, then run this again: nothing retrieved so far is lost")
        return None
    if not isinstance(exc, OSError) or exc.errno is None:
        return None
    where = f" {exc.filename}" if exc.filename else ""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return QtrainError(f"no space left to write{where} ({exc.strerror})",
                           hint="free some space, then run this again: files already written are kept, "
                                "and a retrieval picks up where it stopped")
    if exc.errno == errno.EROFS:
        return QtrainError(f"cannot write{where}: the file system is read-only",
                           hint="choose a writable folder (--store, QTRAIN_STORE)")
    if exc.errno in (errno.EACCES, errno.EPERM):
        return QtrainError(f"permission denied:{where or ' a file qtrain needs'}",
                           hint="fix the folder's permissions, or choose another with --store")
    return None


SetOption = typer.Option(None, "--set", "-s", metavar="KEY.PATH=VALUE",
                         help="Override a job field, e.g. --set train.epochs=5 (repeatable).")


RecheckOption = typer.Option(False, "--recheck", help="Check again even if this job, its data "
                                                      "and the code passed before.")
SmokeOption = typer.Option(False, "--smoke", help="A script job: also run the script here on its data, told "
                                                  "to stop after a few steps (QTRAIN_SMOKE, QTRAIN_MAX_STEPS), "
                                                  "with a time limit: its mistakes found before paying.")


JOB_HELP = "Job file (.yaml/.json), a Python script (a script job with the defaults), or a catalog job name."
JobArgument = typer.Argument(..., help=JOB_HELP, metavar="JOB")
ScriptArgs = typer.Argument(None, metavar="[-- ARGS]", show_default=False,
                            help="A script's command line, after --: qtrain run train.py -- --epochs 3 (script.args "
                                 "as a list of words).")


def _load(job: str, overrides: Optional[list[str]], script_args: Optional[list[str]] = None):
    from jobs.load import load_job

    return load_job(job, overrides or [], script_args or None)


# ------------------------------------------------------------------------------- the store
StoreOption = typer.Option(None, "--store", metavar="DIR",
                           help="Results store folder (default: $QTRAIN_STORE, else "
                                "~/.local/share/qtrain/store).")
JsonOption = typer.Option(False, "--json", help="Print one JSON object as the last line of stdout.")
RUN_HELP = ("A run: its id or a unique prefix/suffix of it, a job name (its latest run), JOB~N "
            "(the Nth before that), or @TAG / @KEY=VALUE (the latest run tagged so).")
RunArgument = typer.Argument(..., help=RUN_HELP, metavar="RUN")


def _store(path: Optional[Path]):
    from jobs import settings
    from submit.store import Store

    return Store(settings.paths().store_dir(path))


def _open_run(run_ref: str, store_dir: Optional[Path]):
    """(store, the run's record) for the commands that take a RUN."""
    store = _store(store_dir)
    return store, store.get(run_ref)


# --------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    """Run the CLI (click's standalone mode handles usage errors and --help) and return its status."""
    misplaced = _script_option(sys.argv[1:] if argv is None else argv)
    if misplaced:
        err_console.print(f"error: {misplaced}", style="red", highlight=False, markup=False)
        return 2
    try:
        app(args=argv, prog_name="qtrain")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BrokenPipeError:
        return closed_pipe()
    return 0


def _script_option(argv: list[str]) -> str | None:
    """`qtrain run train.py --epochs 3`: an option that is not qtrain's, given to a script before
    `--`, said as what it is (click would say "No such option" and stop there)."""
    if len(argv) < 2 or argv[0] not in ("run", "check", "train") or not any(a.endswith(".py") for a in argv[1:]):
        return None
    import typer.main

    words = argv[1:argv.index("--")] if "--" in argv else argv[1:]
    command = typer.main.get_command(app).commands.get(argv[0])  # type: ignore[attr-defined]
    known = {opt for param in getattr(command, "params", []) for opt in (*param.opts, *param.secondary_opts)}
    strange = [w for w in words if w.startswith("-") and w.split("=")[0] not in known and w != "-"]
    if not strange:
        return None
    ours, theirs, i = [], [], 0
    while i < len(words):  # each strange option and the value after it go to the script
        if words[i] in strange:
            theirs.append(words[i])
            if i + 1 < len(words) and not words[i + 1].startswith("-") and not words[i + 1].endswith(".py"):
                theirs.append(words[i + 1])
                i += 1
        else:
            ours.append(words[i])
        i += 1
    return (f"{strange[0]} is not an option of qtrain {argv[0]} (a script's own options go after --: "
            f"qtrain {argv[0]} {' '.join(ours)} -- {' '.join(theirs)})")


def closed_pipe() -> int:
    """The reader went away (`| head`): nothing more to say, and nothing at exit either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass
    return 141


def entrypoint() -> None:
    from runner.api import exit_fast

    code = main()
    exit_fast()
    sys.exit(code)


def output_file(path: Path, option: str) -> Path:
    """A file the command will write, checked before any work: not a folder, in a folder that
    exists and can be written."""
    if path.is_dir():
        raise QtrainError(f"{option} {path}: is a folder", hint=f"give a file name, e.g. {option} {path / 'out'}"
                                                                 f"{path.suffix or ''}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise QtrainError(f"{option} {path}: its folder {folder} does not exist", hint="make it first, or "
                                                                                       "give another path")
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise QtrainError(f"{option} {path}: cannot be written here (permission denied)",
                          hint="give a path in a folder you can write to")
    return path


YesOption = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation.")


def confirm(question: str) -> None:
    """Ask on the terminal; no terminal is an error that names --yes; "no" exits 1."""
    if not sys.stdin.isatty():
        raise QtrainError(f"{question} (no terminal to ask on)", hint="add --yes")
    if not typer.confirm(question, default=False):
        raise typer.Exit(1)
