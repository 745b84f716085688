"""Shared fixtures: an in-process server on 127.0.0.1 with an OS-chosen port, and
a real server process started from the package or the built zipapp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from tests.engines import (  # noqa: F401 - session fixtures
    _stop_session_engines,
    redis_engine,
    seaweed_engine,
)

ROOT = Path(__file__).resolve().parent.parent
PYZ = ROOT / "build" / "edgenet.pyz"

CREDENTIALS = """\
# test devices
alpha alphapass
beta betapass
gamma gammapass
"""


@pytest.fixture
def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.txt"
    path.write_text(CREDENTIALS)
    return path


@pytest.fixture
def server_config(tmp_path: Path) -> ServerConfig:
    return ServerConfig(port=0, max_attempts=3, host="127.0.0.1",
                        data_dir=tmp_path / "server", block_seconds=2.0)


@pytest.fixture
async def edge_server(server_config: ServerConfig) -> AsyncIterator[EdgeServer]:
    server = EdgeServer(server_config, Credentials.parse(CREDENTIALS))
    await server.start()
    yield server
    await server.close()


async def start_server(config: ServerConfig, **changes: Any) -> EdgeServer:
    server = EdgeServer(replace(config, **changes), Credentials.parse(CREDENTIALS))
    await server.start()
    return server


#: Seconds a server process may take to say it is ready, and to stop after SIGTERM
#: (its shutdown grace included), on a loaded 2-core box.
READY_SECONDS, STOP_SECONDS = 60.0, 30.0


class ServerProcess:
    """A real ``edgenet server`` process; its port is read from the ready event."""

    def __init__(self, argv: list[str], data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.stderr_path = data_dir.parent / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
        self._err = self.stderr_path.open("wb")
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=self._err, env=env)
        self.port = 0
        self.events: list[dict[str, Any]] = []
        deadline = time.monotonic() + READY_SECONDS
        while time.monotonic() < deadline and not self.port:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.stderr_path.read_text()}")
            for ev in self.read_events():
                if ev.get("event") == "server_ready":
                    self.port = int(ev["port"])
            time.sleep(0.05)
        if not self.port:
            self.stop()
            raise RuntimeError(f"server did not become ready in {READY_SECONDS:g} s: "
                               f"{self.stderr_path.read_text(errors='replace')[-2000:]}")

    def read_events(self) -> list[dict[str, Any]]:
        self._err.flush()
        events = []
        for line in self.stderr_path.read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        self.events = events
        return events

    def admin_port(self) -> int:
        """The admin API's port, from its ready event (waited for: 10 s at most)."""
        for _ in range(200):
            for ev in self.read_events():
                if ev.get("event") == "admin_ready":
                    return int(ev["port"])
            time.sleep(0.05)
        raise AssertionError("no admin_ready event")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._err.close()


def server_argv(use_pyz: bool = False) -> list[str]:
    if use_pyz:
        return [sys.executable, str(PYZ)]
    return [sys.executable, "-m", "edgenet"]


@pytest.fixture
def server_process(tmp_path: Path, credentials_file: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    data.mkdir()
    proc = ServerProcess(server_argv() + ["server", "0", "3", "--host", "127.0.0.1",
                                          "--credentials", str(credentials_file),
                                          "--data-dir", str(data), "--block-seconds", "2",
                                          "--log-format", "json", "--no-admin"], data)
    yield proc
    proc.stop()
