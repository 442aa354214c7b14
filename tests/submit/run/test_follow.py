"""What `qtrain run` shows while it follows a task."""

from __future__ import annotations

from jobs.results import epoch_line
from submit.run.follow import LineBuffer, LineShow
from submit.ui import Ui


def test_partial_lines_wait_for_their_end():
    buf = LineBuffer()
    assert buf.feed("[qtrain] epo") == []
    assert buf.feed("ch=1/2 loss=1\n[qtrain] ep") == ["[qtrain] epoch=1/2 loss=1"]
    assert buf.flush() == ["[qtrain] ep"]


def test_epoch_lines_are_thinned_but_the_last_and_other_lines_always_show(capsys):
    show = LineShow(Ui())
    for i in range(1, 101):
        for instance in ("0> ", "1> "):
            show.line(instance + epoch_line({"epoch": f"{i}/100", "train_loss": 1 / i}), "stdout")
        if i == 50:
            show.line("0> [qtrain] warning: something to see", "stderr")
    show.flush()
    out = capsys.readouterr().out.splitlines()
    assert "0> [qtrain] warning: something to see" in out
    for instance in ("0> ", "1> "):
        shown = [line for line in out if line.startswith(instance + "[qtrain] epoch=")]
        assert shown[0].startswith(instance + "[qtrain] epoch=1/100")
        assert shown[-1].startswith(instance + "[qtrain] epoch=100/100")
        assert len(shown) < 10
