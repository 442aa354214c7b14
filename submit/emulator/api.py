"""The Qarnot REST API, as much of it as the SDK uses for a task's whole life.

Every request needs `Authorization: <token>` (no "Bearer", like Qarnot): anything else is a 401.
What the emulator does not implement (secrets, projects, job search...) answers 400 "not supported by the
local Qarnot emulator", which the SDK raises as a QarnotGenericException with that message (a 404
would read as MissingBucketException / MissingJobException, and a 5xx is retried for ~30 s).
A malformed request is refused naming the field; an internal error never echoes its exception
(it goes to the daemon's log).  Bodies are capped (`Limits.max_body`, 413) and a client that
stalls mid-request is dropped after `QTRAIN_EMULATOR_REQUEST_TIMEOUT` seconds.
"""

from __future__ import annotations

import hmac
import json
import re
import sys
import traceback
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from jobs import settings
from submit.emulator import footprint
from submit.emulator.fields import EMAIL, RequestError
from submit.emulator.filters import matches
from submit.emulator.manager import TaskManager
from submit.emulator.pools import Pools
from submit.emulator.qjobs import QJobs
from submit.emulator.wire import PROFILES, task_json


Route = tuple[str, re.Pattern, Callable[..., Any], bool]  # method, path, handler, wants the query


