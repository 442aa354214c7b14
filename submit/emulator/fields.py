"""What a request to the emulator may hold, as the leaf every other emulator module builds on: the
error it answers with (`RequestError`), the parsers of a request's fields (each refusal names the
field), Qarnot's dates, time spans and advanced ranges, and the account limits a request is
checked against.  It imports nothing of the emulator.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from jobs import settings

NOT_RUNNING = "invalid operation on non running task"  # Qarnot's 403 for an ended task
EMAIL = "emulator@qtrain.local"  # the emulated account (`/info`), and its storage access key


class RequestError(Exception):
    """A request the emulator refuses: answered with `status` and {"message": ...}."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def field_error(field: str, problem: str) -> RequestError:
    return RequestError(400, f"{field}: {problem}")


def string_field(body: dict[str, Any], key: str, default: str | None = None) -> str | None:
    value = body.get(key)
    if value is None:
        return default
    if not isinstance(value, str):
        raise field_error(key, f"expected a string, got {type(value).__name__}")
    return value


def list_field(body: dict[str, Any], key: str, within: str = "") -> list[Any]:
    value = body.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise field_error(within + key, f"expected a list, got {type(value).__name__}")
    return value


def parse_constants(items: list[Any], field: str = "constants") -> dict[str, str]:
    constants: dict[str, str] = {}
    for i, c in enumerate(items):
        if not isinstance(c, dict) or not isinstance(c.get("key"), str) or not c["key"]:
            raise field_error(f"{field}[{i}]", "expected an object with a key (a non-empty string) and a value")
        value = c.get("value")
        if value is not None and not isinstance(value, (str, int, float, bool)):
            raise field_error(f"{field}[{i}].value", f"expected a string, got {type(value).__name__}")
        constants[c["key"]] = "" if value is None else str(value)
    return constants


def stamp(t: float | None = None) -> str:
    """Qarnot's date format, as the SDK parses it (6 fraction digits, 'Z')."""
    dt = datetime.fromtimestamp(time.time() if t is None else t, timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def timespan(seconds: float) -> str:
    """A .NET TimeSpan as Qarnot sends it: [d.]hh:mm:ss."""
    seconds = max(0, int(seconds))
    d, rem = divmod(seconds, 86400)
    h, rem = divmod(rem, 3600)
    m, s = divmod(rem, 60)
    return (f"{d}." if d else "") + f"{h:02d}:{m:02d}:{s:02d}"


def parse_ranges(text: str) -> list[int]:
    """Qarnot's advanced ranges: "0-5,7,10-12"."""
    ids: list[int] = []
    try:
        for part in str(text).split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(x) for x in part.split("-", 1))
                ids.extend(range(lo, hi + 1))
            elif part:
                ids.append(int(part))
    except ValueError:
        raise RequestError(400, f"advancedRanges {text!r}: expected ranges such as 0-5,7") from None
    if not ids:
        raise RequestError(400, "advancedRanges is empty")
    return ids


def format_ranges(ids: list[int]) -> str:
    """The inverse of `parse_ranges`: [0, 1, 2, 5] -> "0-2,5"."""
    parts: list[list[int]] = []
    for i in sorted(ids):
        if parts and parts[-1][1] == i - 1:
            parts[-1][1] = i
        else:
            parts.append([i, i])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in parts)


def safe_relpath(key: str) -> PurePosixPath | None:
    """A bucket key as a relative path, or None for keys that would escape the folder."""
    p = PurePosixPath(key.lstrip("/"))
    if not p.parts or ".." in p.parts:
        return None
    return p


@dataclass(frozen=True)
class Limits:
    """The account limits `/info` advertises, and the emulator enforces with the service's answers."""

    max_instances: int = 64  # instances of one task (instanceCount, or an advanced range)
    max_tasks: int = 1000  # tasks kept (403 "Maximum number of tasks reached": MaxTaskException)
    max_running_tasks: int = 32  # tasks past Submitted at once: the others wait, Submitted
    max_buckets: int = 100  # buckets (S3 CreateBucket answers TooManyBuckets)
    max_pools: int = 50
    max_running_pools: int = 10
    max_jobs: int = 100  # jobs not yet terminated (403 "Maximum number of jobs reached": MaxJobException)
    max_body: int = 4 << 20  # bytes of a request body (413 above)

    @classmethod
    def configured(cls) -> "Limits":
        """QTRAIN_EMULATOR_LIMITS="max_tasks=10,max_running_tasks=2": lower (or raise) the limits."""
        given = settings.emulator().limits
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(given) - names)
        if unknown:
            raise settings.SettingError(f"QTRAIN_EMULATOR_LIMITS: {', '.join(unknown)} is not a limit",
                                        hint=f"the limits are {', '.join(sorted(names))}")
        return cls(**given)
