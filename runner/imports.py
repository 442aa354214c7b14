"""Importing torch, pandas and sklearn a quarter faster.

Their imports allocate about half a million objects, and the cyclic garbage collector, triggered
by allocations, walks the growing heap again and again while they do: 0.5 s of a 2.2 s import on
this 2-core machine, for ~1 MB of cycles found.  `heavy_imports()` turns the collector off for the
imports, then freezes what they made (module-level objects live as long as the process; a frozen
object is never traversed again, which also makes every later full collection cheaper and keeps
a fork server's pages shared with its children) and turns it back on.
"""

from __future__ import annotations

import contextlib
import gc
import sys
from collections.abc import Iterator

# what a warm interpreter imports before forking instances (not torch._dynamo: training never
# imports it, see runner.optim._step_without_dynamo)
PRELOAD = ("numpy", "pandas", "sklearn", "torch", "matplotlib.pyplot", "runner.run")


@contextlib.contextmanager
def heavy_imports() -> Iterator[None]:
    enabled = gc.isenabled()
    modules = len(sys.modules)
    gc.disable()
    try:
        yield
    finally:
        if len(sys.modules) > modules:  # already imported (a fork server's child): nothing to freeze
            gc.freeze()
        if enabled:
            gc.enable()


def exit_fast() -> None:
    """At the end of a process that imported torch, pandas and sklearn: skip the interpreter's
    last garbage collections over everything they made (0.4 to 0.6 s of a 2 s command here);
    the process frees it all anyway.  Files are closed by their `with` blocks before this."""
    gc.freeze()


def preload() -> None:
    """Import PRELOAD (the fork servers: `runner.warm`, and the emulator's process executor
    through `runner.preloaded`)."""
    with heavy_imports():
        for name in PRELOAD:
            __import__(name)
