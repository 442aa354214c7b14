"""The one reader of settings: typed, read when used, a bad value one line naming the variable (exit
2 through the CLI, nothing sent), secrets never echoed, and the task's environment built and read
under one set of names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs import settings
from jobs.settings import SettingError, TaskVar


def test_a_bad_value_is_one_line_naming_the_variable_and_its_meaning(monkeypatch):
    monkeypatch.setenv("QTRAIN_STORE_LOCK_SECONDS", "abc")
    with pytest.raises(SettingError) as raised:
        settings.submission()
    line = raised.value.one_line()
    assert line.startswith("QTRAIN_STORE_LOCK_SECONDS='abc': ") and "\n" not in line
    assert "fix or unset QTRAIN_STORE_LOCK_SECONDS" in line and "results store" in line
    monkeypatch.setenv("QTRAIN_STORE_LOCK_SECONDS", "-1")
    with pytest.raises(SettingError, match="QTRAIN_STORE_LOCK_SECONDS='-1': .*greater than or equal to 0"):
        settings.submission()


def test_values_are_read_when_asked_for_and_an_empty_one_counts_as_unset(monkeypatch):
    assert settings.submission().profile_cpu == "docker-batch"
    monkeypatch.setenv("QTRAIN_PROFILE_CPU", "docker-batch-cheap")  # after import: still seen
    assert settings.submission().profile_cpu == "docker-batch-cheap"
    monkeypatch.setenv("QTRAIN_PROFILE_CPU", "  ")
    assert settings.submission().profile_cpu == "docker-batch"
    monkeypatch.setenv("QTRAIN_MLFLOW_EXPORT", "yes")
    assert settings.submission().mlflow_export is True


def test_choices_and_limits_are_checked_by_name(monkeypatch):
    monkeypatch.setenv("QTRAIN_EMULATOR_HARDWARE", "maybe")
    with pytest.raises(SettingError, match="QTRAIN_EMULATOR_HARDWARE='maybe': Input should be 'wait', 'strict' or 'lenient'"):
        settings.emulator()
    monkeypatch.setenv("QTRAIN_EMULATOR_HARDWARE", "strict")
    monkeypatch.setenv("QTRAIN_EMULATOR_LIMITS", "max_tasks=3, max_running_tasks=2")
    given = settings.emulator()
    assert given.hardware == "strict" and given.limits == {"max_tasks": 3, "max_running_tasks": 2}
    monkeypatch.setenv("QTRAIN_EMULATOR_LIMITS", "max_tasks=0")
    with pytest.raises(SettingError, match="'max_tasks=0' is not NAME=POSITIVE_NUMBER"):
        settings.emulator()


def test_an_unknown_limit_is_named_with_the_limits_there_are(monkeypatch):
    from submit.emulator.fields import Limits

    monkeypatch.setenv("QTRAIN_EMULATOR_LIMITS", "max_taks=3")
    with pytest.raises(SettingError, match="max_taks is not a limit.*max_tasks"):
        Limits.configured()


def test_a_secret_is_never_echoed(monkeypatch, qtrain):
    monkeypatch.setenv("QARNOT_CLIENT_TOKEN", "sekrit-token-value")
    monkeypatch.setenv("QTRAIN_REGISTRY_PASSWORD", "sekrit-password")
    assert settings.qarnot().token() == "sekrit-token-value"
    assert "sekrit" not in repr(settings.qarnot())
    shown = qtrain("settings")
    assert shown.code == 0 and "sekrit" not in shown.out + shown.err
    rows = {r["name"]: r for r in json.loads(qtrain("settings", "--json").out)}
    assert rows["QARNOT_CLIENT_TOKEN"]["value"] == "(set)" and rows["QARNOT_CLIENT_TOKEN"]["secret"]
    assert rows["QTRAIN_PROFILE_CPU"]["value"] is None and rows["QTRAIN_PROFILE_CPU"]["default"] == "docker-batch"


def test_qtrain_settings_marks_a_bad_value(monkeypatch, qtrain):
    monkeypatch.setenv("QTRAIN_POLL_SECONDS", "often")
    rows = {r["name"]: r for r in json.loads(qtrain("settings", "--json").out)}
    assert rows["QTRAIN_POLL_SECONDS"]["value"] == "often"
    assert rows["QTRAIN_POLL_SECONDS"]["problem"].startswith("QTRAIN_POLL_SECONDS='often'")
    assert rows["QTRAIN_STORE_LOCK_SECONDS"]["problem"] is None


@pytest.mark.parametrize("variable, args", [
    ("QTRAIN_STORE_LOCK_SECONDS", ("results", "list", "--no-refresh")),
    ("QTRAIN_SNAPSHOT_INTERVAL", ("run", "penguins", "--dry-run")),
    ("QTRAIN_MAX_TRIALS", ("check", "grid-search")),
])
def test_a_bad_setting_is_one_line_and_exit_2_through_the_cli(monkeypatch, qtrain, tmp_path, variable, args):
    monkeypatch.setenv(variable, "abc")
    result = qtrain(*args)
    assert result.code == 2, result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {variable}='abc': ") and "Traceback" not in result.err


def test_the_task_environment_is_built_and_read_under_one_set_of_names():
    env = settings.task_environment({"QTRAIN_RUN_ID": "r1", "MY": "constant"}, folder="/job", instance_id=3,
                                    instance_count=6, task_uuid="u", task_name="n", threads=2,
                                    execution="docker", image_digest="sha256:abc")
    assert env["MY"] == "constant" and env[TaskVar.FRAME_ID] == "3" and env[TaskVar.MKL_THREADS] == "2"
    read = settings.task(env)
    assert (read.resources, read.results_dir(), read.instance_id, read.instance_count) == \
        (Path("/job"), Path("/job"), 3, 6)
    assert (read.run_id, read.execution, read.image_digest, read.threads) == ("r1", "docker", "sha256:abc", 2)
    # no image ran (the process executor): a digest among the constants is not claimed
    bare = settings.task_environment({TaskVar.IMAGE_DIGEST: "sha256:stale"}, folder="/w", instance_id=0,
                                     instance_count=1, task_uuid="u", task_name="n", threads=1)
    assert TaskVar.IMAGE_DIGEST not in bare


def test_openmps_own_variable_left_to_the_runner_when_openmp_would_not_take_it():
    assert settings.task({"OMP_NUM_THREADS": "four"}).threads is None
    assert settings.task({"OMP_NUM_THREADS": "0"}).threads is None
    assert settings.task({"OMP_NUM_THREADS": "4"}).threads == 4


def test_every_variable_is_described_once():
    names = [r["name"] for r in settings.describe()]
    assert len(names) == len(set(names)) and all(r["meaning"] for r in settings.describe())
