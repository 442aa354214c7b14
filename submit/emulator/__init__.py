"""A local Qarnot-compatible emulator: the Qarnot REST API the `qarnot` SDK speaks, plus S3 storage
(SeaweedFS on disk, with the Qarnot identity), on 127.0.0.1; tasks and buckets outlive the daemon.

From the leaves up (a module imports only those above it in this list):

    fields.py      what a request may hold: RequestError, field parsers, dates, ranges, Limits
    commands.py    DOCKER_CMD's grammar: words, ${NAME}, `python -m` detection
    processes.py   process housekeeping: pids, group kills, /proc scans, prctl, labelled containers
    hardware.py    hardware constraints checked against this machine
    wire.py        the wire format: a task request parsed (TaskBody), a task's JSON (task_json)
    instances.py   an instance: its output buffers and state; what an executor runs and returns
    s3server.py    the S3 server (`weed`) and the front the SDK talks to;  storage.py  its client
    transfers.py   a task's files: resources staged in, results and snapshots uploaded
    tasks.py       a task's life: states, instances, dependencies, hardware, commit, snapshots
    footprint.py   what a task cost and emitted (an emulated model)
    state.py       the tasks' durable state (SQLite), read back at start
    manager.py     the tasks, kept: submit, list, delete, restore after a restart
    pools.py       pools;  filters.py  the SDK's tag and field filters
    process.py, docker.py, executors.py   how an instance runs: `process` or `docker`
    api.py         the HTTP API (routes, auth, JSON)
    supervisor.py  the daemon's keeper process;  daemon.py  `qtrain emulator start|stop|status|serve`

The Qarnot backend does not know it talks to the emulator: only the URLs and the token differ.
"""
