"""The emulator driven by the real `qarnot` SDK over HTTP, the way a Qarnot user's script drives
Qarnot: buckets on its S3 (moto server), tasks through its API, results back."""

from __future__ import annotations

import hashlib
import os
import stat
import time
import uuid

import pytest
import qarnot
import requests
from qarnot.advanced_bucket import BucketPrefixFiltering, PrefixResourcesTransformation
from qarnot.exceptions import MissingTaskException, UnauthorizedException

from submit.emulator.hardware import host_has_gpu
from tests.helpers import sh


def bucket_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def test_two_instances_share_a_20_mib_resource_and_return_their_results(conn, wait_task, tmp_path):
    payload = os.urandom(20 << 20)
    digest = hashlib.sha256(payload).hexdigest()
    src = tmp_path / "blob.bin"
    src.write_bytes(payload)
    res = conn.create_bucket(bucket_name("res"))
    res.add_file(str(src), "datasets/v1/blob.bin")  # multipart upload through the SDK
    res.add_string("not for this task", "other/secret.txt")
    out = conn.create_bucket(bucket_name("out"))

    task = conn.create_task("two-instances", "docker-batch", 2)
    task.constants["GREETING"] = "hello"
    task.constants["DOCKER_CMD"] = sh(
        'echo "start ${INSTANCE_ID}"; '
        'sha256sum blob.bin | cut -d" " -f1 > sum-${INSTANCE_ID}.txt; '
        'echo "$GREETING $INSTANCE_ID/$INSTANCE_COUNT" > env-${INSTANCE_ID}.txt; '
        'test "$QARNOT_RESOURCES_DIRECTORY" = "$PWD" && test "$QARNOT_RESULTS_DIRECTORY" = "$PWD"; '
        'ls > ls-${INSTANCE_ID}.txt; echo noise > skip-${INSTANCE_ID}.log; echo "end ${INSTANCE_ID}"')
    task.resources = [res.with_filtering(BucketPrefixFiltering("datasets/v1/"))
                      .with_resource_transformation(PrefixResourcesTransformation("datasets/v1/"))]
    task.results = out
    task.results_whitelist = r"\.txt$"
    task.submit()
    assert wait_task(task) == "Success"

    task.download_results(str(tmp_path / "results"))
    got = tmp_path / "results"
    for i in (0, 1):
        assert (got / f"sum-{i}.txt").read_text().strip() == digest
        assert (got / f"env-{i}.txt").read_text().strip() == f"hello {i}/2"
        listing = (got / f"ls-{i}.txt").read_text().split()
        assert "blob.bin" in listing and "secret.txt" not in listing and "other" not in listing
    assert not list(got.glob("*.log")), "the results whitelist must keep .log files out"
    assert not (got / "blob.bin").exists(), "an untouched resource is not a result"

    stdout = task.stdout()
    assert "0> start 0" in stdout and "1> end 1" in stdout
    assert task.stdout(1).splitlines() == ["start 1", "end 1"]
    assert sorted(c.instance_id for c in task.completed_instances) == [0, 1]
    assert all(c.state == "Success" for c in task.completed_instances)
    assert task.creation_date is not None and task.errors == []


