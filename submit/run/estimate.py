"""Before a run: how long it will take, what it will cost and how much energy it will use.

From the check's report (the training rows, and one training step of each trial's model timed on
this machine: `runner.run.check_job`), the job (epochs, batch size; a sweep's trials), the profile
and a price table:

    steps/epoch  = ceil(train rows / batch size)
    step         = the check's step (timed at the training's batch size, on one thread) x OVERHEAD
                   (the optimiser's update, batching); plus the evaluation of val each epoch
    trial time   = startup + MARGIN x (the check's data loading and preparation + epochs x epoch
                   time + the check's final evaluation + REPORT_SECONDS for the results' files)
    (an upper bound: early stopping only shortens a run; bench/estimate.py checks it is one)
    wall time    = the longest trial where each instance has a node of its own (Qarnot); where
                   instances share the cores (the local emulator), trials in waves of as many as
                   there are cores
The backend says which (`Backend.pricing`: its price table section, and the cores its instances
share, if they do).
    cost, energy = instance time x cores x the table's rate (a GPU profile: per instance hour)

A script job's time is its own: its bound is resources.max_minutes (the runner stops it there, and
the backend ends the task soon after), so without it the estimate is unknown and --max-cost
refuses the run.  Any job with resources.max_minutes is bounded by it as well.

The step is measured on this machine: a Qarnot node is timed as this machine (said in the
estimate's `basis`).  `bench/estimate.py` prints how far the estimate lands from the measured
wall time.

The price table is `~/.config/qtrain/prices.toml` (QTRAIN_PRICES), any key may be left out:

    [cpu]   # a Qarnot CPU instance (docker-batch)
    eur_per_core_hour = 0.04
    cores = 8
    watts_per_core = 12
    startup_seconds = 60
    [gpu]   # a Qarnot GPU instance
    eur_per_hour = 1.0
    watts = 300
    startup_seconds = 90
    [local] # the local emulator (its model: submit/emulator/footprint.py)
    startup_seconds = 8   # default: the executor's bound (docker 8: a fresh container; process 4)

Where the defaults come from: Qarnot's rates are set per contract and not published in a form we
could check, so the CPU and GPU rates are the order of magnitude of public on-demand cloud prices
(a compute-optimised vCPU ~0.04 EUR/hour; a mid-range training GPU ~1 EUR/hour): set yours.  A
Qarnot CPU node is an i7 with 4 cores / 8 threads (Qarnot's execution environment page); 12 W a
loaded core and 300 W a GPU are typical figures; the startup (scheduling, image pull, container)
is a guess to refine with `results show`, which puts the estimate beside what the run cost.  The
local emulator's rates are its own (QTRAIN_EMULATOR_EUR_PER_CORE_HOUR, _WATTS_PER_CORE), so that
its estimate and its figures can be compared.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from jobs import settings
from jobs.errors import QtrainError
from jobs.load import LoadedJob
from jobs.spec import STOP_GRACE_SECONDS as LIMIT_GRACE_SECONDS
from jobs.spec import resolve_batch_size
from submit.backends.base import Pricing

OVERHEAD = 1.25  # a full step (optimiser update, batching) over the check's forward + backward
EVAL_SHARE = 0.35  # an evaluation row costs this share of a training row (no backward)
MARGIN = 1.5  # on everything timed once by the check: a busy machine, the epoch's own small work
REPORT_SECONDS = 1.5  # the results' files: 2-3 PNGs, model.pt, predictions, run.json (0.3-0.6 s here)
DEFAULTS: dict[str, dict[str, float]] = {
    "cpu": {"eur_per_core_hour": 0.04, "cores": 8, "watts_per_core": 12.0, "startup_seconds": 60.0},
    "gpu": {"eur_per_hour": 1.0, "watts": 300.0, "startup_seconds": 90.0},
    "local": {},  # startup_seconds: the backend's bound for its executor (Pricing.startup_seconds)
}


def prices_file() -> Path:
    return settings.paths().prices_file()[0]


def prices() -> dict[str, dict[str, float]]:
    """The defaults, with what the price table sets (a bad table is one clear error).  The local
    emulator's rates are its own settings, so that its estimate and its figures agree."""
    import tomllib

    emulated = settings.emulator()
    table = {k: dict(v) for k, v in DEFAULTS.items()}
    table["local"].update({"eur_per_core_hour": emulated.eur_per_core_hour,
                           "watts_per_core": emulated.watts_per_core})
    path, named = settings.paths().prices_file()
    if not path.is_file():
        if named:  # a table the user named, and meant: never the defaults in its place
            raise QtrainError(f"QTRAIN_PRICES={path}: no such file", hint="fix the path, or unset QTRAIN_PRICES "
                                                                         "(then prices.toml in the config folder, "
                                                                         "else the defaults, apply)")
        return table
    if path.stat().st_size > 1 << 20:
        raise QtrainError(f"{path}: a price table is a few lines of TOML, not {path.stat().st_size:,} bytes")
    try:
        given = tomllib.loads(path.read_text())
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise QtrainError(f"{path}: the price table cannot be read ({exc})",
                          hint="fix it (TOML: [cpu] eur_per_core_hour = 0.04 ...), or remove it") from None
    for section, values in given.items():
        if section not in table or not isinstance(values, dict):
            raise QtrainError(f"{path}: [{section}] is not a section of the price table",
                              hint="sections: cpu, gpu, local")
        for key, value in values.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise QtrainError(f"{path}: [{section}] {key} = {value!r}: expected a number >= 0",
                                  hint="e.g. eur_per_core_hour = 0.04")
            table[section][key] = float(value)
    return table


