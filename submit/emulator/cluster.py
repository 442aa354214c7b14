"""A cluster profile's task (docker-cluster-network and its GPU twin), as Qarnot's samples use them:
its instances start together and reach one another; instance 0, the master, runs DOCKER_CMD_MASTER
and the others DOCKER_CMD_WORKER (`instances.InstanceSpec.command`); each finds the nodes in its
host file (`mpihosts` in its folder, Qarnot's /job/mpihosts, the master first) and shares one
folder (/share).  When one instance fails the others are stopped (`tasks.Task._finish_instance`).

How the nodes reach one another is the executor's: loopback and a free rendezvous port for the
process executor, a network of the task's own for the docker executor (`open_cluster`).
"""

from __future__ import annotations

from typing import Any

from submit.emulator.instances import ClusterPlace


def open_cluster(task: Any) -> str | None:
    """The task's instances set up to reach one another, each with the host file and the shared
    folder; their places are kept on the task.  Returns the network to remove at the end."""
    share = task.dir / "share"
    share.mkdir(parents=True, exist_ok=True)
    hosts, env, network = task.manager.executor.open_cluster(task.uuid, task.ids, share)
    for inst in task.instances.values():
        inst.workdir.mkdir(parents=True, exist_ok=True)
        (inst.workdir / "mpihosts").write_text("".join(f"{h}\n" for h in hosts))
        task.places[inst.id] = ClusterPlace(inst.id == task.ids[0], share, env, network)
    return network


def take_slots(task: Any) -> int:
    """A cluster task's instances start together or not at all (a rank alone waits for its peers
    for ever): its slots, one an instance up to the cores, are taken at once, one cluster task at a
    time.  Returns how many are held (fewer when the task is aborted while it waits)."""
    manager = task.manager
    wanted = min(len(task.ids), manager.cores)
    held = 0
    with manager.gang:
        while held < wanted:
            if manager.slots.acquire(timeout=0.1):
                held += 1
            elif task.aborted:
                break
    return held
