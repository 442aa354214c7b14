"""The local backend: the Qarnot backend's code, connected to the local emulator daemon.

Nothing here talks to the emulator but through the `qarnot` SDK, exactly as on Qarnot: this
class only starts the daemon (on first use) and hands the SDK connection to `QarnotBackend`.
"""

from __future__ import annotations

import os

from submit.backends.base import BackendError, BackendUnreachable, Pricing
from submit.backends.errors import translated
from submit.backends.qarnot import QarnotBackend
from submit.emulator import daemon
from submit.emulator.processes import pid_alive


class LocalBackend(QarnotBackend):
    """The local Qarnot emulator, started on first use (`qtrain emulator start`)."""

    name = "local"
    footprint_source = "emulated"  # the emulator's model of cost and carbon, never Qarnot's figures
    poll_seconds = 0.1  # three loopback requests of ~2 ms each: a task's end is seen 0.05 s sooner on average
    token_hint = "the emulator's token is in its config folder: qtrain emulator status shows where"
    unreachable_hint = "qtrain emulator status says which part does not answer, and what to do"

    def __init__(self, executor: str | None = None, start: bool = True) -> None:
        super().__init__(connect=self._connect_emulator)
        self.executor = executor
        self.start = start  # False: only a daemon already running (reading, not submitting)
        self.endpoint = None

    def describe(self) -> str:
        return "the local Qarnot emulator"

    def check_image(self, image: str) -> None:
        """The emulator runs local images (docker executor) or none at all (process)."""

    # a bound on an instance's start, by executor (measured here: a fresh container and its
    # imports ~3.7 s; a fork before the fork server has imported ~2.5 s, after it 0.1 s)
    STARTUP_SECONDS = {"docker": 8.0, "process": 4.0}

    def pricing(self, gpu: bool) -> Pricing:
        """The emulator's instances share this machine's cores, at its own emulated rates."""
        self.conn  # noqa: B018 - connecting finds (or starts) the daemon, and so its executor
        executor = self.endpoint.executor if self.endpoint else "docker"
        return Pricing(self.describe(), "local", gpu, shared_cores=os.cpu_count() or 1, emulated=True,
                       startup_seconds=self.STARTUP_SECONDS.get(executor, 8.0))

    def gpus_per_node(self) -> int:
        """The emulator's one node is this machine: its GPUs."""
        from submit.emulator.hardware import gpu_count

        return gpu_count()

    @translated
    def check_capacity(self, instances: int, gpu: bool, why: str = "one per sweep trial") -> None:
        super().check_capacity(instances, gpu, why)
        if gpu and not self._offers_gpu():
            raise BackendError("the job asks for a GPU and the local emulator's machine has none (its "
                               "hardware constraints offer no GpuHardwareConstraint)",
                               hint="run it with --profile cpu; or restart the emulator with "
                                    "QTRAIN_EMULATOR_HARDWARE=lenient to run GPU jobs on the CPU")

    def _offers_gpu(self) -> bool:
        return any(c.to_json().get("discriminator") == "GpuHardwareConstraint"
                   for c in self.conn.all_hardware_constraints())

    def runs_images(self) -> bool:
        self.conn  # noqa: B018 - connecting finds (or starts) the daemon and its executor
        return self.endpoint is not None and self.endpoint.executor == "docker"

    def image_with(self, reqs, image: str, log) -> str:
        """The docker executor runs the runner image plus the job's packages, built here on first
        use (cached by the requirements' hash); the process executor, the runner's own interpreter
        with their folder on the path."""
        if not self.runs_images():
            return image
        from submit.image import build_derived

        return build_derived(reqs, image, log).tag

    def executor_name(self) -> str:
        self.conn  # noqa: B018
        return f"emulator/{self.endpoint.executor}" if self.endpoint else "emulator"

    def unreachable(self, error):
        """The daemon that answered is gone (killed, stopped): no use waiting for it.  Its running
        task ends as Failure with its uploaded files when an emulator starts again."""
        if self.endpoint is None or pid_alive(self.endpoint.pid):
            return error
        return BackendError(f"the local emulator stopped (its daemon, pid {self.endpoint.pid}, is gone)",
                            hint="qtrain status RUN starts it again and retrieves what the task uploaded; "
                                 "qtrain resume RUN continues from its last checkpoint")

    def _connect_emulator(self):
        import qarnot

        if not self.start:
            self.endpoint = daemon.running()
            if self.endpoint is None:
                raise BackendUnreachable("the local emulator is not running",
                                         hint="qtrain emulator start, then qtrain fetch RUN")
        else:
            self.endpoint, _ = daemon.start(self.executor)
        self.cluster_url = self.endpoint.url
        return qarnot.connection.Connection(client_token=self.endpoint.token,
                                            cluster_url=self.endpoint.url,
                                            storage_url=self.endpoint.s3_url)
