"""Memory: what this machine (or its container) has free.  `jobs.files.refuse_too_large` uses it to
refuse a data file too large to read whole when the job is loaded, instead of a process killed
halfway through (tables larger than memory are not supported)."""

from __future__ import annotations

from pathlib import Path

UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a number near 2**63


def _read_int(path: str) -> int | None:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def available_bytes() -> int | None:
    """Memory free for this process: the smallest of the machine's available memory and the room
    left under its cgroup's limit (v2 or v1); None where neither can be read."""
    found: list[int] = []
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except (OSError, ValueError, IndexError):
        pass
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        limit, usage = _read_int(limit_file), _read_int(usage_file)
        if limit is not None and usage is not None and limit < UNLIMITED:
            found.append(max(limit - usage, 0))
    return min(found) if found else None
