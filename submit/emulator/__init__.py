"""A local Qarnot-compatible emulator: the Qarnot REST API the `qarnot` SDK speaks, plus S3 storage
(moto's server mode), in one process on 127.0.0.1.

    api.py        the HTTP API (routes, auth, JSON), in front of
    tasks.py      tasks: states, instances, logs, resources in, results out
    executors.py  how an instance runs: `process` (sh -c DOCKER_CMD) or `docker`
    daemon.py     `qtrain emulator start|stop|status|serve`: the detached daemon and its state file

The Qarnot backend does not know it talks to the emulator: only the URLs and the token differ.
"""
