"""The emulator behaves like the Qarnot the SDK documents: scripts written from the SDK's README and
samples, run through the real `qarnot` SDK against the real daemon over HTTP.

Commands (DOCKER_CMD as words, no shell; FRAME_ID), limits from /info, hardware constraints,
dependencies, abort of an ended task, the status object, commit() and update_resources(),
user_info, pools, jobs (maxWallTime), and what the emulator does not implement."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest
import requests
from qarnot.exceptions import (MaxTaskException, QarnotGenericException, UnauthorizedException)
from qarnot.hardware_constraint import GpuHardware, MinimumCoreHardware

from submit.emulator.commands import command_argv
from submit.emulator.hardware import cpu_model, host_has_gpu
from tests.helpers import foreground_emulator, sh, wait_for


def test_the_sdk_readme_hello_world(conn, wait_task):
    """README of the qarnot package, word for word: `#` is not a comment, `${FRAME_ID}` is set."""
    task = conn.create_task("hello world", "docker-batch", 4)
    task.constants["DOCKER_CMD"] = "echo hello world from node #${FRAME_ID}!"
    task.submit()
    assert wait_task(task) == "Success"
    assert sorted(task.stdout().splitlines()) == [f"{i}> hello world from node #{i}!" for i in range(4)]


def test_docker_cmd_is_split_into_words_with_no_shell(conn, wait_task):
    task = conn.create_task("words", "docker-batch", 1)
    task.constants["NAME"] = "two words"
    # quotes group words; ${NAME} is replaced inside its word; $HOME and `;` are text, no shell reads them
    task.constants["DOCKER_CMD"] = "printf '[%s]\\n' \"a b\" ${NAME} $HOME ; ${INSTANCE_ID}${UNKNOWN}"
    task.submit()
    assert wait_task(task) == "Success"
    assert task.stdout().splitlines() == ["[a b]", "[two words]", "[$HOME]", "[;]", "[0${UNKNOWN}]"]
    # the shell is there when asked for, as in Qarnot's samples (sh -c "... | ...")
    piped = conn.create_task("piped", "docker-batch", 1)
    piped.constants["DOCKER_CMD"] = sh("echo lower | tr a-z A-Z; echo id=$INSTANCE_ID frame=$FRAME_ID")
    piped.submit()
    assert wait_task(piped) == "Success"
    assert piped.stdout().splitlines() == ["LOWER", "id=0 frame=0"]


def test_a_broken_command_is_refused_naming_the_constant(conn):
    task = conn.create_task("unbalanced", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = "echo 'never closed"
    with pytest.raises(QarnotGenericException, match="DOCKER_CMD"):
        task.submit()
    assert task.uuid is None


def test_no_docker_cmd_with_the_process_executor_says_why(conn, wait_task):
    """The process executor has no image, so no default command to run (the docker executor runs
    the image's: tests/docker/test_docker.py)."""
    task = conn.create_task("no command", "docker-batch", 1)
    task.submit()
    assert wait_task(task) == "Failure"
    assert "DOCKER_CMD is not set" in task.stderr()


def test_command_words_unit():
    env = {"INSTANCE_ID": "3", "A": "x y"}
    assert command_argv("run ${INSTANCE_ID} '${A}' \"#\" #", env) == ["run", "3", "x y", "#", "#"]
    assert command_argv("", env) is None and command_argv(None, env) is None


def test_instance_counts_outside_the_account_limits_are_refused(conn, emulator):
    assert conn.user_info.max_instances == 64
    for count in (65, 0, 100000):
        task = conn.create_task(f"count-{count}", "docker-batch", count)
        task.constants["DOCKER_CMD"] = "true"
        with pytest.raises(QarnotGenericException, match=r"instanceCount|maxInstances|at least one"):
            task.submit()
        assert task.uuid is None
    ranged = conn.create_task("range", "docker-batch", "0-64")  # 65 instance ids
    with pytest.raises(QarnotGenericException, match="maxInstances"):
        ranged.submit()


def test_request_bodies_are_capped_and_stalled_clients_dropped(emulator):
    url = f"{emulator.url}/tasks"
    big = requests.post(url, data=b"{" + b" " * (5 << 20) + b"}", timeout=30,
                        headers={"Authorization": emulator.token, "Content-Type": "application/json"})
    assert big.status_code == 413 and "limit" in big.json()["message"]
    host, port = emulator.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(f"POST /tasks HTTP/1.1\r\nHost: x\r\nAuthorization: {emulator.token}\r\n"
                  f"Content-Length: 1000\r\n\r\n{{\"name\":".encode())
        started = time.monotonic()
        assert s.recv(100) == b""  # the emulator drops the connection (QTRAIN_EMULATOR_REQUEST_TIMEOUT)
        assert time.monotonic() - started < 20
    # and still answers everyone else
    answer = requests.get(f"{emulator.url}/profiles", headers={"Authorization": emulator.token}, timeout=5)
    assert answer.status_code == 200 and "docker-batch" in answer.json()


def test_malformed_fields_are_refused_by_name_without_internals(emulator):
    def post(body):
        return requests.post(f"{emulator.url}/tasks", json=body, timeout=5,
                             headers={"Authorization": emulator.token})

    base = {"name": "x", "profile": "docker-batch", "instanceCount": 1}
    for field, value in (("constants", "DOCKER_CMD=true"), ("instanceCount", "2"), ("tags", "a,b"),
                         ("hardwareConstraints", [{"discriminator": "Quantum"}]),
                         ("dependencies", {"dependsOn": "x"}), ("advancedResourceBuckets", [3]),
                         ("resultsWhitelist", "(")):
        answer = post({**base, field: value})
        message = answer.json()["message"]
        assert answer.status_code == 400 and field.split(".")[0] in message, (field, message)
        assert "Error(" not in message and "Traceback" not in message
    unknown = requests.get(f"{emulator.url}/secrets-manager/search/x", timeout=5,
                           headers={"Authorization": emulator.token})
    assert unknown.status_code == 400 and "not supported by the local Qarnot emulator" in unknown.json()["message"]


def test_a_dependent_task_waits_then_runs_and_fails_when_its_dependency_fails(conn, wait_task, tmp_path):
    first = conn.create_task("first", "docker-batch", 1)
    first.constants["DOCKER_CMD"] = "sleep 2"
    first.submit()
    second = conn.create_task("second", "docker-batch", 1)
    second.constants["DOCKER_CMD"] = "true"
    second.set_task_dependencies_from_tasks([first])
    second.submit()
    time.sleep(1)
    second.update(flushcache=True)
    assert first.state != "Success" and second.state == "Submitted"
    assert wait_task(second) == "Success"
    first.update(flushcache=True)
    assert first.state == "Success"
    assert second.dependencies.state.value == "dependencyConditionsFulfilled"

    broken = conn.create_task("broken", "docker-batch", 1)
    broken.constants["DOCKER_CMD"] = "false"
    broken.submit()
    after = conn.create_task("after broken", "docker-batch", 1)
    after.constants["DOCKER_CMD"] = sh("touch ran; true")
    after.set_task_dependencies_from_tasks([broken])
    after.submit()
    assert wait_task(after) == "Failure"
    assert "ended Failure" in after.errors[0].message and after.completed_instances == []
    assert after.dependencies.state.value == "dependencyConditionsNotFulfilled"

    missing = conn.create_task("depends on nothing", "docker-batch", 1)
    missing.set_task_dependencies_from_uuids([str(uuid.uuid4())])
    with pytest.raises(QarnotGenericException, match="dependencies"):
        missing.submit()


def test_aborting_an_ended_task_is_refused_as_qarnot_does(conn, wait_task):
    task = conn.create_task("ended", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = "true"
    task.submit()
    assert wait_task(task) == "Success"
    with pytest.raises(UnauthorizedException, match="non running task"):
        task.abort()


def test_status_commit_and_update_resources(conn, wait_task):
    res = conn.create_bucket(f"fid-res-{uuid.uuid4().hex[:8]}")
    res.add_string("first", "a.txt")
    task = conn.create_task("long", "docker-batch", 1)
    task.resources = [res]
    task.constants["DOCKER_CMD"] = sh("while [ ! -f b.txt ]; do sleep 0.1; done; cat b.txt")
    task.submit()
    wait_task(task, until=("FullyExecuting",))
    status = task.status
    assert status is not None and status.execution_time_by_cpu_model is not None
    assert status.running_instances_info.per_running_instance_info[0].instance_id == 0

    mark = f"committed-{uuid.uuid4().hex[:8]}"
    task.tags = [mark]  # what a launched task may change: tags, constants, labels
    task.constants["ADDED"] = "later"
    task.commit()
    again = conn.retrieve_task(task.uuid)
    assert again.tags == [mark] and again.constants["ADDED"] == "later"
    assert [t.uuid for t in conn.all_tasks(tags=[mark])] == [task.uuid]

    res.add_string("second", "b.txt")
    task.update_resources()  # b.txt appears in the running instance's folder: the loop ends
    assert wait_task(task) == "Success"
    assert task.stdout().strip() == "second"
    status = task.status
    assert status.executed_range == "0" and status.succeeded_range == "0" and status.failed_range == ""
    assert status.execution_time_sec > 0 and status.wall_time_sec >= status.execution_time_sec
    by_model = status.execution_time_by_cpu_model[0]
    assert by_model.model == cpu_model() and by_model.core == os.cpu_count()  # one instance: every core
    with pytest.raises(UnauthorizedException):
        task.commit()  # an ended task: nothing to change


def test_user_info_has_the_fields_the_sdk_reads(tmp_path, wait_task):
    with foreground_emulator(tmp_path) as conn:  # an account of its own: every count is known
        info = conn.user_info
        assert info.max_cores == os.cpu_count() and info.max_instances == 64 and info.max_task == 1000
        assert info.running_task_count == 0 and info.bucket_count == 0 and info.max_bucket == 100
        assert info.max_pool == 50 and info.pool_count == 0
        conn.create_bucket("fid-info")
        task = conn.create_task("waits", "docker-batch", 1)
        task.constants["DOCKER_CMD"] = sh("sleep 30")
        task.submit()
        wait_task(task, until=("FullyExecuting",))
        info = conn.user_info
        assert info.running_task_count == 1 and info.bucket_count == 1
        task.abort()


def test_hardware_a_machine_lacks_keeps_the_task_queued_saying_why(conn, wait_task):
    task = conn.create_task("big machine", "docker-batch", 1)
    task.constants["DOCKER_CMD"] = "true"
    task.hardware_constraints = [MinimumCoreHardware(4096)]
    task.submit()
    wait_for(lambda: (task.update(flushcache=True), task.errors)[1], timeout=10)
    assert task.state == "Submitted"
    assert task.errors[0].code == "HARDWARE_UNAVAILABLE" and "4096 cores" in task.errors[0].message
    task.abort()
    assert wait_task(task) == "Cancelled"
    offered = [c.to_json()["discriminator"] for c in conn.all_hardware_constraints()]
    assert ("GpuHardwareConstraint" in offered) == host_has_gpu()


def test_pools_take_tasks_run_them_in_their_slots_and_close(conn, wait_task):
    pool = conn.create_pool("pool", "docker-batch", 2)
    pool.constants["POOL_GREETING"] = "from the pool"
    pool.submit()
    assert pool.uuid and conn.retrieve_pool(pool.uuid).state == "FullyExecuting"
    task = conn.create_task("in pool", pool, 3)
    task.constants["DOCKER_CMD"] = sh("echo $POOL_GREETING $INSTANCE_ID")
    task.submit()
    assert wait_task(task) == "Success"
    assert sorted(task.stdout().splitlines()) == [f"{i}> from the pool {i}" for i in range(3)]
    assert conn.retrieve_task(task.uuid).pool.uuid == pool.uuid

    running = conn.create_task("cancelled with its pool", pool, 1)
    running.constants["DOCKER_CMD"] = "sleep 60"
    running.submit()
    wait_task(running, until=("FullyExecuting",))
    pool.close()
    assert wait_task(running) == "Cancelled"
    wait_for(lambda: (pool.update(True), pool.state == "Closed")[1], timeout=10)
    late = conn.create_task("too late", pool, 1)
    late.constants["DOCKER_CMD"] = "true"
    with pytest.raises(QarnotGenericException, match="Closed|Closing"):
        late.submit()
    pool.delete()
    with pytest.raises(Exception):
        conn.retrieve_pool(pool.uuid)


def test_a_jobs_max_wall_time_cancels_its_task_and_keeps_its_results(conn, wait_task, tmp_path):
    """Qarnot's time limit is a job's maxWallTime (the SDK has no task-level one): a task past it
    is cancelled, saying why, and, asked for, its results come home."""
    import datetime

    job = conn.create_job("limited")
    job.max_wall_time = datetime.timedelta(seconds=2)
    job.submit()
    assert conn.retrieve_job(job.uuid).max_wall_time == datetime.timedelta(seconds=2)
    out = conn.create_bucket(f"limited-{uuid.uuid4().hex[:8]}")
    task = conn.create_task("stuck", "docker-batch", 1, job=job)
    task.constants["DOCKER_CMD"] = sh("echo half > progress.txt; sleep 60")
    task.results = out
    task.upload_results_on_cancellation = True
    task.submit()
    started = time.monotonic()
    assert wait_task(task, timeout=30) == "Cancelled"
    assert time.monotonic() - started < 15, "ended at the limit, not at the command's end"
    assert any("maxWallTime" in e.message for e in task.errors)
    task.download_results(str(tmp_path / "got"))
    assert (tmp_path / "got" / "progress.txt").read_text() == "half\n"
    wait_for(lambda: (job.update(True), job.state == "Completed")[1], timeout=10)
    late = conn.create_task("late", "docker-batch", 1, job=job)
    late.constants["DOCKER_CMD"] = "true"
    with pytest.raises(QarnotGenericException, match="takes no more tasks"):
        late.submit()
    job.delete()
    with pytest.raises(Exception):
        conn.retrieve_job(job.uuid)


def test_a_job_without_limit_runs_its_tasks_and_terminate_cancels_them(conn, emulator, wait_task):
    job = conn.create_job("plain")
    job.submit()
    quick = conn.create_task("quick", "docker-batch", 1, job=job)
    quick.constants["DOCKER_CMD"] = "echo done"
    quick.submit()
    assert wait_task(quick) == "Success"
    assert quick.stdout().strip() == "done"
    slow = conn.create_task("slow", "docker-batch", 1, job=job)
    slow.constants["DOCKER_CMD"] = "sleep 60"
    slow.submit()
    with pytest.raises(UnauthorizedException, match="running task"):  # the SDK's name for a 403
        job.delete()  # not without force while a task runs
    job.terminate()
    assert wait_task(slow, timeout=30) == "Cancelled"
    tasks = requests.get(f"{emulator.url}/jobs/{job.uuid}/tasks", headers={"Authorization": emulator.token},
                         timeout=5).json()
    assert sorted(t["name"] for t in tasks) == ["quick", "slow"] and all(t["jobUuid"] == job.uuid for t in tasks)
    ghost = conn.create_task("ghost", "docker-batch", 1)
    ghost._job_uuid = "00000000-0000-0000-0000-000000000000"
    ghost.constants["DOCKER_CMD"] = "true"
    with pytest.raises(Exception, match="not found"):
        ghost.submit()


# ------------------------------------------------------------------- modes of another daemon
@pytest.mark.skipif(host_has_gpu(), reason="checks what a machine without a GPU does")
def test_hardware_modes_strict_refuses_and_lenient_runs(tmp_path, wait_task):
    with foreground_emulator(tmp_path / "strict", QTRAIN_EMULATOR_HARDWARE="strict") as conn:
        task = conn.create_task("gpu", "docker-batch", 1)
        task.constants["DOCKER_CMD"] = "true"
        task.hardware_constraints = [GpuHardware()]
        with pytest.raises(QarnotGenericException, match="hardware constraint"):
            task.submit()
        assert task.uuid is None
    with foreground_emulator(tmp_path / "lenient", QTRAIN_EMULATOR_HARDWARE="lenient") as conn:
        task = conn.create_task("gpu", "docker-nvidia-batch", 1)
        task.constants["DOCKER_CMD"] = "echo ran"
        task.hardware_constraints = [GpuHardware()]
        task.submit()
        assert wait_task(task) == "Success"
        assert "runs on this machine as it is" in task.stdout()
        assert "GpuHardwareConstraint" in [c.to_json()["discriminator"] for c in conn.all_hardware_constraints()]


def test_task_quotas_answer_as_the_sdk_expects(tmp_path, wait_task):
    """maxBucket: S3 TooManyBuckets; maxRunningTask: the others wait, Submitted; maxTask: 403
    "Maximum number of tasks reached", which the SDK raises as MaxTaskException (limits lowered
    for the test: QTRAIN_EMULATOR_LIMITS)."""
    limits = "max_tasks=2,max_running_tasks=1,max_buckets=1"
    with foreground_emulator(tmp_path, QTRAIN_EMULATOR_LIMITS=limits) as conn:
        assert (conn.user_info.max_task, conn.user_info.max_running_task, conn.user_info.max_bucket) == (2, 1, 1)
        conn.create_bucket("the-one-bucket")
        conn.create_bucket("the-one-bucket")  # creating a bucket one has is still fine
        with pytest.raises(Exception, match="TooManyBuckets"):
            conn.create_bucket("one-too-many")
        assert conn.user_info.bucket_count == 1
        first = conn.create_task("first", "docker-batch", 1)
        first.constants["DOCKER_CMD"] = "sleep 2"
        first.submit()
        second = conn.create_task("second", "docker-batch", 1)
        second.constants["DOCKER_CMD"] = "true"
        second.submit()
        wait_task(first, until=("FullyExecuting",))
        time.sleep(0.5)
        second.update(True)
        assert second.state == "Submitted" and conn.user_info.running_task_count == 1
        assert wait_task(second) == "Success"
        third = conn.create_task("third", "docker-batch", 1)
        third.constants["DOCKER_CMD"] = "true"
        with pytest.raises(MaxTaskException):
            third.submit()
