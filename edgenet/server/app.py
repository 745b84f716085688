"""The central node's asyncio application: accept, heartbeat, shutdown.

``EdgeServer`` owns the state objects (active devices, lockouts, stored files,
logs) and the set of live connections. The admin API reads and changes state
only through it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

import structlog

from edgenet import __version__
from edgenet.config import ServerConfig
from edgenet.server.auth import Credentials
from edgenet.server.commands import DeviceListing
from edgenet.server.connection import DeviceConnection
from edgenet.server.logs import DEVICE_LOG, device_log_lines, write_atomically
from edgenet.server.state import ActiveDevices, LockoutTracker
from edgenet.server.store import FileStore

log = structlog.get_logger("edgenet.server")

#: Seconds given to connections to close on shutdown before they are cancelled.
SHUTDOWN_GRACE = 3.0


class DeviceLogWriter:
    """Keeps ``edge-device-log.txt`` equal to the active list.

    Changes in one turn of the event loop are written once (a rewrite costs
    O(devices), so 1,000 logins at once must not cost 1,000 rewrites).
    ``request()`` returns a future that resolves once the file holds the change.
    """

    def __init__(self, path: Path, devices: ActiveDevices) -> None:
        self.path = path
        self.devices = devices
        self._waiters: list[asyncio.Future[None]] = []
        self._scheduled = False
        self.writes = 0

    def request(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._write)
        return fut

    def write_now(self) -> None:
        write_atomically(self.path, device_log_lines(self.devices))
        self.writes += 1

    def _write(self) -> None:
        self._scheduled = False
        waiters, self._waiters = self._waiters, []
        try:
            self.write_now()
        except OSError as exc:
            log.error("device_log_write_failed", error=str(exc))
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)


class EdgeServer:
    def __init__(self, config: ServerConfig, credentials: Credentials,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.credentials = credentials
        self.clock = clock
        self.agent = f"edgenet/{__version__}"
        self.devices = ActiveDevices()
        self.lockouts = LockoutTracker(config.max_attempts, config.block_seconds)
        self.store = FileStore(config.data_dir)
        self.device_log = DeviceLogWriter(config.data_dir / DEVICE_LOG, self.devices)
        self.listing = DeviceListing(self.devices)
        self.connections: set[DeviceConnection] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.base_events.Server | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self.started_at = clock()
        #: Extra services (the admin API) started and stopped with the server.
        self.on_start: list[Callable[[EdgeServer], Awaitable[None]]] = []
        self.on_stop: list[Callable[[EdgeServer], Awaitable[None]]] = []

    # -- life cycle -----------------------------------------------------------

    async def start(self) -> list[tuple[str, int]]:
        """Bind and start accepting. Returns the bound (host, port) addresses."""
        # Nobody is connected when the server starts: the device log starts empty.
        self.device_log.write_now()
        if self.store.removed_temporaries:
            log.info("temporaries_removed", count=self.store.removed_temporaries)
        host: str | None = self.config.host
        family = socket.AF_UNSPEC
        if host in ("", "*"):
            host = None
        self._server = await asyncio.start_server(
            self._accept, host, self.config.port, family=family, reuse_address=True,
            limit=256 * 1024, backlog=4096,
        )
        addresses = [sock.getsockname()[:2] for sock in self._server.sockets]
        self._heartbeat_task = asyncio.create_task(self._heartbeats())
        for hook in self.on_start:
            await hook(self)
        return [(str(a[0]), int(a[1])) for a in addresses]

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Ordered shutdown: stop accepting, tell devices, wait a bounded time, cancel."""
        if self._server is not None:
            self._server.close()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        for conn in list(self.connections):
            conn.disconnect("shutdown", "the server is shutting down")
        if self._tasks:
            _, pending = await asyncio.wait(list(self._tasks), timeout=SHUTDOWN_GRACE)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        for hook in self.on_stop:
            await hook(self)
        try:
            self.device_log.write_now()
        except OSError:
            pass

    # -- connections ----------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        conn = DeviceConnection(self, reader, writer)
        self.connections.add(conn)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await conn.run()
        except Exception:  # a bug of ours: log it, keep serving everybody else
            log.exception("connection_crashed", peer=conn.peer)
        finally:
            self.connections.discard(conn)
            if task is not None:
                self._tasks.discard(task)

    async def _heartbeats(self) -> None:
        interval = max(0.05, min(1.0, self.config.heartbeat / 10))
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for conn in list(self.connections):
                try:
                    conn.heartbeat(now)
                except Exception:
                    log.exception("heartbeat_failed", peer=conn.peer)

    # -- operations for the admin API ------------------------------------------

    def disconnect_device(self, name: str, message: str = "an operator disconnected this device"
                          ) -> bool:
        dev = self.devices.get(name)
        if dev is None:
            return False
        self.devices.remove(name, session=dev.session)
        self.device_log.request()
        log.info("disconnect", device=name, reason="admin")
        dev.session.disconnect("disconnected", message)
        return True

    def info(self) -> dict[str, Any]:
        return {"version": __version__, "started_at": self.started_at, "pid": os.getpid(),
                "devices": len(self.devices), "connections": len(self.connections)}


async def serve(config: ServerConfig, credentials: Credentials,
                ready: Callable[[EdgeServer, list[tuple[str, int]]], None] | None = None,
                extra: Callable[[EdgeServer], None] | None = None) -> int:
    """Run the server until SIGINT/SIGTERM. A second SIGINT forces exit."""
    server = EdgeServer(config, credentials)
    if extra is not None:
        extra(server)
    addresses = await server.start()
    if ready is not None:
        ready(server, addresses)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = 0

    def on_signal(signame: str) -> None:
        nonlocal signals
        signals += 1
        if signals > 1:
            log.warning("forced_exit", signal=signame)
            os._exit(1)
        log.info("shutdown_requested", signal=signame)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig.name)
        except (NotImplementedError, RuntimeError):  # not on this platform
            pass
    await stop.wait()
    await server.close()
    log.info("server_stopped")
    return 0