def test_fresh_stdout_returns_only_what_is_new(conn, wait_task):
    task = conn.create_task("fresh", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = sh("echo one; sleep 1; echo two")
    task.submit()
    wait_task(task, until=("FullyExecuting", "Success"))
    deadline = time.monotonic() + 10
    first = ""
    while "one" not in first and time.monotonic() < deadline:
        first += task.fresh_stdout()
        time.sleep(0.05)
    assert first.strip() == "one"
    wait_task(task)
    assert task.fresh_stdout().strip() == "two"
    assert task.fresh_stdout() == ""
    assert task.stdout().split() == ["one", "two"]


def test_a_non_zero_exit_is_a_failure_with_the_error_and_stderr(conn, wait_task):
    task = conn.create_task("fails", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = sh("echo 'something broke' >&2; exit 3")
    task.results = conn.create_bucket(bucket_name("out"))
    task.submit()
    assert wait_task(task) == "Failure"
    assert any("status 3" in e.message for e in task.errors)
    assert "something broke" in task.stderr()
    assert task.completed_instances[0].state == "Failure"


def test_abort_stops_the_instance(conn, wait_task, tmp_path):
    task = conn.create_task("aborted", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = sh("echo $$ > pid; echo started; sleep 60")
    task.submit()
    wait_task(task, until=("FullyExecuting",))
    deadline = time.monotonic() + 10
    while "started" not in task.stdout() and time.monotonic() < deadline:
        time.sleep(0.05)
    task.abort()
    # the instance sleeps 60 s: ending within 20 s means the abort stopped it
    assert wait_task(task, timeout=20) == "Cancelled"
    with pytest.raises(UnauthorizedException, match="non running task"):
        task.abort()  # an ended task: Qarnot's 403, as the SDK documents


def test_listing_retrieving_and_deleting_tasks(conn, wait_task):
    tasks = []
    for name in ("listed-a", "listed-b"):
        t = conn.create_task(name, "docker-batch", 1)
        t.constants["DOCKER_CMD"] = "true"
        tasks.append(t)
    conn.submit_tasks(tasks)  # the bulk form of POST /tasks: one answer per task, in order
    assert all(t.uuid for t in tasks) and tasks[0].uuid != tasks[1].uuid
    uuids = {t.uuid for t in tasks}
    assert uuids <= {t.uuid for t in conn.all_tasks()}
    again = conn.retrieve_task(tasks[0].uuid)
    assert again.name == "listed-a" and again.profile == "docker-batch"
    wait_task(again)
    again.delete()
    with pytest.raises(MissingTaskException):
        conn.retrieve_task(tasks[0].uuid)


def test_tasks_are_found_by_tag_as_the_sdk_asks(conn, emulator):
    """`tags` is any of, `tags_intersect` all of (the SDK's paginated advanced filter), one tag a
    bare Equal leaf; `GET /tasks?tag=` the older listing.  How qtrain finds an interrupted
    submission's task, so a filter that is ignored would attach a run to another run's task."""
    mark = uuid.uuid4().hex[:8]
    both, alpha, beta = (f"{mark}-{n}" for n in ("both", "alpha", "beta"))
    made = {}
    for name, tags in ((both, [f"a{mark}", f"b{mark}"]), (alpha, [f"a{mark}"]), (beta, [f"b{mark}"])):
        task = conn.create_task(name, "docker-batch", 1)
        task.constants["DOCKER_CMD"] = "true"
        task.tags = tags
        task.submit()
        made[task.uuid] = name

    def names(**kw):
        return sorted(made[t.uuid] for t in conn.all_tasks(**kw) if t.uuid in made)

    assert names(tags=[f"a{mark}"]) == sorted([both, alpha])
    assert names(tags=[f"a{mark}", f"b{mark}"]) == sorted([both, alpha, beta])
    assert names(tags_intersect=[f"a{mark}", f"b{mark}"]) == [both]
    assert names(tags_intersect=[f"a{mark}", "nobody-has-this"]) == []
    assert names(tags=["nobody-has-this"]) == []
    assert names(summary=False, tags_intersect=[f"b{mark}"]) == sorted([both, beta])
    listed = requests.get(f"{emulator.url}/tasks/summaries?tag=b{mark}",
                          headers={"Authorization": emulator.token}, timeout=5).json()
    assert sorted(made[t["uuid"]] for t in listed) == sorted([both, beta])
    bad = requests.post(f"{emulator.url}/tasks/paginate", json={"filter": {"operator": "Near", "field": "Tags",
                                                                         "value": "x"}},
                        headers={"Authorization": emulator.token}, timeout=5)
    assert bad.status_code == 400 and "Near" in bad.json()["message"]


def test_an_image_that_is_not_a_reference_is_refused_with_the_constant_named(conn):
    """DOCKER_REPO becomes an argument of `docker run`: `--privileged` must never be read as an option."""
    for repo, tag in (("--privileged", "latest"), ("qtrain/runner", "-v/:/host"), ("qtrain/Runner", "1")):
        task = conn.create_task("bad-image", "docker-batch", 1)
        task.constants.update({"DOCKER_REPO": repo, "DOCKER_TAG": tag, "DOCKER_CMD": "true"})
        with pytest.raises(Exception) as refused:
            task.submit()
        assert "DOCKER_REPO/DOCKER_TAG" in str(refused.value) and not task.uuid


def test_snapshots_bring_results_back_while_the_task_runs(conn, wait_task, tmp_path):
    out = conn.create_bucket(bucket_name("snap"))
    task = conn.create_task("snapshots", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = sh("echo partial > progress.txt; sleep 30")
    task.results = out
    task.snapshot(1)
    task.submit()
    wait_task(task, until=("FullyExecuting",))
    deadline = time.monotonic() + 15
    while not any(f.key == "progress.txt" for f in out.list_files()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert task.state in ("FullyExecuting", "PartiallyExecuting"), "the task is still running"
    assert [f.key for f in out.list_files()] == ["progress.txt"]
    task.abort()
    wait_task(task)


def test_profiles_and_the_gpu_profile_without_a_gpu(conn, wait_task):
    """A GPU profile asks for a GPU as the GpuHardwareConstraint does: on a machine without one it
    waits, Submitted, saying why (QTRAIN_EMULATOR_HARDWARE=wait, the default)."""
    assert "docker-batch" in conn.profiles_names()
    assert conn.retrieve_profile("docker-nvidia-batch").name == "docker-nvidia-batch"
    task = conn.create_task("gpu", "docker-nvidia-batch", 1)
    task.constants["DOCKER_CMD"] = "echo ran"
    task.submit()
    if host_has_gpu():
        assert wait_task(task) == "Success"
        return
    deadline = time.monotonic() + 10
    while not task.errors and time.monotonic() < deadline:
        time.sleep(0.1)
        task.update(flushcache=True)
    assert task.state == "Submitted" and "GpuHardwareConstraint" in task.errors[0].message
    task.abort()
    assert wait_task(task) == "Cancelled"


def test_wrong_token_is_refused(emulator):
    with pytest.raises(UnauthorizedException):
        qarnot.connection.Connection(client_token="not-the-token", cluster_url=emulator.url)


def test_unknown_endpoints_answer_4xx_with_a_message(emulator):
    headers = {"Authorization": emulator.token}  # (a 5xx would make the SDK retry for ~30 s)
    r = requests.get(f"{emulator.url}/projects", headers=headers, timeout=5)
    assert r.status_code == 400 and "not supported by the local Qarnot emulator" in r.json()["message"]
    r = requests.get(f"{emulator.url}/tasks/00000000-0000-0000-0000-000000000000", headers=headers, timeout=5)
    assert r.status_code == 404
    r = requests.post(f"{emulator.url}/tasks", data="{nope", headers=headers, timeout=5)
    assert r.status_code == 400


def test_missing_bucket_and_unknown_profile_are_refused(conn):
    from qarnot.bucket import Bucket
    from qarnot.exceptions import MissingBucketException, QarnotGenericException

    task = conn.create_task("no-bucket", "docker-batch", 1)
    task.resources = [Bucket(conn, "does-not-exist-" + uuid.uuid4().hex[:8], create=False)]
    with pytest.raises(MissingBucketException):
        task.submit()
    task = conn.create_task("bad-profile", "no-such-profile", 1)
    with pytest.raises(QarnotGenericException, match="no-such-profile"):
        task.submit()


def test_the_token_file_is_private(emulator):
    from submit.emulator import daemon

    mode = stat.S_IMODE(daemon.token_file().stat().st_mode)
    assert mode == 0o600
    assert daemon.token_file().read_text().strip() == emulator.token


def test_advanced_ranges_give_the_instance_ids(conn, wait_task):
    task = conn.create_task("ranges", "docker-batch", "3-4,7")
    task.constants["DOCKER_CMD"] = sh("echo id=$INSTANCE_ID count=$INSTANCE_COUNT")
    task.submit()
    assert wait_task(task) == "Success"
    assert sorted(task.stdout().splitlines()) == ["3> id=3 count=3", "4> id=4 count=3", "7> id=7 count=3"]


def test_concurrent_starts_share_one_daemon(tmp_path):
    import json as jsonlib
    import subprocess
    import sys

    env = {**os.environ, "QTRAIN_STATE_DIR": str(tmp_path / "state"),
           "QTRAIN_CONFIG_DIR": str(tmp_path / "config"), "QTRAIN_EMULATOR_EXECUTOR": "process"}
    procs = [subprocess.Popen([sys.executable, "-m", "submit", "emulator", "start", "--json"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        answers = [jsonlib.loads(p.communicate(timeout=120)[0].strip().splitlines()[-1]) for p in procs]
        assert len({a["pid"] for a in answers}) == 1
        assert sorted(a["state"] for a in answers) == ["already running", "already running", "started"]
    finally:
        subprocess.run([sys.executable, "-m", "submit", "emulator", "stop"], env=env, capture_output=True)


def test_an_instance_stopped_before_it_has_a_process_group_of_its_own_stops():
    """An abort or delete that comes as an instance starts: a forked instance calls setsid() first
    thing, and until then there is no group to signal.  It must stop anyway (it used to run on for
    good, holding a core the next tasks waited for)."""
    import subprocess

    from submit.emulator.instances import Running

    proc = subprocess.Popen(["sleep", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # no group of its own
    try:
        Running(proc).kill()
        assert proc.wait(timeout=10) == -15  # SIGTERM reached it
    finally:
        proc.kill()
        proc.wait()


def test_an_isolated_emulator_refuses_a_folder_whose_emulator_runs_and_restores_the_settings(tmp_path, emulator):
    """`daemon.isolated` (what tests and benchmarks run against): one beside the session's, its
    settings back as they were on the way out; a second in the same folder is refused, and the
    first runs on."""
    from jobs.errors import QtrainError
    from submit.emulator import daemon

    before = {k: os.environ.get(k) for k in ("QTRAIN_STATE_DIR", "QTRAIN_CONFIG_DIR", "QTRAIN_EMULATOR_REQUEST_TIMEOUT")}
    with daemon.isolated(tmp_path / "home", env={"QTRAIN_EMULATOR_REQUEST_TIMEOUT": None}) as own:
        assert own.pid != emulator.pid
        assert "QTRAIN_EMULATOR_REQUEST_TIMEOUT" not in os.environ
        with pytest.raises(QtrainError, match="already runs from this folder"):
            with daemon.isolated(tmp_path / "home"):
                pass
        assert daemon.running().pid == own.pid
    assert {k: os.environ.get(k) for k in before} == before
    assert daemon.running().pid == emulator.pid  # the session's, untouched
