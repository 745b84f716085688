"""Real engines for the fleet tests: redis-server, SeaweedFS's S3 server, HAProxy.

Each runs as a process of the test session on loopback ports chosen free, and is
stopped by the fixture that started it. Without the engine installed the tests
that need it skip, unless ``EDGENET_REQUIRE_FLEET=1`` (set by .ci/run, which
installs them), where a missing engine fails.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

#: S3 credentials of the test engine (SeaweedFS takes them from the environment).
S3_KEY, S3_SECRET = "edgenet-test", "edgenet-test-secret"
BUCKET = "edgenet-test"


def engine_path(name: str) -> str:
    """The engine's executable (next to this Python first: pip puts ``weed`` there)."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        if os.environ.get("EDGENET_REQUIRE_FLEET"):
            pytest.fail(f"{name} is not installed (EDGENET_REQUIRE_FLEET is set)")
        pytest.skip(f"{name} is not installed")
    return found


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(grpc_offset: bool = False) -> int:
    """A free loopback port; with ``grpc_offset``, below 55535 with port+10000 free too."""
    for _ in range(200):
        if not grpc_offset:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                return int(s.getsockname()[1])
        port = random.randrange(20000, 45000)
        if _free(port) and _free(port + 10000):
            return port
    raise RuntimeError("no free port found")


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 15.0,
              what: str = "engine") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode}")
        with socket.socket() as s:
            s.settimeout(0.2)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.02)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:g} s")


class Engine:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


class RedisEngine(Engine):
    """redis-server with an append-only file fsynced per write: a restart keeps all."""

    def __init__(self, place: Path) -> None:
        place.mkdir(parents=True, exist_ok=True)
        super().__init__(place / "redis.log")
        self.place = place
        self.exe = engine_path("redis-server")
        self.port = free_port()
        self.started = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # The port was free when chosen, but another process (tests run in parallel,
        # each with many outgoing connections) may take it before redis-server binds
        # it: a first start moves to another port, a restart (the nodes know the port)
        # tries the same one again.
        for attempt in range(5):
            self._spawn([self.exe, "--port", str(self.port), "--bind", "127.0.0.1",
                         "--dir", str(self.place), "--save", "", "--appendonly", "yes",
                         "--appendfsync", "always", "--daemonize", "no",
                         "--protected-mode", "no"])
            assert self.proc is not None
            try:
                wait_port(self.port, self.proc, what="redis-server")
                break
            except RuntimeError:
                if attempt == 4 or self.proc.poll() is None:
                    raise
                if not self.started:
                    self.port = free_port()
                time.sleep(0.2)
        self.started = True
        # Loading the append-only file after a restart: wait until it answers PING.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:  # a loaded box may take longer than a second to answer: ask again
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("redis-server does not answer PING")


