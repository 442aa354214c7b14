"""DOCKER_CMD as Qarnot runs it: split into words as a POSIX shell splits them, `${NAME}` replaced in
each word by the constant or Qarnot variable of that name, and no shell in between.  Checked when a
task is submitted (`wire.py`) and turned into an instance's argv by the executors.
"""

from __future__ import annotations

import re
import shlex

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # a task constant that can be an environment variable
REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def split_command(command: str) -> list[str]:
    """DOCKER_CMD's words, split as a POSIX shell splits them (quotes group, no `#` comments, no
    expansion): `sh -c "cat a | tr a b"` -> ["sh", "-c", "cat a | tr a b"].  ValueError when a
    quote is not closed."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=False)
    lexer.whitespace_split = True
    lexer.commenters = ""
    return list(lexer)


def command_argv(command: str | None, env: dict[str, str]) -> list[str] | None:
    """The instance's argv from DOCKER_CMD: its words with `${NAME}` replaced by the constant or
    Qarnot variable of that name (INSTANCE_ID, FRAME_ID, ...; an unknown name is left as it is,
    word by word, so a value never splits into more words).  None when there is no command: the
    image's own runs."""
    if command is None or not command.strip():
        return None
    return [REFERENCE.sub(lambda m: env.get(m.group(1), m.group(0)), word) for word in split_command(command)]


def python_module_argv(argv: list[str] | None) -> list[str] | None:
    """["python", "-m", pkg, args...] -> [pkg, args...] (what a warm interpreter can run);
    anything else -> None."""
    if argv and len(argv) >= 3 and argv[0] in ("python", "python3") and argv[1] == "-m":
        return argv[2:]
    return None
