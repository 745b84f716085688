"""asyncio adapter for UVF: one UDP socket, many transfers in both directions.

Glue only: what to do with a datagram, an offer, a file or a deadline is decided by the
sans-I/O ``TransferSet``. The socket's reader callback drains a batch of datagrams
(``udpsocket.receive_batch``) and feeds each to it with ``loop.time()`` as ``now``; then, once
per batch, ``_transmit`` sends the datagrams it returns (so ACKs go out once per batch, not per
datagram), passes its events to ``on_event`` and its log records to structlog, starts its
file operations in worker threads (``files.TransferFiles``: reads, writes, fsync and rename
never run on the loop) and re-arms the one ``call_at`` timer for its next deadline. A
finished file operation is fed back the same way.

A plain ``DatagramProtocol`` costs one Python callback per datagram and tops out near 40,000
datagrams/s; the reader callback on a non-blocking socket, with GRO/GSO where available, lets
one wake-up move hundreds.

Datagrams of the path types (registration, probes, the relay's envelope: ``natpacket``) go
to the endpoint's ``PathAgent`` (``pathagent.py``, the glue of the sans-I/O ``paths``); a
RELAY datagram from the relay with a live token is unwrapped and fed to the transfers with
the relay as its route, and a transfer whose send address is a ``RelayRoute`` has its
datagrams wrapped on the way out. These two modules (and ``deadline.py``, their one
``call_at`` timer) are the only ones of the package that import asyncio or structlog.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import structlog

from . import fileops as fo
from . import files, udpsocket
from .deadline import DeadlineTimer
from .natpacket import FIRST_PATH_TYPE, PathType
from .natpacket import RELAY_OVERHEAD as _ENVELOPE
from .options import EndpointStats, SentFile, TransferError, TransferEvent, TransferOptions
from .packet import DATA_HEADER_SIZE, MAX_DATAGRAM
from .pathagent import PathAgent
from .paths import PathConfig, RelayRoute, relay_key
from .transfers import TransferSet

__all__ = ["EndpointStats", "SentFile", "TransferEndpoint", "TransferError", "TransferEvent",
           "TransferOptions"]

log = structlog.get_logger(__name__)

#: How long ``close`` waits for files being saved, and then for the last file operations.
CLOSE_WAIT = 10.0
#: A relayed DATA datagram's bytes beyond its chunk (its header and the relay's envelope).
MAX_RELAY_OVERHEAD = DATA_HEADER_SIZE + _ENVELOPE
#: Worker threads for file operations (one operation per transfer at a time), apart from the
#: loop's default executor so that a slow disk cannot starve its other users.
FILE_THREADS = 4


class TransferEndpoint:
    def __init__(
        self,
        sock: socket.socket,
        data_dir: Path,
        options: TransferOptions,
        on_event: Callable[[TransferEvent], None] | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._options = options
        self._on_event = on_event
        self._core = TransferSet(options, data_dir)
        self.stats: EndpointStats = self._core.stats
        self._files = files.TransferFiles(data_dir)
        self._threads = ThreadPoolExecutor(FILE_THREADS, thread_name_prefix="uvf-files")
        self._gro = options.use_gro and udpsocket.enable_gro(sock)
        self._out = udpsocket.QueuedSender(sock, options.use_gso)
        #: Registration with the server's rendezvous, probes, the relay's tokens.
        self.paths = PathAgent(self._loop, sock.family, self._send,
                               PathConfig(probe_timeout=options.probe_timeout))
        self._timer = DeadlineTimer(self._loop, self._on_timer)
        self._futures: dict[int, asyncio.Future[SentFile]] = {}  # outgoing transfer id -> end
        self._ops: dict[asyncio.Future[fo.FileOpResult], fo.FileOp] = {}  # in worker threads
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._core.schedule_sweeps(self._loop.time())  # kept partials: now, then on a timer
        self._rearm()
        log.debug("uvf.bound", port=self.port, gro=self._gro, gso=self._out.batch.gso)

    @classmethod
    async def bind(
        cls,
        host: str,
        port: int,
        data_dir: Path,
        *,
        options: TransferOptions = TransferOptions(),  # noqa: B008 - frozen, so safe to share
        on_event: Callable[[TransferEvent], None] | None = None,
    ) -> TransferEndpoint:
        """Bind ``host:port`` (0 = any free port); raises OSError if it is taken."""
        sock = udpsocket.open_socket(host, port, options.socket_buffer)
        try:
            return await cls.from_socket(sock, data_dir, options=options, on_event=on_event)
        except BaseException:
            sock.close()
            raise

    @classmethod
    async def from_socket(
        cls,
        sock: socket.socket,
        data_dir: Path,
        *,
        options: TransferOptions = TransferOptions(),  # noqa: B008 - frozen, so safe to share
        on_event: Callable[[TransferEvent], None] | None = None,
    ) -> TransferEndpoint:
        """Adopt an already bound UDP socket (e.g. the one a client bound at start-up to
        report its port); the endpoint owns it from now on and closes it in ``close``."""
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("UVF needs a UDP socket")
        udpsocket.tune_socket(sock, options.socket_buffer)
        data_dir = Path(data_dir)
        await asyncio.to_thread(data_dir.mkdir, parents=True, exist_ok=True)
        return cls(sock, data_dir, options, on_event)

    # -- public API ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def family(self) -> int:
        return int(self._sock.family)

    def active_transfers(self) -> int:
        """Incoming plus outgoing transfers still running."""
        return self._core.running()

    async def wait_idle(self, timeout: float) -> bool:
        """True once no transfer is running (False if ``timeout`` passes first)."""
        self._update_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def send_file(
        self, peer: tuple[str, int] | RelayRoute, path: Path, sender_name: str, *,
        name: str | None = None
    ) -> int:
        """Send ``path`` to ``peer`` (an address, or a route through the relay) as ``name``
        (default: its own name); returns the file size once the receiver confirmed it
        verified the SHA-256 and saved the file. Raises TransferError otherwise. A symbolic
        link as the last component is not followed."""
        return (await self.send(peer, path, sender_name, name=name)).size

    async def send(
        self, peer: tuple[str, int] | RelayRoute, path: Path, sender_name: str, *,
        name: str | None = None
    ) -> SentFile:
        """``send_file``, saying also where the transfer resumed (``SentFile``)."""
        path = Path(path)
        name = path.name if name is None else name
        self._core.check_send(sender_name, name)
        sockaddr: udpsocket.SockAddr
        if isinstance(peer, RelayRoute):
            if self._options.chunk_size + MAX_RELAY_OVERHEAD > MAX_DATAGRAM:
                raise TransferError("bad_offer", "chunks this large cannot go through the relay "
                                    f"(at most {MAX_DATAGRAM - MAX_RELAY_OVERHEAD} bytes)")
            sockaddr, key = peer, relay_key(peer.token)
        else:
            sockaddr, key = await self._resolve(peer)
        try:
            file, digest, size = await asyncio.to_thread(files.open_to_send, path)
        except files.NotRegularFile:
            raise TransferError("unreadable", f"{path} is not a regular file") from None
        except OSError as exc:
            raise TransferError(
                "unreadable", f"cannot read {path}: {exc.strerror or exc}"
            ) from None
        try:
            tid = self._core.start_send(
                sockaddr,
                key,
                sender_name=sender_name,
                filename=name,
                size=size,
                sha256=digest,
                now=self._loop.time(),
            )
        except BaseException:
            file.close()
            raise
        self._files.adopt(tid, file)
        future: asyncio.Future[SentFile] = self._loop.create_future()
        self._futures[tid] = future
        self._transmit(self._loop.time())
        try:
            return await future
        except asyncio.CancelledError:
            self._core.cancel(tid)
            self._transmit(self._loop.time())
            raise
        finally:
            self._futures.pop(tid, None)

    async def close(self, notify_peers: bool = True) -> None:
        """Stop: finish saving verified files (bounded wait), abort the rest (telling peers
        unless ``notify_peers`` is False), remove temp files, close the socket."""
        if self._closed:
            return
        self._closed = True
        self._core.closing = True
        self.paths.close()
        saving = [f for f, op in self._ops.items() if isinstance(op, fo.SaveFile)]
        if saving:
            await asyncio.wait(saving, timeout=CLOSE_WAIT)
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        self._timer.cancel()
        self._core.close()
        for addr, datagrams in self._core.datagrams_to_send(self._loop.time()):
            if notify_peers:
                try:
                    self._out.batch.send(addr, datagrams)
                except udpsocket.SendBlocked:
                    pass
        self._transmit(self._loop.time())
        deadline = self._loop.time() + CLOSE_WAIT
        while self._ops and (left := deadline - self._loop.time()) > 0:
            await asyncio.wait(list(self._ops), timeout=left)
        self._threads.shutdown(wait=False)  # what still hangs (a dead disk) is left to it
        self._out.clear()
        self._sock.close()
        self._update_idle()

    # -- the glue --------------------------------------------------------------------------------

    def _on_readable(self) -> None:
        now = self._loop.time()
        receive = self._core.receive_datagram
        paths = self.paths
        cache: dict[object, udpsocket.PeerKey] = {}

        def deliver(data: bytes, addr: udpsocket.SockAddr) -> None:
            key = cache.get(addr)
            if key is None:
                try:
                    key = cache[addr] = udpsocket.peer_key(addr)
                except ValueError:
                    self.stats.dropped_malformed += 1
                    return
            if len(data) > 3 and data[3] >= FIRST_PATH_TYPE:  # not a transfer's datagram
                if data[3] != PathType.RELAY:
                    paths.receive(data, addr, key, now)
                    return
                inner = paths.unwrap(data, key, now)
                if inner is None:
                    return
                data, addr, key = inner
            receive(data, addr, key, now)

        self.stats.datagrams_received += udpsocket.receive_batch(self._sock, self._gro, deliver)
        self._transmit(now)
        paths.flush(now)

    def _transmit(self, now: float) -> None:
        """Everything the core has for the outside, after any input to it."""
        core = self._core
        for addr, datagrams in core.datagrams_to_send(now):
            self._send(addr, datagrams)
        for record in core.pop_logs():
            getattr(log, record.level)(record.event, **record.fields)
        for event in core.pop_events():
            self._deliver(event)
        for op in core.file_ops():
            self._start_op(op)
        self._rearm()
        self._update_idle()

    def _deliver(self, event: TransferEvent) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a bug in the callback must not break every transfer
                log.exception("uvf.on_event_failed", kind=event.kind)
        if event.kind in ("outgoing_done", "outgoing_failed"):
            future = self._futures.get(int(event.transfer_id, 16))
            if future is not None and not future.done():
                if event.kind == "outgoing_done":
                    future.set_result(SentFile(event.size, event.resumed_at))
                else:
                    future.set_exception(TransferError(event.code, event.message))

    def _start_op(self, op: fo.FileOp) -> None:
        if isinstance(op, fo.Release):  # the last word on a transfer: nobody waits after it
            future = self._futures.get(op.transfer_id)
            if future is not None and not future.done():
                future.set_exception(TransferError("closed", "the transfer endpoint closed"))
        try:
            running = self._loop.run_in_executor(self._threads, self._files.run, op)
        except RuntimeError:  # closed after a hung operation: the stale-file sweep cleans up
            return
        self._ops[running] = op
        running.add_done_callback(functools.partial(self._op_done, op))

    def _op_done(self, op: fo.FileOp, running: asyncio.Future[fo.FileOpResult]) -> None:
        self._ops.pop(running, None)
        result: fo.FileOpResult
        if running.cancelled():
            result = fo.FileOpFailed("cancelled", "the file operation was cancelled")
        elif (exc := running.exception()) is not None:  # a bug, not a disk error
            log.error("uvf.file_op_crashed", op=type(op).__name__, exc_info=exc)
            result = fo.FileOpFailed("internal error", repr(exc))
        else:
            result = running.result()
        now = self._loop.time()
        self._core.file_op_done(op, result, now)
        self._transmit(now)

    def _send(self, addr: udpsocket.SockAddr, datagrams: list[bytes]) -> None:
        if self._closed:
            return
        if type(addr) is RelayRoute:  # through the relay: each datagram in its envelope
            prefix = addr.prefix
            datagrams = [prefix + d for d in datagrams]
            addr = addr.server
        self.stats.datagrams_sent += len(datagrams)
        if self._out.send(addr, datagrams):
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
        self.stats.send_errors = self._out.batch.errors
        self.stats.send_queue_dropped = self._out.dropped

    def _on_writable(self) -> None:
        if self._out.flush():
            self._loop.remove_writer(self._sock.fileno())

    def _rearm(self) -> None:
        if not self._closed:
            self._timer.rearm(self._core.get_timer())

    def _on_timer(self, now: float) -> None:
        self._core.handle_timer(now)
        self._transmit(now)

    def _update_idle(self) -> None:
        if self._core.busy:
            self._idle.clear()
        else:
            self._idle.set()

    async def _resolve(self, peer: tuple[str, int]) -> tuple[udpsocket.SockAddr, udpsocket.PeerKey]:
        host, port = peer[0], int(peer[1])
        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            try:
                infos = await self._loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
            except OSError as exc:
                raise TransferError("bad_peer", f"cannot resolve {host}: {exc}") from None
            usable = [i for i in infos if i[0] == self.family or (self.family == socket.AF_INET6)]
            if not usable:
                raise TransferError("bad_peer", f"no usable address for {host}")
            host = str(usable[0][4][0])
        try:
            sockaddr = udpsocket.sockaddr_for(self.family, host, port)
        except OSError as exc:
            raise TransferError("bad_peer", f"cannot reach {host}: {exc.strerror}") from None
        return sockaddr, udpsocket.peer_key(sockaddr)
