"""What a run cost and emitted, as its backend's API reports it (Qarnot's task credits and carbon
facts, through the SDK), kept in the store as the run's `info["footprint"]`.

Every figure may be unknown (None): an account without access to those endpoints, an older
cluster, a backend that reports nothing.  Unknown is shown as unknown, never as zero, and never
fails a run.  `source` says whose figures they are: `qarnot`, or `emulated` (the local
emulator's model, `submit/emulator/footprint.py`), so nobody mistakes one for the other.
"""

from __future__ import annotations

from typing import Any

# the fields `results list/compare --where/--sort` and `--json` name, with their units
FIELDS = {
    "cost_eur": "EUR", "energy_wh": "Wh", "co2_g": "gCO2eq", "co2_saved_g": "gCO2eq",
}
DETAILS = {  # the rest of the carbon facts, shown by `results show`
    "energy_it_wh": "Wh", "reused_wh": "Wh", "co2_datacenter_g": "gCO2eq", "co2_saved_percent": "%",
    "pue": "", "ere": "", "erf": "", "wue": "L/kWh",
}
LOWER_IS_BETTER = ("cost_eur", "energy_wh", "co2_g")


def unknown(source: str) -> dict[str, Any]:
    return {**{k: None for k in (*FIELDS, *DETAILS)}, "datacenter": None, "source": source}


def euros(credits: Any) -> float | None:
    """The amount of the SDK's `Credits` (a task's, or the account's), None when it says none."""
    value = getattr(credits, "amount_in_euros", None)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def from_sdk(credits: Any, facts: Any, source: str) -> dict[str, Any]:
    """The footprint from the SDK's `Credits` and `CarbonFacts` (either may be None: unknown)."""
    out = unknown(source)
    out["cost_eur"] = euros(credits)
    if facts is not None:
        def number(name: str) -> float | None:
            value = getattr(facts, name, None)
            return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

        out.update({
            "energy_wh": number("energy_consumption_Wh"), "energy_it_wh": number("energy_it_Wh"),
            "reused_wh": number("energy_reuse_Wh"), "co2_g": number("carbon_footprint_gC02eq"),
            "co2_datacenter_g": number("equivalent_dc_carbon_footprint_gC02eq"),
            "co2_saved_g": number("saved_carbon_footprint_compute_heat_gC02eq"),
            "co2_saved_percent": number("saved_carbon_footprint_percent"),
            "pue": number("PUE"), "ere": number("ERE"), "erf": number("ERF"), "wue": number("WUE"),
            "datacenter": getattr(facts, "equivalent_datacenter_name", None) or None,
        })
    return out


def show(value: Any, unit: str = "") -> str:
    """A figure for people: `unknown` when there is none, never 0 in its place."""
    if value is None:
        return "unknown"
    if isinstance(value, float):
        text = f"{value:.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()
