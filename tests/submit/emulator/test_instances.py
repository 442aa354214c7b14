"""An instance's output buffer: a ring of lines that says what it dropped, to whoever reads it whole
(`qtrain logs`, task-stdout.txt) and to whoever reads it fresh and fell behind (`qtrain run`'s live
view).  The buffer in-process, with a ring made small for the test."""

from __future__ import annotations

from submit.emulator import instances
from submit.emulator.instances import Output


def test_a_ring_that_dropped_lines_begins_with_a_line_that_says_how_much(monkeypatch):
    monkeypatch.setattr(instances, "LOG_LIMIT", 100)
    out = Output()
    for i in range(5):
        out.add(f"{i:09d}\n")  # 10 characters each
    assert out.kept() == out.whole() == "".join(f"{i:09d}\n" for i in range(5))  # nothing dropped: nothing said
    for i in range(5, 30):
        out.add(f"{i:09d}\n")
    first, rest = out.kept().split("\n", 1)
    assert first.startswith("[qtrain] 20 lines (200 B) of earlier output left out")
    assert "keeps the last 100 B of each stream" in first
    assert rest == out.whole() == "".join(f"{i:09d}\n" for i in range(20, 30))


def test_a_fresh_read_that_fell_behind_says_how_many_lines_it_never_saw(monkeypatch):
    monkeypatch.setattr(instances, "LOG_LIMIT", 100)
    out = Output()
    for i in range(3):
        out.add(f"{i:09d}\n")
    assert out.fresh() == "000000000\n000000001\n000000002\n"  # read in time: nothing skipped
    for i in range(3, 25):  # 22 lines while nobody reads: 12 leave the ring unread
        out.add(f"{i:09d}\n")
    first, rest = out.fresh().split("\n", 1)
    assert first.startswith("[qtrain] 12 lines (120 B) of output skipped")
    assert rest == "".join(f"{i:09d}\n" for i in range(15, 25))
    out.add("000000025\n")
    assert out.fresh() == "000000025\n"  # said once
    for i in range(26, 36):  # as many as the ring holds: the lines already read go first
        out.add(f"{i:09d}\n")
    assert out.fresh() == "".join(f"{i:09d}\n" for i in range(26, 36))
