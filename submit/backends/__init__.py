"""Where a job runs: backends registered by name.

    local    the local Qarnot emulator (started on first use; the default with no Qarnot account)
    qarnot   Qarnot, through the official SDK (QARNOT_CLIENT_TOKEN or the SDK's config file)
"""

from __future__ import annotations

import importlib
from typing import Callable

from submit.backends.base import Backend, BackendError

# name -> "module:Class", imported when asked for (reading the store needs no SDK), or a factory
BACKENDS: dict[str, str | Callable[..., Backend]] = {"local": "submit.backends.local:LocalBackend",
                                                     "qarnot": "submit.backends.qarnot:QarnotBackend"}


def _factory(name: str) -> Callable[..., Backend]:
    try:
        entry = BACKENDS[name]
    except KeyError:
        raise BackendError(f"unknown backend {name!r}",
                           hint=f"choose one of: {', '.join(BACKENDS)}") from None
    if not isinstance(entry, str):
        return entry
    module, _, cls = entry.partition(":")
    return getattr(importlib.import_module(module), cls)


def default_backend() -> str:
    """Qarnot when an account is configured here, else the local emulator."""
    return "qarnot" if _factory("qarnot").configured() else "local"  # type: ignore[attr-defined]


def get_backend(name: str | None = None, start: bool = True) -> Backend:
    """The backend `name`; with start=False one that would start a service (the local emulator's
    daemon) uses it only if it is running."""
    return _factory(name or default_backend())(start=start)


__all__ = ["BACKENDS", "Backend", "BackendError", "default_backend", "get_backend"]
