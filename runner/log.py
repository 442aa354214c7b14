"""Runner output: plain lines on stdout/stderr that the submitter can parse from remote logs.

The runner runs inside the container without rich; one line per event, flushed at once so that
Qarnot's fresh-stdout polling shows progress live.  The line format is part of the results
contract (`jobs.results.epoch_line` / `parse_epoch_line`).
"""

from __future__ import annotations

import sys

from jobs import settings
from jobs.results import PREFIX, epoch_line

__all__ = ["PREFIX", "epoch_line", "info", "warn"]


def info(message: str) -> None:
    """A line of progress; in a distributed run, rank 0's only (the others say the same)."""
    if not settings.ranks().rank:
        print(f"{PREFIX} {message}", file=sys.stdout, flush=True)


def warn(message: str) -> None:
    if not settings.ranks().rank:
        print(f"{PREFIX} warning: {message}", file=sys.stderr, flush=True)
