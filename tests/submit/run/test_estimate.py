"""Before a run: the estimate of its time, cost and energy from the check's timed step and the
price table, and the refusals (--max-cost, the credits left) that come before anything is sent."""

from __future__ import annotations

import json

import pytest
from qarnot.exceptions import NotEnoughCreditsException

from submit.backends.base import Pricing
from submit.backends.qarnot import QarnotBackend
from submit.run.estimate import MARGIN, REPORT_SECONDS, Estimate, estimate, prices
from submit.store import Store
from tests.helpers import foreground_emulator


def test_max_cost_below_the_estimate_sends_nothing(qtrain, store_dir, csv_job):
    estimate_only = qtrain("run", csv_job, "--estimate", "--json", "--store", store_dir)
    assert estimate_only.code == 0, estimate_only.err
    est = estimate_only.json()
    assert est["estimate"]["cost_eur"] > 0 and est["credits_left"] > 0 and est["backend"] == "local"
    assert Store(store_dir).list() == []  # an estimate sends and records nothing
    refused = qtrain("run", csv_job, "--max-cost", "0", "--store", store_dir)
    assert refused.code == 2 and "--max-cost" in refused.err and "Traceback" not in refused.err
    assert Store(store_dir).list() == []


def test_the_price_table_is_read_and_a_bad_one_is_one_line(tmp_path, monkeypatch, qtrain, csv_job):
    table = tmp_path / "prices.toml"
    monkeypatch.setenv("QTRAIN_PRICES", str(table))
    table.write_text("[cpu]\neur_per_core_hour = 2.5\ncores = 4\n")
    assert prices()["cpu"]["eur_per_core_hour"] == 2.5 and prices()["cpu"]["cores"] == 4
    table.write_text("[cpu]\neur_per_core_hour = 'cheap'\n")
    bad = qtrain("run", csv_job, "--estimate", "--backend", "local")
    assert bad.code == 2 and "prices.toml" in bad.err and "eur_per_core_hour" in bad.err


def test_an_estimate_scales_with_epochs_and_trials():
    from jobs.load import load_job

    loaded = load_job("penguins")
    report = {"splits": {"train": 1000, "val": 200}, "input_shape": [6],
              "models": [{"step_seconds": 0.001, "step_rows": 32}]}
    cpu = Pricing("Qarnot", "cpu")
    one = estimate(loaded, report, cpu)
    assert isinstance(one, Estimate) and one.cost_eur > 0 and one.energy_wh > 0
    longer = estimate(load_job("penguins", overrides=["train.epochs=300"]), report, cpu)
    startup = prices()["cpu"]["startup_seconds"]

    def training(e: Estimate) -> float:  # the part that scales with epochs
        return (e.wall_seconds - startup) / MARGIN - REPORT_SECONDS

    assert training(longer) == pytest.approx(2 * training(one), rel=0.01)
    assert json.loads(json.dumps(one.record()))["where"] == "cpu"


def test_too_few_credits_is_one_line_before_anything_is_sent(tmp_path, wait_task):
    """The estimate over the credits left is refused by qtrain; the API's own 402 (a task past the
    credits) is translated to the same kind of line."""
    from jobs.errors import QtrainError
    from submit.backends.errors import translate
    from submit.run.estimate import refuse_over

    est = Estimate(wall_seconds=10, instance_seconds=10, cost_eur=0.5, energy_wh=1, trials=0, where="cpu")
    with pytest.raises(QtrainError, match="credits left") as refused:
        refuse_over(est, None, 0.1)
    assert "\n" not in refused.value.one_line()
    refuse_over(est, 1.0, 1.0)  # under both: nothing to say
    with foreground_emulator(tmp_path, QTRAIN_EMULATOR_CREDITS="0") as conn:
        task = conn.create_task("no credits", "docker-batch", 1)
        task.constants["DOCKER_CMD"] = "true"
        with pytest.raises(NotEnoughCreditsException) as raised:
            task.submit()
        backend = QarnotBackend(connect=lambda: conn)
        assert backend.credits_left() == 0
        error = translate(raised.value, backend)
        assert error is not None and "not enough credits" in error.one_line()


@pytest.mark.parametrize("job, sets", [
    ("penguins", []),
    ("digits-cnn", ["train.epochs=3"]),
    ("grid-search", ["train.epochs=2", "sweep={model.n_layers: [1, 2], model.dropout: [0.2, 0.5]}"]),
])
def test_the_estimate_bounds_what_the_emulator_charges(emulator, qtrain, tmp_path, job, sets):
    """"At most" means it: the estimate made before the run is never under the emulated cost of
    the run (instances x cores x wall time, start-up, upload and results included)."""
    args = [a for s in sets for a in ("--set", s)]
    result = qtrain("run", job, *args, "--json", "--store", tmp_path / "store")
    assert result.code == 0, result.err
    footprint = result.json()["footprint"]
    estimate, actual = footprint["estimate"], footprint["cost_eur"]
    assert actual is not None and actual > 0
    assert estimate["cost_eur"] >= actual, (estimate, actual)
    assert estimate["wall_seconds"] >= 0 and "at most" in result.err