class Api:
    def __init__(self, manager: TaskManager, token: str, s3_url: str):
        self.manager = manager
        self.token = token
        self.s3_url = s3_url
        self.pools = Pools(manager)
        self.jobs = QJobs(manager)
        self.routes: list[Route] = []
        r = self._route
        r("GET", r"/settings", lambda body: {"storage": self.s3_url})
        r("GET", r"/info", lambda body: self.user_info())
        r("GET", r"/hardware-constraints", lambda body, query: self.hardware_constraints(query), query=True)
        r("GET", r"/profiles", lambda body: list(PROFILES))
        r("GET", r"/profiles/(?P<name>[^/]+)", self.profile)
        r("POST", r"/tasks", self.submit)
        r("GET", r"/tasks", lambda body, query: self.listing(query, summary=False), query=True)
        r("GET", r"/tasks/summaries", lambda body, query: self.listing(query, summary=True), query=True)
        r("POST", r"/tasks/summaries/paginate", lambda body: self.paginate(body, summary=True))
        r("POST", r"/tasks/paginate", lambda body: self.paginate(body, summary=False))
        r("GET", r"/tasks/(?P<uuid>[^/]+)", lambda body, uuid: task_json(self.manager.get(uuid)))
        r("PUT", r"/tasks/(?P<uuid>[^/]+)", self.commit)
        r("PATCH", r"/tasks/(?P<uuid>[^/]+)", self.update_resources)
        r("DELETE", r"/tasks/(?P<uuid>[^/]+)", self.delete)
        for stream in ("stdout", "stderr"):
            r("GET", rf"/tasks/(?P<uuid>[^/]+)/{stream}", self.output(stream, fresh=False))
            r("POST", rf"/tasks/(?P<uuid>[^/]+)/{stream}", self.output(stream, fresh=True))
            r("GET", rf"/tasks/(?P<uuid>[^/]+)/{stream}/(?P<iid>\d+)", self.output(stream, fresh=False))
            r("POST", rf"/tasks/(?P<uuid>[^/]+)/{stream}/(?P<iid>\d+)", self.output(stream, fresh=True))
        r("POST", r"/tasks/(?P<uuid>[^/]+)/abort", self.abort)
        r("POST", r"/tasks/(?P<uuid>[^/]+)/snapshot/periodic", self.periodic_snapshot)
        r("POST", r"/tasks/(?P<uuid>[^/]+)/snapshot", self.instant_snapshot)
        r("GET", r"/tasks/(?P<uuid>[^/]+)/snapshot/(?P<sid>[^/]+)", self.snapshot_status)
        # what tasks cost and emitted (an emulated model: footprint.py); QTRAIN_EMULATOR_FOOTPRINT=0
        # answers 404 there, as a cluster without those services does
        if footprint.enabled():
            r("GET", r"/credits/v1/accounts/credits", lambda body: {"credits": footprint.account_credits(self.manager.list(), self.manager.credits_spent)})
            r("GET", r"/credits/v1/tasks/(?P<uuid>[^/]+)/credits",
              lambda body, uuid: footprint.task_credits(self.manager.get(uuid)))
            r("GET", r"/carbon/v1/tasks/(?P<uuid>[^/]+)/carbon-facts",
              lambda body, uuid, query: footprint.carbon_facts(self.manager.get(uuid),
                                                               (query.get("comparisonDatacenter") or [None])[0]),
              query=True)
        else:
            r("GET", r"/(?:credits|carbon)/v1/.*", lambda body: footprint.missing())
        # pools
        r("POST", r"/pools", lambda body: self.pools.submit(body))
        r("GET", r"/pools", lambda body: [p.json() for p in self.pools.listing()])
        r("GET", r"/pools/summaries", lambda body: [p.json(summary=True) for p in self.pools.listing()])
        r("POST", r"/pools/paginate", lambda body: self.paginate_pools(body, summary=False))
        r("POST", r"/pools/summaries/paginate", lambda body: self.paginate_pools(body, summary=True))
        r("GET", r"/pools/(?P<uuid>[^/]+)", lambda body, uuid: self.pools.get(uuid).json())
        r("DELETE", r"/pools/(?P<uuid>[^/]+)", lambda body, uuid: self.pools.delete(uuid) or {})
        r("POST", r"/pools/(?P<uuid>[^/]+)/close", lambda body, uuid: self.pools.get(uuid).close() or {})
        # jobs: a time limit (maxWallTime) over their tasks
        r("POST", r"/jobs", lambda body: self.jobs.submit(body))
        r("GET", r"/jobs", lambda body: [j.json() for j in self.jobs.listing()])
        r("GET", r"/jobs/(?P<uuid>[^/]+)", lambda body, uuid: self.jobs.get(uuid).json())
        r("DELETE", r"/jobs/(?P<uuid>[^/]+)",
          lambda body, uuid, query: self.jobs.delete(uuid, (query.get("force") or [""])[0].lower() in ("true", "1"))
          or {}, query=True)
        r("POST", r"/jobs/(?P<uuid>[^/]+)/terminate", lambda body, uuid: self.jobs.terminate(uuid) or {})
        r("GET", r"/jobs/(?P<uuid>[^/]+)/tasks",
          lambda body, uuid: [task_json(t) for t in self.jobs.get(uuid).tasks()])
        for stream in ("stdout", "stderr"):  # a pool's own output: none here (its tasks have theirs)
            r("GET", rf"/pools/(?P<uuid>[^/]+)/{stream}(?:/(?P<iid>\d+))?",
              lambda body, uuid, iid=None: self.pools.get(uuid) and "")
            r("POST", rf"/pools/(?P<uuid>[^/]+)/{stream}(?:/(?P<iid>\d+))?",
              lambda body, uuid, iid=None: self.pools.get(uuid) and "")

    def _route(self, method: str, pattern: str, fn: Callable[..., Any], query: bool = False) -> None:
        self.routes.append((method, re.compile(pattern + r"/?"), fn, query))

    def user_info(self) -> dict[str, Any]:
        """GET /info, with the names the SDK's UserInfo reads."""
        tasks = self.manager.list()
        running = [t for t in tasks if not t.done and t.state != "Submitted"]
        instances = sum(1 for t in running for i in t.instances.values() if i.state == "Running")
        limits = self.manager.limits
        pools = list(self.manager.pools.values())
        return {
            "email": EMAIL, "maxBucket": limits.max_buckets, "bucketCount": self.manager.storage.count(),
            "quotaBytesBucket": 0, "usedQuotaBytesBucket": 0,
            "taskCount": len(tasks), "maxTask": limits.max_tasks, "runningTaskCount": len(running),
            "maxRunningTask": limits.max_running_tasks, "maxInstances": limits.max_instances,
            "maxPool": limits.max_pools, "poolCount": len(pools), "maxRunningPool": limits.max_running_pools,
            "runningPoolCount": sum(not p.closed for p in pools),
            "runningInstanceCount": instances, "runningCoreCount": instances,
            "maxFlexCores": self.manager.cores, "maxFlexInstances": limits.max_instances,
            "runningFlexCoreCount": instances, "runningFlexInstanceCount": instances,
            "maxOnDemandCores": 0, "maxOnDemandInstances": 0,
            "runningOnDemandCoreCount": 0, "runningOnDemandInstanceCount": 0,
        }

    def hardware_constraints(self, query: dict[str, list[str]]) -> dict[str, Any]:
        """GET /hardware-constraints?limit=&offset=: what this machine offers, as constraints."""
        offers = self.manager.machine.offers(lenient=self.manager.hardware_mode == "lenient")
        try:
            limit = int((query.get("limit") or [50])[0])
            offset = int((query.get("offset") or [0])[0])
        except ValueError:
            raise RequestError(400, "limit and offset must be numbers") from None
        return {"data": offers[offset:offset + limit], "total": len(offers), "limit": limit, "offset": offset}

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, Any]:
        supplied = headers.get("authorization", "")
        if not hmac.compare_digest(supplied.encode(), self.token.encode()):
            return 401, {"message": "Unauthorized: wrong or missing token (see `qtrain emulator status`)"}
        path, _, query = path.partition("?")
        allowed = []
        for m, pattern, fn, wants_query in self.routes:
            match = pattern.fullmatch(path)
            if not match:
                continue
            if m != method:
                allowed.append(m)
                continue
            try:
                body = json.loads(raw) if raw.strip() else None
            except ValueError:
                return 400, {"message": "the request body is not valid JSON"}
            args = match.groupdict()
            if wants_query:
                args["query"] = urllib.parse.parse_qs(query)
            try:
                return 200, fn(body, **args)
            except RequestError as exc:
                return exc.status, {"message": exc.message}
        if allowed:
            return 405, {"message": f"{method} {path}: the emulator accepts {', '.join(allowed)} here"}
        what = path.strip("/").split("/")[0] or path
        return 400, {"message": f"{method} {path}: {what} not supported by the local Qarnot emulator "
                                f"(it implements tasks, pools, jobs, profiles, buckets, hardware constraints, task credits and carbon facts)"}

    # ------------------------------------------------------------------------------ handlers
    def profile(self, body: Any, name: str) -> dict[str, Any]:
        if name not in PROFILES:
            raise RequestError(404, f"profile {name!r} not found (profiles: {', '.join(PROFILES)})")
        return {"name": name, "constants": [{"name": k, "value": v} for k, v in PROFILES[name].items()]}

    def submit(self, body: Any) -> Any:
        if isinstance(body, list):  # conn.submit_tasks: one answer per task, in order
            answers = []
            for item in body:
                try:
                    answers.append({"statusCode": 200, "uuid": self.manager.submit(item).uuid, "message": ""})
                except RequestError as exc:
                    answers.append({"statusCode": exc.status, "uuid": None, "message": exc.message})
            return answers
        return {"uuid": self.manager.submit(body).uuid}

    def listing(self, query: dict[str, list[str]], summary: bool) -> list[dict[str, Any]]:
        """GET /tasks[?tag=a,b]: every task, or those with any of the tags (the SDK's older listing)."""
        tags = {t for value in query.get("tag", []) for t in value.split(",") if t}
        return [task_json(t, summary=summary) for t in self.manager.list() if not tags or tags & set(t.body.tags)]

    def paginate(self, body: Any, summary: bool) -> dict[str, Any]:
        body = body or {}
        if not isinstance(body, dict):
            raise RequestError(400, "the paginate request must be an object")
        tasks = [t for t in self.manager.list() if matches(task_json(t), body.get("filter"))]
        return self._page(tasks, body, lambda t: task_json(t, summary=summary))

    @staticmethod
    def _page(items: list[Any], body: dict[str, Any], render: Callable[[Any], Any]) -> dict[str, Any]:
        try:
            start = int(body.get("token") or 0)
            size = int(body.get("maximumResults") or 50)
        except (TypeError, ValueError):
            raise RequestError(400, "token and maximumResults: expected numbers") from None
        if start < 0 or size < 1:
            raise RequestError(400, "token and maximumResults: expected a position >= 0 and a size >= 1")
        page = items[start:start + size]
        more = start + size < len(items)
        return {"data": [render(x) for x in page], "token": str(start),
                "nextToken": str(start + size) if more else None, "isTruncated": more}

    def delete(self, body: Any, uuid: str) -> dict[str, Any]:
        self.manager.delete(uuid)
        return {}

    def output(self, stream: str, fresh: bool) -> Callable[..., str]:
        def read(body: Any, uuid: str, iid: str | None = None) -> str:
            task = self.manager.get(uuid)
            with task.lock:
                if iid is None:
                    buf = task.all_out if stream == "stdout" else task.all_err
                else:
                    buffers = task.out if stream == "stdout" else task.err
                    if int(iid) not in buffers:
                        raise RequestError(404, f"task {uuid} has no instance {iid}")
                    buf = buffers[int(iid)]
                return buf.fresh() if fresh else buf.kept()
        return read

    def abort(self, body: Any, uuid: str) -> dict[str, Any]:
        self.manager.get(uuid).abort(strict=True)  # an ended task: 403, as Qarnot
        return {}

    def commit(self, body: Any, uuid: str) -> dict[str, Any]:
        self.manager.get(uuid).commit(body)
        return {}

    def update_resources(self, body: Any, uuid: str) -> dict[str, Any]:
        self.manager.get(uuid).update_resources()
        return {}

    def paginate_pools(self, body: Any, summary: bool) -> dict[str, Any]:
        body = body or {}
        if not isinstance(body, dict):
            raise RequestError(400, "the paginate request must be an object")
        pools = [p for p in self.pools.listing() if matches(p.json(), body.get("filter"))]
        return self._page(pools, body, lambda p: p.json(summary=summary))

    def periodic_snapshot(self, body: Any, uuid: str) -> dict[str, Any]:
        task = self.manager.get(uuid)
        if not isinstance(body, dict) or not body.get("interval"):
            raise RequestError(400, "a periodic snapshot needs an interval in seconds")
        task.set_periodic_snapshot(body)
        return {}

    def instant_snapshot(self, body: Any, uuid: str) -> dict[str, Any]:
        task = self.manager.get(uuid)
        return {"id": task.instant_snapshot(body if isinstance(body, dict) else {})}

    def snapshot_status(self, body: Any, uuid: str, sid: str) -> dict[str, Any]:
        task = self.manager.get(uuid)
        if sid not in task.snapshots:
            raise RequestError(404, f"task {uuid} has no snapshot {sid}")
        return task.snapshots[sid]


