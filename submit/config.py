"""Every setting the submitter reads from the environment, one place, one line each.

Nothing here is a secret holder: the Qarnot token is read where the connection is made
(`submit.backends.qarnot`) and handed straight to the SDK.
"""

from __future__ import annotations

import os
from pathlib import Path


def _xdg(var: str, default: str) -> Path:
    return Path(os.environ.get(var) or Path.home() / default).expanduser()


def config_dir() -> Path:
    """~/.config/qtrain: the emulator token (0600), the Qarnot SDK config file."""
    return Path(os.environ.get("QTRAIN_CONFIG_DIR") or _xdg("XDG_CONFIG_HOME", ".config") / "qtrain")


def state_dir() -> Path:
    """~/.local/state/qtrain: the emulator daemon's state file, log and task folders."""
    return Path(os.environ.get("QTRAIN_STATE_DIR") or _xdg("XDG_STATE_HOME", ".local/state") / "qtrain")


def store_dir(option: str | Path | None = None) -> Path:
    """The results store: --store, else QTRAIN_STORE, else ~/.local/share/qtrain/store."""
    if option:
        return Path(option).expanduser()
    return Path(os.environ.get("QTRAIN_STORE") or _xdg("XDG_DATA_HOME", ".local/share") / "qtrain" / "store")


def qarnot_config_file() -> Path:
    """The Qarnot SDK's INI file ([cluster] url, [client] token, [storage] url)."""
    return Path(os.environ.get("QARNOT_CONFIG_FILE") or config_dir() / "qarnot.conf").expanduser()


# Qarnot profiles behind `resources.profile: cpu|gpu`.
PROFILE_CPU = os.environ.get("QTRAIN_PROFILE_CPU", "docker-batch")
PROFILE_GPU = os.environ.get("QTRAIN_PROFILE_GPU", "docker-nvidia-batch")
# The bucket that holds datasets (content-addressed) and job files.
DATA_BUCKET = os.environ.get("QTRAIN_DATA_BUCKET", "qtrain-data")
# How long Qarnot may cache a dataset on its compute nodes (seconds).
RESOURCE_CACHE_TTL = int(os.environ.get("QTRAIN_RESOURCE_CACHE_TTL", str(7 * 24 * 3600)))
# Seconds between checkpoint snapshots sent back while a task runs (0: none).
SNAPSHOT_INTERVAL = int(os.environ.get("QTRAIN_SNAPSHOT_INTERVAL", "300"))
# Seconds between two polls of a task's state and output while following it.
POLL_SECONDS = float(os.environ.get("QTRAIN_POLL_SECONDS", "0"))  # 0: per backend
# How long `qtrain run` keeps following through a lost connection (seconds) before it stops
# following (the task goes on; `qtrain fetch RUN` picks it up).
FOLLOW_RETRY_SECONDS = float(os.environ.get("QTRAIN_FOLLOW_RETRY_SECONDS", "120"))
# The emulator's executor when none is asked for: docker | process (default: docker where an
# engine answers and the runner image exists, else process).
EMULATOR_EXECUTOR = os.environ.get("QTRAIN_EMULATOR_EXECUTOR") or None
# The emulator's S3 storage: seaweedfs (on disk, checks the Qarnot identity) or moto (in memory,
# any credentials, nothing kept).  Default: seaweedfs where its `weed` is installed, else moto.
EMULATOR_STORAGE = os.environ.get("QTRAIN_EMULATOR_STORAGE") or None
# what the emulator does with a task whose hardware constraints its machine does not meet:
# wait (queued, with an errors entry), strict (refused at submission), lenient (run anyway)
EMULATOR_HARDWARE = os.environ.get("QTRAIN_EMULATOR_HARDWARE") or "wait"


def mlflow_export_enabled() -> bool:
    """QTRAIN_MLFLOW_EXPORT=1: every retrieved run is exported to MLflow (MLFLOW_TRACKING_URI)."""
    return os.environ.get("QTRAIN_MLFLOW_EXPORT", "").strip().lower() in ("1", "true", "yes", "on")


def store_lock_seconds() -> float:
    """QTRAIN_STORE_LOCK_SECONDS: how long a command waits for another process's write to the
    results store's index (default 60)."""
    return float(os.environ.get("QTRAIN_STORE_LOCK_SECONDS") or 60)
