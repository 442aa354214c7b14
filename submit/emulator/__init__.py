"""A local Qarnot-compatible emulator: the Qarnot REST API the `qarnot` SDK speaks, plus S3 storage
(SeaweedFS on disk, with the Qarnot identity), on 127.0.0.1; tasks and buckets outlive the daemon.

    api.py        the HTTP API (routes, auth, JSON), in front of
    tasks.py      tasks: states, instances, logs, resources in, results out
    state.py      the tasks' durable state (SQLite), read back at start
    wire.py       the wire format: a task request parsed, a task's JSON
    storage.py    the emulator's own S3 client and resource cache
    s3server.py   the S3 server (`weed`) and the front the SDK talks to
    executors.py  how an instance runs: `process` (sh -c DOCKER_CMD) or `docker`
    daemon.py     `qtrain emulator start|stop|status|reset|serve`: the detached daemon and its state file

The Qarnot backend does not know it talks to the emulator: only the URLs and the token differ.
"""
