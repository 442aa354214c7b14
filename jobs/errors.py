"""The one exception family qtrain raises for problems a user can fix.

The CLI catches `QtrainError`, prints its one-line message and exits non-zero; anything else is an
internal error and is shown with its traceback.  It lives in `jobs/` because both the submitter and
the runner (inside the container) raise it.
"""

from __future__ import annotations


class QtrainError(Exception):
    """A problem with the user's input or environment, with a message that says what to do."""

    exit_code = 2

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class JobError(QtrainError):
    """The job file is invalid: syntax, schema or values."""


class DataError(QtrainError):
    """The dataset cannot be read or does not fit the job."""


class RunError(QtrainError):
    """Something failed after a run was recorded (and perhaps sent): the message names the run,
    and the exit status (3) tells it apart from a mistake caught before anything was sent (2)."""

    exit_code = 3


class TimeLimitReached(QtrainError):
    """A task stopped at its wall-clock limit (resources.max_minutes), its results and checkpoint
    written: the task fails (exit status 124, as timeout(1)), and `qtrain resume` continues it."""

    exit_code = 124
