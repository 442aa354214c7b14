""""Did you mean": the name a user most likely meant, for column names and job fields."""

from __future__ import annotations

import difflib
from typing import Iterable


def did_you_mean(name: str, choices: Iterable[str], close: bool = True) -> str | None:
    """The choice that differs from `name` by case only, else (with `close`) the closest one;
    None if none is: `Survived` -> `survived`, `epoch` -> `epochs`."""
    options = [str(c) for c in choices]
    folded = [c for c in options if c.casefold() == name.casefold()]
    if folded:
        return folded[0]
    if not close:
        return None
    close = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
    if close:
        return close[0]
    lower = {c.casefold(): c for c in options}
    close = difflib.get_close_matches(name.casefold(), list(lower), n=1, cutoff=0.6)
    return lower[close[0]] if close else None


def suggestion(name: str, choices: Iterable[str], close: bool = True) -> str:
    """"; did you mean 'x'?" or ""."""
    match = did_you_mean(name, choices, close)
    return f"; did you mean '{match}'?" if match else ""
