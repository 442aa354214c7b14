"""The emulator's state file keeps task outputs as appended chunks (real SQLite): a flush writes
what was printed since the last one, the text read back is the buffer's, and a buffer that
dropped lines before they were saved, or a file that grew past twice the buffer, is compacted."""

from __future__ import annotations

import sqlite3

from submit.emulator import instances
from submit.emulator.state import TaskStore
from submit.emulator.instances import Output

KEY = ("stdout", 0)


def _flush(store: TaskStore, out: Output) -> tuple[bool, str, int]:
    """What the manager's flusher does for one buffer."""
    pending = out.pending()
    end, dropped = out.end, out.dropped
    store.save("t", 0.0, "{}", {KEY: pending})
    out.mark_saved(pending[0], len(pending[1]), end, dropped)
    return pending


def _stored(store: TaskStore) -> tuple[str, int]:
    [(_, _, outputs)] = list(store.load())
    return outputs[KEY]


def _chunks(path) -> list[str]:
    with sqlite3.connect(path) as db:
        return [t for (t,) in db.execute("SELECT text FROM output_chunks ORDER BY seq")]


def test_flushes_append_only_what_is_new_and_read_back_whole(tmp_path):
    store = TaskStore(tmp_path / "tasks.sqlite")
    out = Output()
    for i in range(3):
        out.add(f"line {i}\n")
    assert _flush(store, out) == (False, "line 0\nline 1\nline 2\n", 0)
    assert out.fresh() == "line 0\nline 1\nline 2\n"
    out.add("line 3\n")
    replaced, text, fresh = _flush(store, out)
    assert (replaced, text, fresh) == (False, "line 3\n", len("line 0\nline 1\nline 2\n"))
    assert _chunks(tmp_path / "tasks.sqlite") == ["line 0\nline 1\nline 2\n", "line 3\n"]

    text, fresh = _stored(store)
    restored = Output.load(text, fresh)
    assert restored.whole() == out.whole()
    assert restored.fresh() == "line 3\n"  # what had been read fresh stays read
    store.close()


def test_dropped_lines_and_a_file_past_twice_the_buffer_compact_to_one_chunk(tmp_path, monkeypatch):
    monkeypatch.setattr(instances, "LOG_LIMIT", 100)
    store = TaskStore(tmp_path / "tasks.sqlite")
    out = Output()
    for i in range(5):
        out.add(f"{i:09d}\n")  # 10 characters each
        _flush(store, out)
    assert len(_chunks(tmp_path / "tasks.sqlite")) == 5

    for i in range(5, 30):  # the ring drops lines that were never saved: replace
        out.add(f"{i:09d}\n")
    assert out.size == 100 and out.dropped == 200
    replaced, text, _ = _flush(store, out)
    assert replaced and _chunks(tmp_path / "tasks.sqlite") == [out.whole()]

    for i in range(30, 60):  # saved as it goes: chunks until they would pass 200 characters
        out.add(f"{i:09d}\n")
        _flush(store, out)
        stored = sum(map(len, _chunks(tmp_path / "tasks.sqlite")))
        assert stored <= 200
    assert len(_chunks(tmp_path / "tasks.sqlite")) < 30
    text, fresh = _stored(store)
    assert Output.load(text, fresh).whole() == out.whole()  # trimmed back to the buffer on load
    store.close()


def test_a_state_file_of_the_first_durable_version_is_read(tmp_path):
    path = tmp_path / "tasks.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE tasks (uuid TEXT PRIMARY KEY, created REAL NOT NULL, data TEXT NOT NULL);
            CREATE TABLE outputs (uuid TEXT NOT NULL, stream TEXT NOT NULL, instance INTEGER NOT NULL,
                                  text TEXT NOT NULL, fresh_at INTEGER NOT NULL,
                                  PRIMARY KEY (uuid, stream, instance));
            INSERT INTO tasks VALUES ('t', 0, '{}');
            INSERT INTO outputs VALUES ('t', 'stdout', 0, 'old\nnew\n', 4);
        """)
    store = TaskStore(path)
    assert _stored(store) == ("old\nnew\n", 4)
    restored = Output.load(*_stored(store))
    assert restored.fresh() == "new\n"
    out = restored
    out.add("more\n")
    assert _flush(store, out)[0]  # a restored buffer's first save replaces
    assert _stored(store)[0] == "old\nnew\nmore\n"
    store.close()
