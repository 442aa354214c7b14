"""A run's life on a backend, in the order it happens:

    checks.py      the check's verdict, remembered for the same job, data and code
    package.py     what a task ships: the job's files by content, and job.json
    estimate.py    how long, how much, how much energy: before anything is sent
    submission.py  check -> package -> estimate -> record -> upload -> submit; `recover`
    follow.py      the task's states and the runner's lines, live
    retrieve.py    the results into the store; `refresh` of pending runs; `cancel`
    resume.py      a new task that continues a run from its checkpoints
    summary.py     what `run`, `status` and `fetch` say of a run (`--json`, failures)

The run is in the store from the moment it is submitted, so a `qtrain run` that is killed loses
nothing: `qtrain fetch RUN` picks it up from any shell.
"""
