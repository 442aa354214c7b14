"""The base of every job section, and a script job's section (`script:` in place of `model:`)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Spec(BaseModel):
    """Base for every section: unknown keys are an error, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


METRIC_NAME = re.compile(r"^((train|val|test)\.)?[A-Za-z_][A-Za-z0-9_]*$")


class ScriptSpec(Spec):
    """Your own training script, run in the task's image with qtrain's plumbing: its data, output
    and checkpoint folders, trial arguments, threads and device come in environment variables
    (`jobs.settings.TaskVar`), and `runner.script` reports epochs, metrics, predictions and models;
    or, with no edit to the script, `metrics` reads them from its output (`runner.scriptlogs`)."""

    # The script, relative to the job file.
    path: str = Field(min_length=1)
    # The folder that travels with it (its modules, configs): default the script's own folder,
    # less .git, __pycache__, virtual environments, the job's data and what .qtrainignore names.
    source: str | None = None
    # Its command-line arguments: {name: value} -> --name value (true: --name alone; false or
    # null: left out; a list: --name a b), sweeps varying them as script.args.NAME; or a list of
    # words, the command line as it is (`qtrain run train.py -- ARGS`).
    args: dict[str, Any] | list[str | int | float] = Field(default_factory=dict)
    # Metrics read from its output with no edit to the script, as SageMaker's metric_definitions:
    # {name: regex}, the value the group named `value` (else the first group), an `epoch` group
    # saying which epoch.  `test.loss`, `val.accuracy`: a split's final metric (its last match);
    # any other name (`val_accuracy`, `train_loss`): a per-epoch column of the history, shown live.
    metrics: dict[str, str] = Field(default_factory=dict)

    @field_validator("args")
    @classmethod
    def _args(cls, value: Any) -> Any:
        return [str(v) for v in value] if isinstance(value, list) else value

    @field_validator("metrics")
    @classmethod
    def _metrics(cls, value: dict[str, str]) -> dict[str, str]:
        for name, pattern in value.items():
            if not METRIC_NAME.match(name):
                raise ValueError(f"{name!r}: name a metric like val_accuracy (a curve) or test.loss (a split's "
                                 f"final value): letters, digits and _, after train., val. or test.")
            try:
                compiled = re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"{name}: {pattern!r} is not a regular expression ({exc})") from None
            if not compiled.groups:
                raise ValueError(f"{name}: {pattern!r} has no group to take the value from: put the number "
                                 f"in parentheses, e.g. 'loss: ([0-9.]+)'")
        return value
