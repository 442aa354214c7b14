"""What a task cost and emitted, as Qarnot's credits and carbon APIs answer it (the SDK's
`task.credits()`, `conn.credits()`, `task.carbon_facts()`), computed by an emulated model so that
the whole path is tested here.  Nothing in it is Qarnot's figure: qtrain marks every run of the
local backend `emulated`.

The model: an instance holds `cores` (its share of the machine: cores / concurrent instances)
for its wall time, so it uses `core_hours` = wall time x cores (an upper bound of its CPU time).
- Credits (euros): core_hours x QTRAIN_EMULATOR_EUR_PER_CORE_HOUR (default 0.05, a placeholder:
  set your contract's rate).  The account starts with QTRAIN_EMULATOR_CREDITS (default 100) and
  every task's credits are taken from it; once it is spent, a submission answers 402 (the SDK's
  NotEnoughCreditsException).
- Energy: core_hours x QTRAIN_EMULATOR_WATTS_PER_CORE (default 12 W, a loaded desktop core) is
  the IT energy; this machine is counted with a PUE of 1.0 and no heat reused (it warms the room
  it is in, but nobody counts that).
- Carbon: energy x QTRAIN_EMULATOR_GRID_G_PER_KWH (default 56 gCO2eq/kWh, France's grid mean),
  compared with the same IT energy in an average datacenter (PUE 1.5, same grid).
"""

from __future__ import annotations

import time
from typing import Any

from jobs import settings
from submit.emulator.fields import RequestError
from submit.emulator.tasks import Task

DATACENTER = "emulated average datacenter (PUE 1.5)"
DATACENTER_PUE = 1.5


def eur_per_core_hour() -> float:
    return settings.emulator().eur_per_core_hour


def watts_per_core() -> float:
    return settings.emulator().watts_per_core


def enabled() -> bool:
    """QTRAIN_EMULATOR_FOOTPRINT=0: the emulator acts as a cluster without credits and carbon
    services (they answer 404), to see what a client does then."""
    return settings.emulator().footprint


def missing() -> None:
    raise RequestError(404, "not found: this cluster has no credits or carbon service "
                            "(QTRAIN_EMULATOR_FOOTPRINT=0)")


def core_hours(task: Task) -> float:
    cores = task.cores_per_instance
    now = time.time()
    with task.lock:
        seconds = sum(((i.ended or now) - i.started) for i in task.instances.values() if i.started)
    return seconds * cores / 3600


def task_credits(task: Task) -> dict[str, float]:
    """GET /credits/v1/tasks/{uuid}/credits."""
    return {"credits": core_hours(task) * eur_per_core_hour()}


def account_credits(tasks: list[Task], spent: float = 0.0) -> float:
    """What the account has left: its starting credits minus every task's, and `spent` (by tasks
    deleted since)."""
    return settings.emulator().credits - spent - sum(task_credits(t)["credits"] for t in tasks)


def carbon_facts(task: Task, datacenter: str | None = None) -> dict[str, Any]:
    """GET /carbon/v1/tasks/{uuid}/carbon-facts[?comparisonDatacenter=NAME] (the name is echoed:
    the emulator knows one datacenter)."""
    it_wh = core_hours(task) * watts_per_core()
    per_wh = settings.emulator().grid_g_per_kwh / 1000
    here = it_wh * per_wh  # PUE 1.0, nothing reused
    there = it_wh * DATACENTER_PUE * per_wh
    saved = there - here
    return {
        "total_consumed_energy_Wh": it_wh, "total_energy_it_Wh": it_wh,
        "total_reused_energy_Wh": 0.0, "qarnot_carbon_footprint": here,
        "equivalent_datacenter_name": datacenter or DATACENTER,
        "equivalent_DC_carbon_footprint": there,
        "saved_carbon_footprint_compute": saved, "saved_carbon_footprint_heat": 0.0,
        "saved_carbon_footprint_compute_heat": saved,
        "saved_carbon_footprint_percent": round(100 * saved / there, 3) if there else 0.0,
        "PUE": 1.0, "ERE": 1.0, "ERF": 0.0, "WUE": 0.0,
    }
