"""Hardware constraints (`task.hardware_constraints`, the SDK's `qarnot.hardware_constraint`)
checked against the one machine the emulator has, as Qarnot checks them against its fleet.

What the machine offers is listed by `GET /hardware-constraints` (the SDK's
`conn.all_hardware_constraints()`).  A task whose constraints this machine does not meet is, by
the emulator's `hardware` mode (QTRAIN_EMULATOR_HARDWARE, read by `jobs.settings`):
- `wait` (default): accepted, and kept queued (Submitted) with an `errors` entry that says which
  constraint and why, as Qarnot keeps a task no free machine fits; abort it, or delete it.
- `strict`: refused at submission with 402 "... hardware constraint ...", the answer the SDK
  turns into a QarnotGenericException with that message.
- `lenient`: run anyway on this machine, with a line in the instance's output (a GPU job on a
  laptop runs on the CPU): for dry runs of GPU jobs, never the default.
CPU models, specification keys and SSDs cannot be known here: those constraints are accepted and
said in the output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from submit.emulator.fields import RequestError

NOT_CHECKED = ("CpuModelHardwareConstraint", "SpecificHardwareConstraint", "SSDHardwareConstraint",
               "NoSSDHardwareConstraint")
KNOWN = ("MinimumCoreHardwareConstraint", "MaximumCoreHardwareConstraint", "MinimumRamHardwareConstraint",
         "MaximumRamHardwareConstraint", "MinimumRamCoreRatioHardwareConstraint",
         "MaximumRamCoreRatioHardwareConstraint", "GpuHardwareConstraint", "NoGpuHardwareConstraint",
         *NOT_CHECKED)
NUMBERS = {  # discriminator -> the field holding its number
    "MinimumCoreHardwareConstraint": "coreCount", "MaximumCoreHardwareConstraint": "coreCount",
    "MinimumRamHardwareConstraint": "minimumMemoryMB", "MaximumRamHardwareConstraint": "maximumMemoryMB",
    "MinimumRamCoreRatioHardwareConstraint": "minimumMemoryGBCoreRatio",
    "MaximumRamCoreRatioHardwareConstraint": "maximumMemoryGBCoreRatio",
}


def cpu_model() -> str:
    """This machine's CPU model, as Qarnot names it in a task's status (by CPU model)."""
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8", errors="replace"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown"


@dataclass(frozen=True)
class Machine:
    cores: int
    memory_mb: int
    gpu: bool
    cpu: str = "unknown"

    @classmethod
    def here(cls, cores: int | None = None, gpu: bool | None = None) -> "Machine":
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
        return cls(cores or os.cpu_count() or 1, int(memory), host_has_gpu() if gpu is None else gpu, cpu_model())

    def offers(self, lenient: bool = False) -> list[dict[str, Any]]:
        """This machine as the hardware constraints that select it (GET /hardware-constraints);
        `lenient` (runs what it lacks anyway) offers a GPU it does not have."""
        found: list[dict[str, Any]] = [
            {"discriminator": "MinimumCoreHardwareConstraint", "coreCount": self.cores},
            {"discriminator": "MinimumRamHardwareConstraint", "minimumMemoryMB": self.memory_mb},
            {"discriminator": "MinimumRamCoreRatioHardwareConstraint",
             "minimumMemoryGBCoreRatio": round(self.memory_mb / 1024 / self.cores, 2)},
        ]
        found.append({"discriminator": "GpuHardwareConstraint" if self.gpu or lenient else "NoGpuHardwareConstraint"})
        return found


def parse(constraints: Any, field: str = "hardwareConstraints") -> list[dict[str, Any]]:
    """The request's constraints, checked for shape: a list of objects with a known discriminator
    and, where it takes one, a number."""
    if constraints is None:
        return []
    if not isinstance(constraints, list):
        raise RequestError(400, f"{field}: expected a list of constraints")
    for i, item in enumerate(constraints):
        if not isinstance(item, dict) or not isinstance(item.get("discriminator"), str):
            raise RequestError(400, f"{field}[{i}]: expected an object with a discriminator")
        kind = item["discriminator"]
        if kind not in KNOWN:
            raise RequestError(400, f"{field}[{i}]: unknown discriminator {kind[:80]!r} (known: {', '.join(KNOWN)})")
        if kind in NUMBERS:
            value = item.get(NUMBERS[kind])
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise RequestError(400, f"{field}[{i}].{NUMBERS[kind]}: expected a non-negative number")
    return constraints


def unmet(constraints: list[dict[str, Any]], machine: Machine, gpu_profile: bool = False) -> list[str]:
    """Why this machine does not meet the constraints (one phrase each); [] when it does.  A GPU
    profile asks for a GPU as the GpuHardwareConstraint does."""
    problems = []
    wanted = [c["discriminator"] for c in constraints]
    if (gpu_profile or "GpuHardwareConstraint" in wanted) and not machine.gpu:
        problems.append("GpuHardwareConstraint: this machine has no NVIDIA GPU")
    ratio = machine.memory_mb / 1024 / machine.cores
    for c in constraints:
        kind = c["discriminator"]
        value = c.get(NUMBERS.get(kind, ""), 0)
        if kind == "MinimumCoreHardwareConstraint" and value > machine.cores:
            problems.append(f"{kind}: {value} cores wanted, this machine has {machine.cores}")
        elif kind == "MinimumRamHardwareConstraint" and value > machine.memory_mb:
            problems.append(f"{kind}: {value} MB wanted, this machine has {machine.memory_mb} MB")
        elif kind == "MinimumRamCoreRatioHardwareConstraint" and value > ratio:
            problems.append(f"{kind}: {value} GB per core wanted, this machine has {ratio:.2f}")
        elif kind == "MaximumRamCoreRatioHardwareConstraint" and value < ratio:
            problems.append(f"{kind}: at most {value} GB per core wanted, this machine has {ratio:.2f}")
    return problems


def unchecked(constraints: list[dict[str, Any]]) -> list[str]:
    """The constraints the emulator cannot check (accepted, and said in the instance's output)."""
    return [c["discriminator"] for c in constraints if c["discriminator"] in NOT_CHECKED]


def host_has_gpu() -> bool:
    """An NVIDIA GPU this host can hand to an instance (checked without importing torch)."""
    return Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").is_dir()


def gpu_count() -> int:
    """The NVIDIA GPUs of this host (its /dev/nvidiaN devices; checked without importing torch)."""
    return sum(1 for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit())
