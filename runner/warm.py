"""A fork server inside the runner image: `python -m runner.warm SOCKET`.

The emulator's docker executor keeps one long-lived container of a task's image running this, so
that an instance does not pay for a fresh container importing torch (seconds): the server imports
torch, pandas, sklearn and the runner once, then forks one child per instance, in the image, with
the instance's own folder, environment and thread share.  The protocol is one JSON object per line
on a unix socket (in the folder the emulator mounts):

    {"argv": ["runner"], "cwd": ..., "env": {...}, "out": path, "err": path, "threads": n}
        -> {"pid": n} ... {"exit": status}        (on the same connection, when the child ends)
    {"signal": 15, "pid": n}                       -> {"ok": true}   (to the child's process group)
"""

from __future__ import annotations

import json
import os
import runpy
import signal
import socket
import sys
import threading

from runner.imports import preload


def signal_instance(pid: int, sig: int) -> None:
    """`sig` to the instance's process group: all it started.  An instance forked from a warm
    interpreter calls setsid() first thing (`become`), and an abort may come before: then the
    signal goes to the process itself, which has started nothing yet (a group never found would
    leave it running for good)."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    except PermissionError:
        pass


def become(argv: list[str], cwd: str, env: dict[str, str], out: str, err: str, threads: int,
           replace_env: bool = False) -> int:
    """In a freshly forked child of an interpreter that has imported torch: run `python -m argv`
    in `cwd` with its output appended to `out`/`err`, in a session of its own (so that a kill
    reaches all it starts), with `threads` torch threads; `env` is laid over this process's
    environment, or replaces it.  Returns the exit status.  The emulator's process executor uses
    it too."""
    os.setsid()
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    os.chdir(cwd)
    if replace_env:
        os.environ.clear()
    os.environ.update(env)
    if "torch" in sys.modules:  # OpenMP read OMP_NUM_THREADS when torch was imported
        sys.modules["torch"].set_num_threads(threads)
    sys.path.insert(0, cwd)
    sys.argv = list(argv)
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported on stderr, like an uncaught error
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def serve(conn: socket.socket) -> None:
    with conn, conn.makefile("rwb", buffering=0) as stream:
        request = json.loads(stream.readline())
        if "signal" in request:
            signal_instance(int(request["pid"]), int(request["signal"]))
            stream.write(b'{"ok": true}\n')
            return
        pid = os.fork()
        if pid == 0:  # the image's environment (PATH, PYTHONPATH, ...) under the instance's
            os._exit(become(request["argv"], request["cwd"], request["env"], request["out"],
                            request["err"], int(request.get("threads") or 1)))
        stream.write(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        stream.write(json.dumps({"exit": 128 - code if code < 0 else code}).encode() + b"\n")


def main() -> int:
    path = sys.argv[1]
    preload()
    if os.path.exists(path):
        os.unlink(path)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path + ".part")
    os.chmod(path + ".part", 0o666)
    server.listen(64)
    os.replace(path + ".part", path)  # the socket appears once the imports are done
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
