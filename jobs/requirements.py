"""A job's own packages (`resources.requirements`), read once: the lines pip is given, what their
hash covers, and the one-line errors for a file that is missing or cannot be parsed.

`resources.requirements` is a requirements file (relative to the job file) or a list of lines, in
pip's own syntax: one requirement a line (`torchmetrics==1.4.0`, `einops>=0.7`, a marker after
`;`), comments after `#`, and these options: `--index-url URL`, `--extra-index-url URL`,
`--no-index`, `--find-links DIR|URL` (`-f`; a relative folder is the requirements file's, or the
job file's for a list), `--pre`, `--only-binary` / `--prefer-binary`.  What would make the
environment depend on more than these lines is refused: editable installs (`-e`), nested files
(`-r`, `-c`), local paths and VCS URLs as requirements.

The hash covers the requirement lines, the options and the wheels in each local find-links folder
(their names and contents): the same requirements build the same environment once, wherever the
file lives.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from jobs.errors import JobError
from jobs.files import file_sha256, resolve, special_kind
from jobs.spec import Job

FIELD = "resources.requirements"
MAX_BYTES = 1 << 20
FLAGS = {"--no-index", "--pre", "--prefer-binary"}
VALUED = {"--index-url": "--index-url", "-i": "--index-url", "--extra-index-url": "--extra-index-url",
          "--find-links": "--find-links", "-f": "--find-links", "--only-binary": "--only-binary"}
REFUSED = {"-e": "an editable install", "--editable": "an editable install", "-r": "a nested requirements file",
           "--requirement": "a nested requirements file", "-c": "a constraints file",
           "--constraint": "a constraints file"}


@dataclass(frozen=True)
class Requirements:
    """The requirement lines (as pip reads them) and the options, with where they come from."""

    requirements: tuple[str, ...]
    options: tuple[str, ...]  # pip arguments, local find-links folders made absolute
    where: str  # the file, or "resources.requirements" for a list: for messages
    find_links: tuple[Path, ...] = field(default=())  # local wheel folders

    @property
    def names(self) -> list[str]:
        from packaging.requirements import Requirement

        return [Requirement(r).name for r in self.requirements]

    def hash(self) -> str:
        h = hashlib.sha256()
        for line in (*self.requirements, "\0", *self.options):
            h.update(line.encode() + b"\n")
        for folder in self.find_links:
            for wheel in sorted(folder.iterdir()) if folder.is_dir() else ():
                if wheel.is_file() and wheel.suffix in (".whl", ".gz", ".zip"):
                    h.update(f"{wheel.name}\0{file_sha256(wheel)}\n".encode())
        return h.hexdigest()

    def text(self, options: bool = True) -> str:
        """A requirements file of these lines (and options, one a line), as pip reads it."""
        lines: list[str] = []
        args = list(self.options) if options else []
        while args:
            name = args.pop(0)
            lines.append(name if name in FLAGS else f"{name} {shlex.quote(args.pop(0))}")
        return "".join(f"{line}\n" for line in [*lines, *self.requirements])


def find_requirements(job: Job, base_dir: Path) -> Requirements | None:
    """The job's requirements (None: it names none); a one-line JobError for a file that is not
    there or not text, or a line pip would not take."""
    value = job.resources.requirements
    if value is None:
        return None
    if isinstance(value, str):
        return read_file(resolve(value, base_dir))
    return parse(list(value), FIELD, base_dir, numbered=False)


def read_file(path: Path) -> Requirements:
    """A requirements file's requirements; one line for one that is missing or unreadable."""
    if not path.exists():
        raise JobError(f"{FIELD} {path}: not found", hint="the path is relative to the job file; or give a "
                                                          "list of requirement lines")
    if kind := special_kind(path):
        raise JobError(f"{FIELD} {path}: is {kind}, not a requirements file")
    if path.is_dir():
        raise JobError(f"{FIELD} {path}: a folder, not a requirements file")
    if path.stat().st_size > MAX_BYTES:
        raise JobError(f"{FIELD} {path}: over {MAX_BYTES >> 20} MiB, not a requirements file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise JobError(f"{FIELD} {path}: not utf-8 text ({exc.reason})") from None
    return parse(text.splitlines(), str(path), path.parent)


def parse(lines: list[str], where: str, folder: Path, numbered: bool = True) -> Requirements:
    from packaging.requirements import InvalidRequirement, Requirement

    requirements: list[str] = []
    options: list[str] = []
    links: list[Path] = []
    joined: list[tuple[int, str]] = []
    pending = ""
    for number, raw in enumerate(lines, 1):  # a trailing backslash continues the line
        if raw.rstrip().endswith("\\"):
            pending += raw.rstrip()[:-1] + " "
            continue
        joined.append((number, pending + raw))
        pending = ""
    if pending:
        joined.append((len(lines), pending))
    for number, raw in joined:
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        at = f"{where}:{number}" if numbered else f"{where}[{number - 1}]"
        if not line:
            continue
        if line.startswith("-"):
            words = shlex.split(line)
            name, _, inline = words[0].partition("=")
            value = inline or (words[1] if len(words) > 1 else None)
            if name in REFUSED:
                raise JobError(f"{at}: {line!r}: {REFUSED[name]} is not supported",
                               hint="list the requirements themselves, one a line")
            if name in FLAGS:
                options.append(name)
            elif name in VALUED:
                if not value:
                    raise JobError(f"{at}: {name} needs a value", hint=f"e.g. {name} https://... or a folder")
                if VALUED[name] == "--find-links" and "://" not in value:
                    local = (folder / value).resolve() if not Path(value).is_absolute() else Path(value)
                    if not local.is_dir():
                        raise JobError(f"{at}: --find-links {value}: {local} is not a folder",
                                       hint="give a folder of wheels (relative to the requirements file) or a URL")
                    links.append(local)
                    value = str(local)
                options += [VALUED[name], value]
            else:
                raise JobError(f"{at}: {line!r}: pip option {name} is not supported here",
                               hint="supported: --index-url, --extra-index-url, --no-index, --find-links, --pre, "
                                    "--only-binary, --prefer-binary")
            continue
        try:
            parsed = Requirement(line)
        except InvalidRequirement as exc:
            raise JobError(f"{at}: {line!r} cannot be parsed as a requirement ({str(exc).splitlines()[0]})",
                           hint="one requirement a line, as pip takes it: name, name==1.2, name>=1.0; marker")
        if parsed.url:
            raise JobError(f"{at}: {line!r}: a requirement from a URL or path is not supported",
                           hint="build a wheel and give its folder with --find-links")
        requirements.append(str(parsed))
    if not requirements:
        raise JobError(f"{where}: no requirement in it", hint=f"list the packages your code imports, or remove {FIELD}")
    return Requirements(tuple(requirements), tuple(options), where, tuple(links))
