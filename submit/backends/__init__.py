"""Where a job runs: backends registered by name.

    local    the local Qarnot emulator (started on first use; the default with no Qarnot account)
    qarnot   Qarnot, through the official SDK (QARNOT_CLIENT_TOKEN or the SDK's config file)
"""

from __future__ import annotations

from submit.backends.base import Backend, BackendError
from submit.backends.local import LocalBackend
from submit.backends.qarnot import QarnotBackend

BACKENDS: dict[str, type[Backend]] = {"local": LocalBackend, "qarnot": QarnotBackend}


def default_backend() -> str:
    """Qarnot when an account is configured here, else the local emulator."""
    return "qarnot" if QarnotBackend.configured() else "local"


def get_backend(name: str | None = None, start: bool = True) -> Backend:
    """The backend `name`; with start=False the local one uses a running emulator only."""
    name = name or default_backend()
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}",
                           hint=f"choose one of: {', '.join(BACKENDS)}") from None
    return cls(start=start) if cls is LocalBackend else cls()


__all__ = ["BACKENDS", "Backend", "BackendError", "default_backend", "get_backend"]
