"""The results store: what ran, what it gave, and where its files are.  It owns the index and its
migrations, the grammar of run names, each run's own record (and the rebuild of a lost index
from them), and the collection of what no run owns.

    index.py     `Store`: the index of runs (SQLite) and one folder per run; every write
    schema.py    the index's tables, the one migration loop, how the index is opened
    records.py   `RunRecord`: what a run is, its states, its tags
    names.py     how a RUN on the command line names a run
    mirror.py    each run folder's copy of its index entry
    reindex.py   `qtrain results reindex`: the index rebuilt from those copies
    gc.py        `qtrain results gc`: what no run owns, removed
"""

from submit.store.index import Store
from submit.store.records import FINAL_STATES, STATES, RunRecord, parse_tag

__all__ = ["FINAL_STATES", "STATES", "RunRecord", "Store", "parse_tag"]
