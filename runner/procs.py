"""A process's life on Linux, written once for the runner and the emulator (`prctl(2)`): a child
that dies with its parent however the parent goes (SIGKILL included), and a process that adopts
what its children leave behind.  Elsewhere each call says it could not (False)."""

from __future__ import annotations

import signal
import sys

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36


def prctl(option: int, value: int) -> bool:
    """Linux's prctl(2); False where there is none, or where it refused."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> bool:
    """SIGKILL this process when its parent dies, even by SIGKILL: a Popen `preexec_fn` (in the
    child, before it starts the program), or the first thing a process does.  The parent may be
    gone already: a caller that knows its parent's pid checks `os.getppid()` after this."""
    return prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
