"""The `qtrain` command line, one module per command group:

    common     the app, the `command` decorator, shared options, `main`
    jobs       check, train, predict, catalog                       (a job, here)
    runs       run, status, fetch, logs, cancel, profiles            (a run on a backend)
    results    results list/show/compare/tag/untag/note/rm/gc/export (the store)
    image      image build/push
    emulator   emulator start/stop/status/serve
    settings   the environment variables qtrain reads
"""

# the order of these imports is the order of `qtrain --help`
from submit.cli import jobs, runs, results, image, emulator, settings  # noqa: F401, I001 - they register commands
from submit.cli.common import app, entrypoint, main

__all__ = ["app", "entrypoint", "main"]