def request_timeout() -> float:
    """Seconds a client may take to send a request (and a kept-alive connection may idle)."""
    return settings.emulator().request_timeout


def make_server(api: Api, host: str, port: int) -> ThreadingHTTPServer:
    limit = api.manager.limits.max_body

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "qtrain-emulator"
        # an answer goes out at once: with Nagle's algorithm, the body written after the headers
        # waits for the client's delayed ACK, 40 ms on every request of a kept-alive connection
        disable_nagle_algorithm = True
        timeout = request_timeout()  # a stalled client is dropped, its thread freed

        def _serve(self) -> None:
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if length < 0 or length > limit or self.headers.get("Transfer-Encoding"):
                status, payload = (413, {"message": f"the request body is over the emulator's limit of {limit} bytes"}) \
                    if length > limit else (400, {"message": "Content-Length: expected the body's size in bytes"})
                self.close_connection = True  # the body is not read: the connection cannot be reused
                self._answer(status, payload)
                return
            raw = self.rfile.read(length) if length else b""
            if len(raw) < length:  # the client went away mid-body
                self.close_connection = True
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, payload = api.handle(self.command, self.path, headers, raw)
            except Exception:  # noqa: BLE001 - never a 5xx (the SDK would retry for 30 s), never internals
                print(f"[emulator] {self.command} {self.path.split('?')[0]} failed:", file=sys.stderr)
                traceback.print_exc()
                status, payload = 400, {"message": f"{self.command} {self.path.split('?')[0]}: the emulator could "
                                                   f"not handle this request (details in its log)"}
            self._answer(status, payload)

        def _answer(self, status: int, payload: Any) -> None:
            if isinstance(payload, str):
                data, ctype = payload.encode("utf-8"), "text/plain; charset=utf-8"
            else:
                data, ctype = json.dumps(payload).encode(), "application/json"
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_DELETE = do_PUT = do_PATCH = _serve

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet by default
            pass

    class Server(ThreadingHTTPServer):
        request_queue_size = 128  # connections waiting to be accepted (the stdlib's 5 drops bursts)
        daemon_threads = True

        def handle_error(self, request, client_address) -> None:  # a client gone or stalled: quiet
            if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                super().handle_error(request, client_address)

    return Server((host, port), Handler)
