"""Real engines for the fleet tests: redis-server, SeaweedFS's S3 server, HAProxy.

Each runs as a process of the test session on loopback ports chosen free, and is
stopped by the fixture that started it. Without the engine installed the tests
that need it skip, unless ``EDGENET_REQUIRE_FLEET=1`` (set by .ci/run, which
installs them), where a missing engine fails.

An engine runs in a session (and process group) of its own, so that a Ctrl-C meant
for pytest reaches pytest, which stops it in order. No path leaves one running:
a start that fails stops what it started; whatever is still running when the
interpreter exits is stopped by an ``atexit`` hook; and a test run killed outright
(SIGKILL, or a signal pytest does not handle) takes its engines with it, through
Linux's parent-death signal. Only processes of this registry are ever signalled,
each through its own process group while its leader is still an unreaped child of
ours (so the group is certainly the one we started).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

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


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 60.0,
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


#: Engine processes started by this process and not yet stopped.
_LIVE: set[subprocess.Popen[bytes]] = set()
_PR_SET_PDEATHSIG = 1


def _prctl() -> Any:
    """libc's prctl, looked up here (nothing may be imported or looked up between fork
    and exec), or None where there is none (not Linux: atexit and the fixtures remain)."""
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def _death_signal(prctl: Any) -> Callable[[], None]:
    def arm() -> None:  # in the engine's process, before exec: SIGKILL when we die
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    return arm


def _exited(proc: subprocess.Popen[bytes]) -> bool:
    """Whether ``proc`` has ended, without reaping it (its group stays ours to signal)."""
    if proc.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    if proc.returncode is None:  # not reaped: the group id is still our child's
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)


def _wait_exited(proc: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _exited(proc):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> None:
    """Stop an engine and everything in its process group: ``sig``, SIGKILL after
    ``timeout`` seconds; then the group's stragglers; then reap it."""
    try:
        if not _exited(proc):
            _signal_group(proc, sig)
            if not _wait_exited(proc, timeout):
                _signal_group(proc, signal.SIGKILL)
        _signal_group(proc, signal.SIGKILL)  # any child it left in its group
        proc.wait(30)
    finally:
        _LIVE.discard(proc)


@atexit.register
def _stop_leftovers() -> None:
    """Engines no fixture stopped (a run aborted between start and teardown)."""
    for proc in list(_LIVE):
        stop_process(proc, signal.SIGKILL, timeout=5.0)


class Engine:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        # The parent-death signal follows the thread that starts the engine: only the
        # main thread (which lives as long as the run) may arm it.
        prctl = _prctl() if threading.current_thread() is threading.main_thread() else None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True,
                                         preexec_fn=_death_signal(prctl) if prctl else None)
        _LIVE.add(self.proc)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            stop_process(self.proc, sig)
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
                    self.stop()
                    raise
                self.stop()
                if not self.started:
                    self.port = free_port()
                time.sleep(0.2)
        self.started = True
        # Loading the append-only file after a restart: wait until it answers PING.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # A loaded box may take longer than a second to answer: ask again.
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server does not answer PING within 60 s")


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
        # Its internal ports (and their gRPC ports, +10000) were free when chosen; another
        # process may bind one first, and weed exits: it starts again on new internal
        # ports (the S3 port, which the nodes know, stays).
        for attempt in range(4):
            ports: dict[str, int] = {}
            for name in ("master", "volume", "filer", "webdav", "admin"):
                port = free_port(grpc_offset=True)
                while port in ports.values() or port == self.s3_port:
                    port = free_port(grpc_offset=True)
                ports[name] = port
            env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_KEY,
                   "AWS_SECRET_ACCESS_KEY": S3_SECRET}
            self._spawn([self.exe, "mini", f"-dir={self.place / 'data'}", "-ip=127.0.0.1",
                         "-ip.bind=127.0.0.1", f"-s3.port={self.s3_port}",
                         *(f"-{name}.port={port}" for name, port in ports.items()),
                         "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
                         f"-bucket={BUCKET}"], env=env)
            (self.place / "data").mkdir(exist_ok=True)
            assert self.proc is not None
            try:
                wait_port(self.s3_port, self.proc, timeout=60, what="weed mini")
                self._wait_bucket(60)
                return
            except RuntimeError as exc:
                exited = self.proc is not None and self.proc.poll() is not None
                self.stop()
                if not exited or attempt == 3:
                    tail = self.log.read_text(errors="replace").splitlines()[-5:]
                    raise RuntimeError(f"{exc}; weed.log ends: {tail}") from None
                time.sleep(0.5)

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
        try:
            wait_port(self.port, self.proc, timeout=60, what="haproxy")
        except RuntimeError:
            self.stop()
            raise


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
        engines = [e for e in (self._redis, self._seaweed) if e is not None]
        self._redis = self._seaweed = None
        try:
            for engine in engines:
                engine.stop()
        finally:
            _stop_leftovers()
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