@dataclass
class Estimate:
    wall_seconds: float
    instance_seconds: float  # summed over the instances
    cost_eur: float
    energy_wh: float
    trials: int
    where: str  # the price table's section: cpu | gpu | local
    basis: list[str] = field(default_factory=list)
    emulated: bool = False  # priced at the local emulator's own rates
    bounded: bool = True  # False: a script job without resources.max_minutes (startup only counted)

    def record(self) -> dict[str, Any]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def line(self) -> str:
        if not self.bounded:
            return ("estimate: unknown: a script runs as long as it does (resources.max_minutes bounds its time "
                    "and cost)")
        rate = "emulated rates" if self.emulated else f"{prices_file().name} [{self.where}]"
        why = "the time limit" if self.basis and "resources.max_minutes" in self.basis[0] else \
            "early stopping only shortens it"
        return (f"estimate: ~{_duration(self.wall_seconds)}, {self.cost_eur:.4g} EUR, "
                f"{self.energy_wh:.3g} Wh ({rate}; at most: {why})")


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def estimate(loaded: LoadedJob, report: dict[str, Any], pricing: Pricing, procs: int = 1) -> Estimate:
    """The estimate of a run of `loaded` (whose check gave `report`) on a backend that prices it
    as `pricing` says.  A distributed job (resources.nodes x `procs` a node): every process trains
    its share of the rows, on a core of its own, all nodes for as long; the communication between
    them is not counted (bench/distributed.py measures it)."""
    where = pricing.section
    rates = prices()[where]
    gpu = pricing.gpu
    rows = int((report.get("splits") or {}).get("train") or 0)
    val_rows = int((report.get("splits") or {}).get("val") or 0)
    images = len(report.get("input_shape") or []) > 1
    models = report.get("models") or []
    jobs = [loaded.trial(i).job for i in range(len(loaded.trials))] or [loaded.job]
    times = []
    limit = loaded.job.resources.max_minutes
    startup = rates.get("startup_seconds", pricing.startup_seconds)
    # a task at its time limit: the runner stops it, writes its results, and they are uploaded
    ceiling = startup + limit * 60 + LIMIT_GRACE_SECONDS + REPORT_SECONDS if limit else None
    script = loaded.job.script is not None
    nodes = loaded.job.resources.nodes
    world = nodes * max(1, procs)
    shard = math.ceil(rows / world)  # each process: its share of the rows an epoch, at its own batch size
    for i, job in enumerate(jobs):
        if script:
            times.append(ceiling if ceiling is not None else startup)
            continue
        model = models[i] if i < len(models) else (models[0] if models else {})
        step = float(model.get("step_seconds") or 0.0)
        measured = max(1, int(model.get("step_rows") or 1))
        batch = resolve_batch_size(job.train.batch_size, max(shard, 1), images)
        per_step = step * max(1.0, batch / measured) * OVERHEAD
        epoch = per_step * (math.ceil(shard / batch) + EVAL_SHARE * math.ceil(val_rows / batch))
        fixed = float(model.get("prepare_seconds") or 0.0) + float(model.get("evaluate_seconds") or 0.0)
        times.append(min(startup + MARGIN * (job.train.epochs * epoch + fixed + REPORT_SECONDS), ceiling or math.inf))
    basis = [f"resources.max_minutes {limit:g} per instance" if script and limit is not None
             else "a script job without resources.max_minutes: its time is unknown" if script
             else f"{rows} training rows, {jobs[0].train.epochs} epoch(s), one step timed on this machine "
             f"({models[0].get('step_seconds', 0) * 1000:.1f} ms for {models[0].get('step_rows', 0)} rows)"
             if models else "no timed step in the check report: startup only"]
    if not script and ceiling is not None and max(times) >= ceiling:
        basis.append(f"bounded by resources.max_minutes {limit:g}")
    if world > 1:
        basis.append(f"{nodes} node(s) x {procs} process(es), {shard} rows each an epoch; communication not counted")
        times = times * nodes  # every node for as long
    if pricing.shared_cores is not None and world > 1:  # a cluster's instances all at once, on one machine
        cores = float(max(1, pricing.shared_cores))
        wall = max(times) * max(1.0, world / cores)
        core_hours = wall * min(float(world), cores) / 3600
        cost, energy = core_hours * rates["eur_per_core_hour"], core_hours * rates["watts_per_core"]
        basis.append(f"{pricing.name}: {world} process(es) at once on {cores:.0f} cores")
    elif pricing.shared_cores is not None:  # the instances share one machine's cores
        cores = float(max(1, pricing.shared_cores))
        parallel = min(len(times), int(cores))
        waves = math.ceil(len(times) / parallel)
        wall = max(times) * waves
        threads = cores / parallel
        core_hours = sum(times) * threads / 3600
        cost = core_hours * rates["eur_per_core_hour"]
        energy = core_hours * rates["watts_per_core"]
        basis.append(f"{pricing.name}: {parallel} instance(s) at a time on {cores:.0f} cores")
    elif gpu:
        wall = max(times)
        hours = sum(times) / 3600
        cost, energy = hours * rates["eur_per_hour"], hours * rates["watts"]
        basis.append(f"{len(times)} GPU instance(s), timed as this machine's "
                     f"{'GPU' if report.get('device', '').startswith('cuda') else 'CPU'}")
    else:
        wall = max(times)
        core_hours = sum(times) * rates["cores"] / 3600
        cost, energy = core_hours * rates["eur_per_core_hour"], core_hours * rates["watts_per_core"]
        basis.append(f"{len(times)} CPU instance(s) of {rates['cores']:.0f} cores, timed as this machine")
    return Estimate(wall_seconds=wall, instance_seconds=sum(times), cost_eur=cost, energy_wh=energy,
                    trials=len(jobs) if loaded.trials else 0, where=where, basis=basis,
                    emulated=pricing.emulated, bounded=not script or ceiling is not None)


def refuse_over(est: Estimate, max_cost: float | None, credits_left: float | None) -> None:
    """One line, before anything is uploaded, when the estimate is over what the user allows or
    over what the account has left."""
    if max_cost is not None and not est.bounded:
        raise QtrainError(f"--max-cost {max_cost:g}: a script job's cost has no bound without a time limit",
                          hint="set resources.max_minutes (the estimate is then at most that long)")
    if not est.bounded:
        return
    if max_cost is not None and est.cost_eur > max_cost:
        raise QtrainError(f"the estimated cost, {est.cost_eur:.4g} EUR, is over --max-cost {max_cost:g} EUR",
                          hint="raise --max-cost, or make the run smaller (epochs, sweep grid)")
    if credits_left is not None and est.cost_eur > credits_left:
        raise QtrainError(f"the estimated cost, {est.cost_eur:.4g} EUR, is over the account's credits left "
                          f"({credits_left:.4g} EUR)", hint="add credits, or make the run smaller")
