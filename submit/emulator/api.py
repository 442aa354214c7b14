"""The Qarnot REST API, as much of it as the SDK uses for a task's whole life.

Every request needs `Authorization: <token>` (no "Bearer", like Qarnot): anything else is a 401.
Unknown endpoints answer 404 with a message, never a 5xx, because the SDK retries 5xx for ~30 s.
"""

from __future__ import annotations

import hmac
import json
import re
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from submit.emulator.tasks import TaskManager
from submit.emulator.wire import PROFILES, RequestError, task_json

EMAIL = "emulator@qtrain.local"

Route = tuple[str, re.Pattern, Callable[..., Any], bool]  # method, path, handler, wants the query


class Api:
    def __init__(self, manager: TaskManager, token: str, s3_url: str):
        self.manager = manager
        self.token = token
        self.s3_url = s3_url
        self.routes: list[Route] = []
        r = self._route
        r("GET", r"/settings", lambda body: {"storage": self.s3_url})
        r("GET", r"/info", lambda body: {
            "email": EMAIL, "maxBucket": 100, "maxTask": 1000, "taskCount": len(self.manager.tasks),
            "maxInstances": 64, "maxCores": self.manager.cores, "runningCoreCount": 0,
            "maxRunningTask": 100, "quotaBytesBucket": 0, "usedQuotaBytesBucket": 0})
        r("GET", r"/profiles", lambda body: list(PROFILES))
        r("GET", r"/profiles/(?P<name>[^/]+)", self.profile)
        r("POST", r"/tasks", self.submit)
        r("GET", r"/tasks", lambda body, query: self.listing(query, summary=False), query=True)
        r("GET", r"/tasks/summaries", lambda body, query: self.listing(query, summary=True), query=True)
        r("POST", r"/tasks/summaries/paginate", lambda body: self.paginate(body, summary=True))
        r("POST", r"/tasks/paginate", lambda body: self.paginate(body, summary=False))
        r("GET", r"/tasks/(?P<uuid>[0-9a-f-]+)", lambda body, uuid: task_json(self.manager.get(uuid)))
        r("DELETE", r"/tasks/(?P<uuid>[0-9a-f-]+)", self.delete)
        for stream in ("stdout", "stderr"):
            r("GET", rf"/tasks/(?P<uuid>[0-9a-f-]+)/{stream}", self.output(stream, fresh=False))
            r("POST", rf"/tasks/(?P<uuid>[0-9a-f-]+)/{stream}", self.output(stream, fresh=True))
            r("GET", rf"/tasks/(?P<uuid>[0-9a-f-]+)/{stream}/(?P<iid>\d+)", self.output(stream, fresh=False))
            r("POST", rf"/tasks/(?P<uuid>[0-9a-f-]+)/{stream}/(?P<iid>\d+)", self.output(stream, fresh=True))
        r("POST", r"/tasks/(?P<uuid>[0-9a-f-]+)/abort", self.abort)
        r("POST", r"/tasks/(?P<uuid>[0-9a-f-]+)/snapshot/periodic", self.periodic_snapshot)
        r("POST", r"/tasks/(?P<uuid>[0-9a-f-]+)/snapshot", self.instant_snapshot)
        r("GET", r"/tasks/(?P<uuid>[0-9a-f-]+)/snapshot/(?P<sid>[0-9a-f-]+)", self.snapshot_status)

    def _route(self, method: str, pattern: str, fn: Callable[..., Any], query: bool = False) -> None:
        self.routes.append((method, re.compile(pattern + r"/?"), fn, query))

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
        return 404, {"message": f"{method} {path}: not implemented by the local Qarnot emulator"}

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
        from submit.emulator.filters import matches

        body = body or {}
        if not isinstance(body, dict):
            raise RequestError(400, "the paginate request must be an object")
        tasks = [t for t in self.manager.list() if matches(task_json(t), body.get("filter"))]
        try:
            start = int(body.get("token") or 0)
            size = int(body.get("maximumResults") or 50)
        except (TypeError, ValueError):
            raise RequestError(400, "token and maximumResults must be numbers") from None
        page = tasks[start:start + size]
        more = start + size < len(tasks)
        return {"data": [task_json(t, summary=summary) for t in page], "token": str(start),
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
                return buf.fresh() if fresh else buf.whole()
        return read

    def abort(self, body: Any, uuid: str) -> dict[str, Any]:
        self.manager.get(uuid).abort()  # aborting a finished task is accepted and does nothing
        return {}

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


def make_server(api: Api, host: str, port: int) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "qtrain-emulator"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                status, payload = api.handle(self.command, self.path, headers, raw)
            except Exception as exc:  # noqa: BLE001 - never a 5xx: the SDK would retry for 30 s
                status, payload = 400, {"message": f"emulator error: {exc!r}"}
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

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    return server
