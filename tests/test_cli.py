"""The public surface: every command has --help, and the package exports what it documents."""

from __future__ import annotations

import pytest

import jobs


@pytest.mark.parametrize("command", [
    "check", "train", "predict", "catalog", "run", "status", "fetch", "logs", "cancel", "profiles",
    "results list", "results show", "results compare", "emulator start", "emulator stop",
    "emulator status", "emulator serve"])
def test_every_command_explains_itself(qtrain, command):
    result = qtrain(*command.split(), "--help")
    assert result.code == 0
    assert "Usage: qtrain " + command in result.out


def test_catalog_lists_every_seed_workload(qtrain):
    result = qtrain("catalog")
    assert result.code == 0
    for name in ("penguins", "rain-australia", "weather-sunshine", "mnist-cnn", "digits-cnn",
                 "circles", "dollar-street-cnn", "transfer", "grid-search", "mnist-mlp"):
        assert name in result.out


def test_jobs_exports():
    for name in jobs.__all__:
        assert hasattr(jobs, name)


def test_unknown_command_is_a_usage_error(qtrain):
    result = qtrain("frobnicate")
    assert result.code == 2 and "No such command" in result.err


def test_version(qtrain):
    from runner import __version__

    result = qtrain("--version")
    assert result.code == 0 and result.out.strip() == f"qtrain {__version__}"
