"""Runner output: plain lines on stdout/stderr that the submitter can parse from remote logs.

The runner runs inside the container without rich; one line per event, flushed at once so that
Qarnot's fresh-stdout polling shows progress live.
"""

from __future__ import annotations

import sys

PREFIX = "[qtrain]"


def info(message: str) -> None:
    print(f"{PREFIX} {message}", file=sys.stdout, flush=True)


def warn(message: str) -> None:
    print(f"{PREFIX} warning: {message}", file=sys.stderr, flush=True)


def epoch_line(fields: dict[str, object]) -> str:
    """`[qtrain] epoch=3/20 train_loss=0.4123 val_loss=... elapsed=1.23s`: key=value pairs."""
    parts = []
    for key, value in fields.items():
        if isinstance(value, float):
            value = f"{value:.3f}s" if key == "elapsed" else f"{value:.6g}"
        parts.append(f"{key}={value}")
    return f"{PREFIX} " + " ".join(parts)


def parse_epoch_line(line: str) -> dict[str, str] | None:
    """The inverse of `epoch_line` (tolerates a Qarnot per-instance `N> ` prefix)."""
    start = line.find(f"{PREFIX} epoch=")
    if start < 0:
        return None
    fields = {}
    for token in line[start + len(PREFIX):].split():
        key, sep, value = token.partition("=")
        if sep:
            fields[key] = value
    return fields