class SeaweedEngine(Engine):
    """``weed mini``: master, volume, filer and S3 on loopback ports of its own."""

    def __init__(self, place: Path) -> None:
        place.mkdir(parents=True, exist_ok=True)
        super().__init__(place / "weed.log")
        self.place = place
        self.exe = engine_path("weed")
        self.s3_port = free_port(grpc_offset=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.s3_port}"

    def start(self) -> None:
        ports: dict[str, int] = {}
        for name in ("master", "volume", "filer", "webdav", "admin"):
            port = free_port(grpc_offset=True)
            while port in ports.values() or port == self.s3_port:
                port = free_port(grpc_offset=True)
            ports[name] = port
        env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
        self._spawn([self.exe, "mini", f"-dir={self.place / 'data'}", "-ip=127.0.0.1",
                     "-ip.bind=127.0.0.1", f"-s3.port={self.s3_port}",
                     *(f"-{name}.port={port}" for name, port in ports.items()),
                     "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
                     f"-bucket={BUCKET}"], env=env)
        (self.place / "data").mkdir(exist_ok=True)
        assert self.proc is not None
        wait_port(self.s3_port, self.proc, timeout=30, what="weed mini")
        self._wait_bucket(30)

    def _wait_bucket(self, timeout: float) -> None:
        """The S3 port listens before the filer behind it serves the bucket: wait until
        a HEAD of the bucket succeeds (a node started before that would fail its own)."""
        import botocore.session
        from botocore.config import Config

        client = botocore.session.get_session().create_client(
            "s3", region_name="us-east-1", endpoint_url=self.endpoint,
            aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
            config=Config(connect_timeout=2, read_timeout=5, retries={"max_attempts": 1},
                          s3={"addressing_style": "path"}))
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        try:
            while time.monotonic() < deadline:
                assert self.proc is not None
                if self.proc.poll() is not None:
                    raise RuntimeError(f"weed mini exited with status {self.proc.returncode}")
                try:
                    client.head_bucket(Bucket=BUCKET)
                    return
                except Exception as exc:  # not serving yet: ask again
                    last = exc
                time.sleep(0.1)
        finally:
            client.close()
        raise RuntimeError(f"weed mini did not serve the bucket within {timeout:g} s: {last}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        super().stop(sig)  # SeaweedFS is stopped with SIGKILL (it may linger otherwise)


class HAProxyEngine(Engine):
    """HAProxy in TCP mode in front of edgenet nodes, sending PROXY v2 headers, each
    node checked on its admin ``/healthz``. ``port`` balances over every node;
    ``pinned[i]`` reaches node i only (so a test can choose the node)."""

    def __init__(self, place: Path, nodes: list[tuple[int, int]]) -> None:
        place.mkdir(parents=True, exist_ok=True)
        super().__init__(place / "haproxy.log")
        self.exe = engine_path("haproxy")
        self.port = free_port()
        self.pinned = [free_port() for _ in nodes]
        self.config = place / "haproxy.cfg"

        def server(i: int, dev: int, admin: int) -> str:
            return (f"    server n{i} 127.0.0.1:{dev} send-proxy-v2 check port {admin} "
                    "inter 300ms fall 2 rise 1")
        servers = "\n".join(server(i, d, a) for i, (d, a) in enumerate(nodes, 1))
        pinned = "".join(f"listen node{i}\n    bind 127.0.0.1:{port}\n{server(i, d, a)}\n"
                         for i, ((d, a), port) in enumerate(zip(nodes, self.pinned), 1))
        self.config.write_text(f"""global
    maxconn 4096
defaults
    mode tcp
    timeout connect 2s
    timeout client 1h
    timeout server 1h
    timeout check 1s
    option httpchk GET /healthz
    http-check expect status 200
    retries 3
    option redispatch
frontend devices
    bind 127.0.0.1:{self.port}
    default_backend edgenet
backend edgenet
    balance roundrobin
{servers}
{pinned}""")

    def start(self) -> None:
        self._spawn([self.exe, "-f", str(self.config), "-db"])
        assert self.proc is not None
        wait_port(self.port, self.proc, what="haproxy")


class SessionEngines:
    """The engines shared by the whole test session, started on first use (by a
    fixture or by a backend opener of tests/backends.py) and stopped at its end."""

    def __init__(self) -> None:
        self._place: Path | None = None
        self._redis: RedisEngine | None = None
        self._seaweed: SeaweedEngine | None = None

    def _dir(self, name: str) -> Path:
        if self._place is None:
            self._place = Path(tempfile.mkdtemp(prefix="edgenet-engines-"))
        return self._place / name

    def redis(self) -> RedisEngine:
        if self._redis is None:
            engine = RedisEngine(self._dir("redis"))
            engine.start()
            self._redis = engine
        return self._redis

    def seaweed(self) -> SeaweedEngine:
        if self._seaweed is None:
            engine = SeaweedEngine(self._dir("seaweed"))
            engine.start()
            self._seaweed = engine
        return self._seaweed

    def stop_all(self) -> None:
        for engine in (self._redis, self._seaweed):
            if engine is not None:
                engine.stop()
        self._redis = self._seaweed = None
        if self._place is not None:
            shutil.rmtree(self._place, ignore_errors=True)
            self._place = None


#: The session's engines (tests only; stopped by ``_stop_session_engines``).
ENGINES = SessionEngines()


@pytest.fixture(scope="session", autouse=True)
def _stop_session_engines() -> Iterator[None]:
    yield
    ENGINES.stop_all()


@pytest.fixture(scope="session")
def redis_engine() -> RedisEngine:
    return ENGINES.redis()


@pytest.fixture(scope="session")
def seaweed_engine() -> SeaweedEngine:
    return ENGINES.seaweed()
