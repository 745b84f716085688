"""The central node's asyncio application: accept, heartbeat, shutdown.

``EdgeServer`` opens the server's state (``ServerState``: the shared state behind
its interfaces, and this node's helpers), hands it to every connection, and owns
the set of live connections and the tasks it started. The admin API reads the
state through its interfaces and asks the server for what only the server does
(disconnect a device, reload the credentials, say how it is).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from edgenet import __version__
from edgenet.config import ServerConfig
from edgenet.server.auth import Credentials, CredentialsError
from edgenet.server.collector import tune_collector
from edgenet.server.acceptor import DeviceListener
from edgenet.server.connection import ConnectionHooks, DeviceConnection
from edgenet.server.connectioncap import ConnectionCap
from edgenet.server.descriptors import FLEET_CLIENT_FDS, connection_budget, log_fd_limit
from edgenet.server.events import EventBuffer
from edgenet.server.interfaces import ActiveDevice, Backends, EventLog, EvictReason
from edgenet.server.rendezvous import Rendezvous
from edgenet.server.state import ServerState, open_embedded
from edgenet.server.storagewatch import StorageWatch
from edgenet.server.udp import RendezvousEndpoint, RendezvousStartError, start_rendezvous
from edgenet.server.uploadslots import UploadSlots
from edgenet.wire import messages as m
from edgenet.wire.frames import encode_frame

if TYPE_CHECKING:
    from edgenet.server.proxied import ProxiedListener

log = structlog.get_logger("edgenet.server")
T = TypeVar("T")

#: Seconds given to connections to close after the grace for uploads, before they are cancelled.
SHUTDOWN_GRACE = 3.0
#: Seconds the last checkpoints of uploads cut by the shutdown may take to be written.
CHECKPOINT_PATIENCE = 10.0


#: Opens the shared state of a server (the embedded one by default; a fleet's backends).
BackendOpener = Callable[[ServerConfig, float], Awaitable[Backends]]


class EdgeServer:
    def __init__(self, config: ServerConfig, credentials: Credentials,
                 clock: Callable[[], float] = time.time, events: EventLog | None = None,
                 open_backends: BackendOpener = open_embedded) -> None:
        self.config = config
        self.clock = clock
        self._credentials = credentials
        #: The event log (fed by structlog when it is in the logging chain).
        self.events: EventLog = events if events is not None else EventBuffer()
        self._open_backends = open_backends
        self._state: ServerState | None = None
        self.closing = False
        self.connections: set[DeviceConnection] = set()
        self._hooks = ConnectionHooks(self._admit, self._closed)
        #: Set once the last connection has ended (made by ``close``).
        self._all_closed: asyncio.Future[None] | None = None
        #: Credentials reloads started by SIGHUP (cancelled, not awaited, on shutdown).
        self._reloads: set[asyncio.Task[None]] = set()
        self._server: DeviceListener | ProxiedListener | None = None
        #: Device connections allowed at once (``config.max_connections``, or what the
        #: open-file limit allows when that is 0; set by ``start``).
        self.max_connections = config.max_connections
        self._cap = ConnectionCap(config.max_connections)
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._storage_watch: asyncio.Task[None] | None = None
        #: The UDP rendezvous and relay (None while closed or with --udp-port 0).
        self.udp: RendezvousEndpoint | None = None
        self.started_at = clock()
        #: Extra services (the admin API) started and stopped with the server.
        self.on_start: list[Callable[[EdgeServer], Awaitable[None]]] = []
        self.on_stop: list[Callable[[EdgeServer], Awaitable[None]]] = []

    # -- life cycle -----------------------------------------------------------

    @property
    def state(self) -> ServerState:
        assert self._state is not None, "the server is not open yet (await open())"
        return self._state

    async def open(self) -> ServerState:
        """Open the state (once): the data dir is repaired here, stamped with the clock."""
        if self._state is None:
            backends = await self._open_backends(self.config, self.clock())
            self._state = ServerState.build(self.config, self._credentials, self.clock,
                                            f"edgenet/{__version__}", backends, self.events)
        return self._state

    async def start(self) -> list[tuple[str, int]]:
        """Open the state, bind and start accepting. Returns the bound (host, port) addresses."""
        state = await self.open()
        clients = self.config.redis_max_connections + FLEET_CLIENT_FDS \
            if self.config.redis_url else 0
        budget = connection_budget(self.config.max_connections, clients)
        self.max_connections = budget.connections
        self._cap = ConnectionCap(self.max_connections)
        state.upload_slots = UploadSlots(budget.uploads)  # nobody is connected yet
        # Nobody is connected when the server starts: the device log starts empty.
        await state.device_log.write_now()
        ssl_context, handshake_timeout = None, None
        if self.config.tls_cert is not None and self.config.tls_key is not None:
            from edgenet.tls import HANDSHAKE_TIMEOUT, server_context

            ssl_context = server_context(self.config.tls_cert, self.config.tls_key)
            handshake_timeout = HANDSHAKE_TIMEOUT
        host: str | None = self.config.host
        if host in ("", "*"):
            host = None
        busy = encode_frame(m.reply_to_fields(m.ErrorReply(
            None, "server_busy", "the server has run out of file descriptors; try again later")))
        listener: DeviceListener | ProxiedListener
        if self.config.proxy_protocol:
            from edgenet.server.proxied import ProxiedListener, parse_networks

            listener = ProxiedListener(self._connection,
                                       parse_networks(",".join(self.config.trusted_proxies)),
                                       ssl_context, handshake_timeout,
                                       busy, state.fd_exhaustion)
        else:
            listener = DeviceListener(self._connection, ssl_context, handshake_timeout, busy,
                                      state.fd_exhaustion, self._refusal)
        await listener.start(host, self.config.port)
        self._server = listener
        log_fd_limit(budget)
        addresses = [sock.getsockname()[:2] for sock in self._server.sockets]
        if self.config.udp_port != 0:
            self._open_rendezvous(state)
        if state.credentials.plain_text:
            log.warning("credentials_plain_text", count=len(state.credentials.plain_text),
                        hint="store hashes made by 'edgenet hash-password' instead")
        self._heartbeat_task = asyncio.create_task(self._heartbeats())
        self._storage_watch = asyncio.create_task(StorageWatch(state).run())
        for hook in self.on_start:
            await hook(self)
        return [(str(a[0]), int(a[1])) for a in addresses]

    def _open_rendezvous(self, state: ServerState) -> None:
        try:
            self.udp = start_rendezvous(self.config, self.port, state)
        except RendezvousStartError:
            if self._server is not None:
                self._server.close()
            raise

    @property
    def rendezvous(self) -> Rendezvous | None:
        """The UDP rendezvous and relay core (None: off, or the server is not open)."""
        return None if self._state is None else self._state.rendezvous

    @property
    def connection_count(self) -> int:
        """Device connections open now (logged in or not)."""
        return len(self.connections)

    def reply_bytes_buffered(self) -> tuple[int, int]:
        """Bytes of replies held in this process for devices (the kernel has not taken
        them yet): in all, and the most for one connection."""
        sizes = [conn.buffered for conn in self.connections]
        return sum(sizes), max(sizes, default=0)

    def upload_slots(self) -> UploadSlots | None:
        """The uploads streaming at once and waiting (None until the state is open)."""
        return self._state.upload_slots if self._state is not None else None

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Ordered shutdown: stop accepting, tell devices, let in-flight uploads and
        commands finish within ``config.shutdown_grace``, then cancel what is left (an
        upload cut short leaves no file and no log line)."""
        self.closing = True
        for reload in list(self._reloads):
            reload.cancel()
        if self._server is not None:
            self._server.close()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._storage_watch is not None:
            self._storage_watch.cancel()
        for conn in list(self.connections):
            conn.shutdown()
        if self.connections:
            self._all_closed = asyncio.get_running_loop().create_future()
            done, _ = await asyncio.wait([self._all_closed],
                                         timeout=max(self.config.shutdown_grace, 0.1))
            if not done:
                log.warning("shutdown_aborting", connections=len(self.connections))
                for conn in list(self.connections):
                    conn.cancel()
                await asyncio.wait([self._all_closed], timeout=1.0)
        if self._state is not None and not await self._state.files.finish_background(
                CHECKPOINT_PATIENCE):
            log.warning("shutdown_checkpoints_unfinished", seconds=CHECKPOINT_PATIENCE)
        for hook in self.on_stop:
            await hook(self)
        if self.udp is not None:
            self.udp.close()
        if self._state is not None:
            self._state.device_log.close()
            try:
                await self._state.device_log.write_now()
            except OSError:
                pass

    # -- connections ----------------------------------------------------------

    def _connection(self, peer: tuple[str, int] | None) -> DeviceConnection:
        """The protocol of one device connection; ``peer``: the device's address when a
        PROXY header named it (else the socket's peer)."""
        return DeviceConnection(self.state, self._hooks, peer)

    def _admit(self, conn: DeviceConnection, peer: tuple[str, int]) -> bytes | None:
        """A connection's transport is up: serve it (None), or the frame that turns it away."""
        frame = self._refusal(peer)
        if frame is None:
            self.connections.add(conn)
        return frame

    def _closed(self, conn: DeviceConnection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._all_closed is not None \
                and not self._all_closed.done():
            self._all_closed.set_result(None)

    def _refusal(self, peer: tuple[str, int], starting: int = 0) -> bytes | None:
        """The frame that turns a connection away (None: serve it); ``starting``:
        connections accepted but not yet served."""
        return self._cap.refusal(len(self.connections) + starting, self.closing,
                                 f"{peer[0]}:{peer[1]}", time.monotonic())

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

    async def disconnect_device(self, name: str, reason: EvictReason = "disconnected"
                                ) -> ActiveDevice | None:
        """Take ``name`` off the active list and close its session (the device is told
        why). Returns the entry removed (None: the name was not active)."""
        state = self.state
        dev = await state.presence.evict(name, reason)
        if dev is not None:
            state.device_log.request()
            log.info("disconnect", device=name,
                     reason="admin" if reason == "disconnected" else reason)
        return dev

    async def reload_credentials(self) -> dict[str, Any]:
        """Re-read the credentials file (SIGHUP; the admin API) without blocking the loop:
        the file is read and parsed in a worker thread, then applied here. Devices no
        longer listed are disconnected (notice ``revoked``). A file that cannot be read
        or parsed keeps the old credentials. Returns what happened, for a JSON reply."""
        return await self._apply_credentials(await _in_daemon_thread(self._read_credentials))

    def _read_credentials(self) -> Credentials | str:
        """The file's credentials, or why they cannot be used (touches no state)."""
        path = self.config.credentials
        try:
            new = Credentials.load(path)
        except CredentialsError as exc:
            return str(exc)
        if not new.entries:
            return f"{path} lists no devices; the old credentials are kept"
        return new

    async def _apply_credentials(self, new: Credentials | str) -> dict[str, Any]:
        path = self.config.credentials
        state = self.state
        if isinstance(new, str):
            log.error("credentials_reload_failed", path=str(path), error=new)
            return {"reloaded": False, "error": {"code": "bad_credentials", "message": new},
                    "devices": len(state.credentials)}
        old = state.credentials
        state.credentials = new
        revoked = [d.name for d in await state.presence.devices() if d.name not in new.entries]
        for name in revoked:
            await self.disconnect_device(name, "revoked")
        added = sorted(set(new.entries) - set(old.entries))
        removed = sorted(set(old.entries) - set(new.entries))
        log.info("credentials_reloaded", path=str(path), devices=len(new), added=len(added),
                 removed=len(removed), disconnected=revoked, plain_text=len(new.plain_text))
        return {"reloaded": True, "devices": len(new), "added": added, "removed": removed,
                "disconnected": revoked, "plain_text": len(new.plain_text)}

    def reload_on_signal(self) -> None:
        """SIGHUP: reload in a task the server tracks (shutdown cancels it: a reload is
        never waited for)."""
        async def reload() -> None:
            await self.reload_credentials()

        task = asyncio.get_running_loop().create_task(reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def info(self) -> dict[str, Any]:
        return {"version": __version__, "started_at": self.started_at, "pid": os.getpid(),
                "devices": await self.state.presence.count(),
                "connections": self.connection_count}


def _in_daemon_thread(fn: Callable[[], T]) -> asyncio.Future[T]:
    """``fn()`` on a daemon thread: a read that blocks (a credentials file on a hung
    mount) holds up neither the loop nor the exit of the process, as a thread of the
    default executor would (the interpreter waits for those at exit)."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()

    def settle(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def run() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            outcome = (False, exc)
        try:
            loop.call_soon_threadsafe(settle, *outcome)
        except RuntimeError:  # the loop is closed: nobody waits any more
            pass

    threading.Thread(target=run, name="edgenet-reload", daemon=True).start()
    return fut


async def serve(config: ServerConfig, credentials: Credentials,
                ready: Callable[[EdgeServer, list[tuple[str, int]]], None] | None = None,
                extra: Callable[[EdgeServer], None] | None = None,
                events: EventLog | None = None,
                open_backends: BackendOpener = open_embedded) -> int:
    """Run the server until SIGINT/SIGTERM. A second SIGINT forces exit."""
    server = EdgeServer(config, credentials, events=events, open_backends=open_backends)
    if extra is not None:
        extra(server)
    addresses = await server.start()
    # What exists now lives as long as the process (frozen), and full collections
    # are spaced out for bursts of logins (collector.py).
    tune_collector()
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
    try:
        loop.add_signal_handler(signal.SIGHUP, server.reload_on_signal)
    except (NotImplementedError, RuntimeError, AttributeError):  # no SIGHUP (Windows)
        pass
    await stop.wait()
    await server.close()
    log.info("server_stopped")
    return 0
