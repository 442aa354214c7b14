"""What a run cost and emitted: the emulator answers Qarnot's credits and carbon endpoints (an
emulated model), the real SDK reads them, qtrain keeps them per run, shows them, compares them,
and never shows an unknown figure as zero (the estimate before a run: tests/submit/run/test_estimate.py)."""

from __future__ import annotations


import pytest

from submit.backends.qarnot import QarnotBackend
from submit.backends.footprint import FIELDS, from_sdk, show
from tests.helpers import foreground_emulator, sh


def test_the_sdk_reads_credits_and_carbon_facts_from_the_emulator(conn, wait_task):
    before = conn.credits().amount_in_euros
    task = conn.create_task("footprint", "docker-batch", 2)
    task.constants["DOCKER_CMD"] = sh("sleep 1")
    task.submit()
    assert wait_task(task) == "Success"
    credits = task.credits()
    facts = task.carbon_facts()
    assert credits.amount_in_euros > 0
    # every documented field, and the arithmetic between them
    assert facts.energy_consumption_Wh > 0 and facts.energy_it_Wh == facts.energy_consumption_Wh
    assert facts.carbon_footprint_gC02eq > 0 and facts.PUE == 1.0 and facts.ERF == 0.0
    assert facts.equivalent_dc_carbon_footprint_gC02eq == pytest.approx(1.5 * facts.carbon_footprint_gC02eq, rel=1e-3)
    assert facts.saved_carbon_footprint_compute_heat_gC02eq == pytest.approx(
        facts.equivalent_dc_carbon_footprint_gC02eq - facts.carbon_footprint_gC02eq, rel=1e-3)
    assert facts.saved_carbon_footprint_percent == pytest.approx(100 / 3, rel=1e-2)
    assert "datacenter" in facts.equivalent_datacenter_name
    assert task.carbon_facts("my-dc").equivalent_datacenter_name == "my-dc"  # comparisonDatacenter echoed
    # the account's credits went down by (at least) what the task cost
    assert conn.credits().amount_in_euros <= before - credits.amount_in_euros + 1e-6


def test_a_run_keeps_its_figures_and_shows_them(qtrain, store_dir, csv_job):
    data = qtrain("run", csv_job, "--json", "--store", store_dir).json()
    fp = data["footprint"]
    assert fp["source"] == "emulated" and fp["cost_eur"] > 0 and fp["energy_wh"] > 0 and fp["co2_g"] > 0
    assert fp["co2_saved_g"] > 0 and fp["estimate"]["cost_eur"] > 0 and fp["estimate"]["wall_seconds"] > 0
    other = qtrain("run", csv_job, "--set", "train.epochs=2", "--json", "--store", store_dir).json()
    shown = qtrain("results", "show", data["run_id"], "--json", "--store", store_dir).json()
    assert shown["footprint"]["cost_eur"] == fp["cost_eur"]
    text = qtrain("results", "show", data["run_id"], "--store", store_dir)
    assert "emulated" in text.out and "estimated before" in text.out
    rows = qtrain("results", "list", "--json", "--no-refresh", "--store", store_dir).json()
    assert {r["run_id"]: r["footprint"]["cost_eur"] for r in rows}[data["run_id"]] == fp["cost_eur"]
    cheap = qtrain("results", "list", "--json", "--no-refresh", "--where", f"cost_eur<{fp['cost_eur'] * 10}",
                   "--sort", "energy_wh", "--store", store_dir).json()
    assert {r["run_id"] for r in cheap} >= {data["run_id"]}
    listed = qtrain("results", "list", "--footprint", "--no-refresh", "--store", store_dir)
    assert listed.code == 0 and "cost_eur" in listed.out and "emulated" in listed.out
    compared = qtrain("results", "compare", data["run_id"], other["run_id"], "--json", "--store", store_dir).json()
    for name in FIELDS:
        assert name in compared["metrics"], name
    assert compared["best"]["cost_eur"], "the cheaper run is marked"


def test_a_cluster_without_the_services_gives_unknown(tmp_path, wait_task):
    """A cluster that 404s on credits and carbon: every figure unknown, nothing fails."""
    with foreground_emulator(tmp_path, QTRAIN_EMULATOR_FOOTPRINT="0") as conn:
        task = conn.create_task("old cluster", "docker-batch", 1)
        task.constants["DOCKER_CMD"] = "true"
        task.submit()
        assert wait_task(task) == "Success"
        backend = QarnotBackend(connect=lambda: conn)
        footprint = backend.footprint(task.uuid)
        assert all(footprint[k] is None for k in FIELDS) and footprint["source"] == "qarnot"
        assert backend.credits_left() is None


def test_unknown_is_never_zero():
    fp = from_sdk(None, None, "qarnot")
    assert all(fp[k] is None for k in FIELDS)
    assert show(None, "EUR") == "unknown" and show(0.0, "EUR") == "0 EUR"
