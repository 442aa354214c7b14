"""runner.procs: a child tied to its parent's life dies when the parent is killed with SIGKILL
(the script of a killed runner, a worker of a killed agent, the emulator's S3 server); one not
tied to it lives on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parents[2]

PARENT = """
import subprocess, sys, time
from runner.procs import die_with_parent
tied = sys.argv[1] == "tied"
child = subprocess.Popen(["sleep", "300"], preexec_fn=die_with_parent if tied else None)
print(child.pid, flush=True)
time.sleep(300)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"  # a zombie has died
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(2) is Linux's")
@pytest.mark.parametrize("tied", [True, False])
def test_a_tied_child_dies_with_its_killed_parent_and_an_untied_one_lives_on(tied):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, "tied" if tied else "free"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    child = int(parent.stdout.readline())
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)
        if tied:
            wait_for(lambda: not _alive(child), timeout=10)
        else:
            time.sleep(1)
            assert _alive(child)
    finally:
        try:
            os.kill(child, signal.SIGKILL)
        except ProcessLookupError:
            pass
