"""asyncio adapter for UVF: one UDP socket, many transfers in both directions.

This is the only module of the package that imports asyncio. It is glue: the socket's reader
callback drains a batch of datagrams (``udpsocket.receive_batch``) and feeds each to the transfer
its transfer id names, with ``loop.time()`` as ``now``; then, once per batch, every touched
transfer is asked for its datagrams (so ACKs go out once per batch, not per datagram), its
events are handled, and one ``call_at`` timer is re-armed for the earliest deadline of all.

A plain ``DatagramProtocol`` costs one Python callback per datagram and tops out near 40,000
datagrams/s; the reader callback on a non-blocking socket, with GRO/GSO where available, lets
one wake-up move hundreds.

Incoming files are written to ``.uvf-<id>.part`` in the data directory, checked against the
offered SHA-256, fsynced and linked into place under ``<sender>_<name>`` (numbered if taken).
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import secrets
import socket
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, TextIO

import structlog

from . import files, names, udpsocket
from . import packet as pk
from .congestion import CongestionConfig
from .events import DataComplete, OfferAccepted, TransferCompleted, TransferFailed
from .options import EndpointStats, TransferError, TransferEvent, TransferOptions
from .progress import ProgressBar
from .receiver import Receiver, ReceiverConfig, ReceiverState
from .recovery import RtoConfig
from .sender import Sender, SenderConfig

__all__ = ["EndpointStats", "TransferEndpoint", "TransferError", "TransferEvent", "TransferOptions"]

log = structlog.get_logger(__name__)

#: Datagrams waiting while the socket's send buffer is full; beyond this they are dropped
#: (counted in ``stats.send_queue_dropped``) and the protocol recovers them as loss.
MAX_SEND_QUEUE = 8192
#: Ids of recently ended transfers remembered (for 2 x idle timeout) so that a late duplicate
#: OFFER does not start the same transfer again.
MAX_RECENT_IDS = 1024
_SENDER_TYPES = frozenset(
    {pk.PacketType.ACCEPT, pk.PacketType.ACK, pk.PacketType.DONE, pk.PacketType.ABORT}
)
_RECEIVER_TYPES = frozenset(
    {
        pk.PacketType.OFFER,
        pk.PacketType.DATA,
        pk.PacketType.FIN,
        pk.PacketType.CLOSE,
        pk.PacketType.ABORT,
    }
)


@dataclass(eq=False)
class _Transfer:
    core: Sender | Receiver
    key: udpsocket.PeerKey
    sockaddr: udpsocket.SockAddr
    peer_name: str
    filename: str
    size: int
    started: float
    file: BinaryIO
    log: structlog.typing.FilteringBoundLogger
    outgoing: bool
    future: asyncio.Future[int] | None = None
    progress: ProgressBar | None = None
    temp_path: Path | None = None
    final_path: Path | None = None
    finalizing: asyncio.Task[None] | None = None
    reported_retx: int = 0
    last_progress_event: float = float("inf")  # set to the start time on creation
    ended: bool = False

    @property
    def tid(self) -> str:
        return f"{self.core.transfer_id:016x}"

    @property
    def running(self) -> bool:
        if self.ended:
            return False
        if isinstance(self.core, Receiver):
            return self.core.state not in (ReceiverState.DONE, ReceiverState.FAILED)
        return not self.core.finished


class TransferEndpoint:
    def __init__(
        self,
        sock: socket.socket,
        data_dir: Path,
        options: TransferOptions,
        on_event: Callable[[TransferEvent], None] | None,
        progress_stream: TextIO | None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._data_dir = data_dir
        self._options = options
        self._on_event = on_event
        self._progress_stream = progress_stream
        self.stats = EndpointStats()
        self._transfers: dict[int, _Transfer] = {}
        self._recent: OrderedDict[int, float] = OrderedDict()  # ended transfer id -> expiry
        self._gro = options.use_gro and udpsocket.enable_gro(sock)
        self._sender = udpsocket.BatchSender(sock, options.use_gso)
        self._send_queue: deque[tuple[udpsocket.SockAddr, bytes]] = deque()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._touched: dict[int, _Transfer] = {}
        self._idle = asyncio.Event()
        self._idle.set()
        self._closed = False
        self._receiver_config = ReceiverConfig(
            window_bytes=options.window_bytes, idle_timeout=options.idle_timeout
        )
        self._sender_config = SenderConfig(
            chunk_size=options.chunk_size,
            idle_timeout=options.idle_timeout,
            rto=RtoConfig(options.initial_rto, options.min_rto, options.max_rto),
            congestion=CongestionConfig(),
        )
        self._loop.add_reader(sock.fileno(), self._on_readable)
        log.debug("uvf.bound", port=self.port, gro=self._gro, gso=self._sender.gso)

    @classmethod
    async def bind(
        cls,
        host: str,
        port: int,
        data_dir: Path,
        *,
        options: TransferOptions = TransferOptions(),  # noqa: B008 - frozen, so safe to share
        on_event: Callable[[TransferEvent], None] | None = None,
        progress_stream: TextIO | None = None,
    ) -> TransferEndpoint:
        """Bind ``host:port`` (0 = any free port); raises OSError if it is taken."""
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        sock = udpsocket.open_socket(host, port, options.socket_buffer)
        try:
            return cls(sock, data_dir, options, on_event, progress_stream)
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
        progress_stream: TextIO | None = None,
    ) -> TransferEndpoint:
        """Adopt an already bound UDP socket (e.g. the one a client bound at start-up to
        report its port); the endpoint owns it from now on and closes it in ``close``."""
        if sock.type != socket.SOCK_DGRAM:
            raise ValueError("UVF needs a UDP socket")
        udpsocket.tune_socket(sock, options.socket_buffer)
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls(sock, data_dir, options, on_event, progress_stream)

    # -- public API ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def family(self) -> int:
        return int(self._sock.family)

    def active_transfers(self) -> int:
        """Incoming plus outgoing transfers still running."""
        return sum(1 for t in self._transfers.values() if t.running)

    async def wait_idle(self, timeout: float) -> bool:
        """True once no transfer is running (False if ``timeout`` passes first)."""
        self._update_idle()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            return False
        return True

    async def send_file(self, peer: tuple[str, int], path: Path, sender_name: str) -> int:
        """Send ``path`` to ``peer``; returns the file size once the receiver confirmed it
        verified the SHA-256 and saved the file. Raises TransferError otherwise."""
        if self._closed:
            raise TransferError("closed", "the transfer endpoint is closed")
        path = Path(path)
        try:
            names.saved_name(sender_name, path.name)
        except names.NameRefused as exc:
            raise TransferError("bad_name", str(exc)) from None
        outgoing = sum(1 for t in self._transfers.values() if t.outgoing)
        if outgoing >= self._options.max_outgoing:
            raise TransferError("busy", f"already sending {outgoing} files; try again later")
        sockaddr, key = await self._resolve(peer)
        try:
            file: BinaryIO = await asyncio.to_thread(open, path, "rb")  # closed when it ends
        except OSError as exc:
            raise TransferError(
                "unreadable", f"cannot read {path}: {exc.strerror or exc}"
            ) from None
        try:
            if not os.path.isfile(path):
                raise TransferError("unreadable", f"{path} is not a regular file")
            digest, size = await asyncio.to_thread(files.sha256_of, file)
            if self._closed:
                raise TransferError("closed", "the transfer endpoint is closed")
        except BaseException:
            file.close()
            raise
        tid = self._new_transfer_id()
        now = self._loop.time()
        core = Sender(
            transfer_id=tid,
            peer=key,
            sender_name=sender_name,
            filename=path.name,
            size=size,
            sha256=digest,
            reader=files.FileReader(file),
            now=now,
            config=self._sender_config,
        )
        transfer = _Transfer(
            core=core,
            key=key,
            sockaddr=sockaddr,
            peer_name=f"{key[0]}:{key[1]}",
            filename=path.name,
            size=size,
            started=now,
            file=file,
            outgoing=True,
            log=log.bind(
                transfer=f"{tid:016x}",
                peer=f"{key[0]}:{key[1]}",
                direction="out",
                file=path.name,
                size=size,
            ),
            future=self._loop.create_future(),
            progress=ProgressBar(self._progress_stream, path.name, size, now),
        )
        self._transfers[tid] = transfer
        self._idle.clear()
        transfer.log.info("uvf.offer")
        self._service(transfer, now)
        self._rearm()
        assert transfer.future is not None
        try:
            return await transfer.future
        except asyncio.CancelledError:
            if not transfer.ended:
                core.abort("cancelled", "the sender cancelled the transfer")
                self._service(transfer, self._loop.time())
            raise

    async def close(self, notify_peers: bool = True) -> None:
        """Stop: finish saving verified files (bounded wait), abort the rest (telling peers
        unless ``notify_peers`` is False), remove temp files, close the socket."""
        if self._closed:
            return
        self._closed = True
        saving = [t.finalizing for t in self._transfers.values() if t.finalizing is not None]
        if saving:
            await asyncio.wait(saving, timeout=10.0)
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        if self._timer is not None:
            self._timer.cancel()
        now = self._loop.time()
        for transfer in list(self._transfers.values()):
            transfer.core.abort("closed", "the peer's transfer endpoint closed")
            if notify_peers:
                datagrams = transfer.core.datagrams_to_send(now)
                if datagrams:
                    try:
                        self._sender.send(transfer.sockaddr, datagrams)
                    except udpsocket.SendBlocked:
                        pass
            self._handle_events(transfer, now)
            self._end(transfer)
        self._transfers.clear()
        self._send_queue.clear()
        self._sock.close()
        self._update_idle()

    # -- receive path ---------------------------------------------------------------------------

    def _on_readable(self) -> None:
        now = self._loop.time()
        touched = self._touched
        dispatch = self._dispatch
        cache: dict[object, udpsocket.PeerKey] = {}

        def deliver(data: bytes, addr: udpsocket.SockAddr) -> None:
            key = cache.get(addr)
            if key is None:
                try:
                    key = cache[addr] = udpsocket.peer_key(addr)
                except ValueError:
                    self.stats.dropped_malformed += 1
                    return
            dispatch(data, addr, key, now)

        count = udpsocket.receive_batch(self._sock, self._gro, deliver)
        self.stats.datagrams_received += count
        self._touched = {}
        for transfer in touched.values():
            self._service(transfer, now)
        self._rearm()

    def _dispatch(
        self, data: bytes, addr: udpsocket.SockAddr, key: udpsocket.PeerKey, now: float
    ) -> None:
        stats = self.stats
        if len(data) < pk.HEADER_SIZE:
            stats.dropped_malformed += 1
            return
        magic, version, ptype, tid = pk.HEADER.unpack_from(data)
        if magic != pk.MAGIC:
            stats.dropped_malformed += 1
            return
        if version != pk.VERSION:
            stats.dropped_bad_version += 1
            return
        transfer = self._transfers.get(tid)
        if transfer is None:
            if ptype == pk.PacketType.OFFER and not self._recently_ended(tid, now):
                self._on_offer(data, addr, key, now)
            elif pk.PacketType.OFFER <= ptype <= pk.PacketType.ABORT:
                stats.dropped_unknown += 1
            else:
                stats.dropped_malformed += 1
            return
        if transfer.key != key:
            stats.dropped_wrong_peer += 1
            return
        if ptype not in (_SENDER_TYPES if transfer.outgoing else _RECEIVER_TYPES):
            stats.dropped_malformed += 1
            return
        core = transfer.core
        before = core.dropped_malformed
        core.receive_datagram(data, key, now)
        if core.dropped_malformed != before:
            stats.dropped_malformed += core.dropped_malformed - before
        self._touched[tid] = transfer

    def _refuse(self, offer: pk.Offer) -> tuple[str, str] | None:
        o = self._options
        if self._closed:
            return "closed", "the receiver is shutting down"
        try:
            names.saved_name(offer.sender_name, offer.filename)
        except names.NameRefused as exc:
            return "bad_name", str(exc)
        if offer.size > o.max_file_size:
            return (
                "too_large",
                f"the file is {offer.size} bytes; the receiver accepts at most {o.max_file_size}",
            )
        if not pk.MIN_CHUNK_SIZE <= offer.chunk_size <= pk.MAX_CHUNK_SIZE:
            return "bad_offer", f"chunk size {offer.chunk_size} is not supported"
        incoming = sum(1 for t in self._transfers.values() if not t.outgoing and t.running)
        if incoming >= o.max_incoming:
            return (
                "busy",
                f"the receiver already has {incoming} incoming transfers; try again later",
            )
        try:
            free = os.statvfs(self._data_dir)
            if offer.size > free.f_bavail * free.f_frsize:
                return "no_space", "the receiver does not have room for the file"
        except (OSError, AttributeError):
            pass
        return None

    def _on_offer(
        self, data: bytes, addr: udpsocket.SockAddr, key: udpsocket.PeerKey, now: float
    ) -> None:
        try:
            offer = pk.decode(data)
        except pk.PacketError:
            self.stats.dropped_malformed += 1
            return
        assert isinstance(offer, pk.Offer)
        refusal = self._refuse(offer)
        temp = self._data_dir / names.temp_name(offer.transfer_id)
        file: BinaryIO | None = None
        if refusal is None:
            try:
                file = files.create_temp(temp)
            except OSError as exc:
                refusal = ("io_error", f"the receiver cannot create a file: {exc.strerror or exc}")
        if refusal is not None or file is None:
            code, message = refusal or ("io_error", "cannot create a file")
            self.stats.offers_refused += 1
            log.info(
                "uvf.offer_refused",
                peer=f"{key[0]}:{key[1]}",
                code=code,
                reason=message,
                file=offer.filename[:80],
            )
            abort = pk.encode_abort(pk.Abort(offer.transfer_id, code, message))
            self._send(addr, [abort])
            return
        core = Receiver(offer, peer=key, writer=file, now=now, config=self._receiver_config)
        transfer = _Transfer(
            core=core,
            key=key,
            sockaddr=addr,
            peer_name=offer.sender_name,
            filename=offer.filename,
            size=offer.size,
            started=now,
            file=file,
            outgoing=False,
            temp_path=temp,
            log=log.bind(
                transfer=f"{offer.transfer_id:016x}",
                peer=f"{key[0]}:{key[1]}",
                direction="in",
                sender=offer.sender_name,
                file=offer.filename,
                size=offer.size,
            ),
        )
        self._transfers[offer.transfer_id] = transfer
        self._idle.clear()
        transfer.log.info("uvf.incoming")
        self._emit(transfer, "incoming_started")
        self._touched[offer.transfer_id] = transfer

    # -- per-transfer servicing -----------------------------------------------------------------

    def _service(self, transfer: _Transfer, now: float) -> None:
        if transfer.ended:
            return
        core = transfer.core
        datagrams = core.datagrams_to_send(now)
        if datagrams:
            self._send(transfer.sockaddr, datagrams)
        if isinstance(core, Sender):
            if core.retransmissions != transfer.reported_retx:
                self.stats.retransmissions += core.retransmissions - transfer.reported_retx
                transfer.reported_retx = core.retransmissions
            if transfer.progress is not None:
                transfer.progress.update(core.acked_bytes, now)
        self._handle_events(transfer, now)
        if transfer.last_progress_event == float("inf"):
            transfer.last_progress_event = transfer.started
        interval = self._options.progress_interval
        if now - transfer.last_progress_event >= interval and transfer.running:
            transfer.last_progress_event = now
            self._emit(transfer, "progress")
        if core.finished:
            self._end(transfer)
            self._transfers.pop(core.transfer_id, None)
            self._update_idle()

    def _handle_events(self, transfer: _Transfer, now: float) -> None:
        core = transfer.core
        while (event := core.next_event()) is not None:
            duration_ms = int((now - transfer.started) * 1000)
            if isinstance(event, OfferAccepted):
                transfer.log.info("uvf.accepted")
                self._emit(transfer, "outgoing_started")
            elif isinstance(event, DataComplete):
                transfer.finalizing = asyncio.ensure_future(self._finalize(transfer))
            elif isinstance(event, TransferCompleted):
                if transfer.outgoing and transfer.future is not None and not transfer.future.done():
                    self.stats.transfers_completed += 1
                    transfer.log.info(
                        "uvf.transfer",
                        outcome="ok",
                        saved_as=event.saved_name,
                        duration_ms=duration_ms,
                        retransmissions=transfer.reported_retx,
                    )
                    if transfer.progress is not None:
                        transfer.progress.finish(transfer.size, now)
                    self._emit(
                        transfer,
                        "outgoing_done",
                        message=f"saved by the peer as {event.saved_name}",
                    )
                    transfer.future.set_result(transfer.size)
            elif isinstance(event, TransferFailed):
                self.stats.transfers_failed += 1
                message = f"{'peer: ' if event.by_peer else ''}{event.message}"
                transfer.log.info(
                    "uvf.transfer",
                    outcome="failed",
                    code=event.code,
                    reason=event.message,
                    by_peer=event.by_peer,
                    duration_ms=duration_ms,
                )
                if transfer.progress is not None:
                    transfer.progress.finish(
                        core.acked_bytes if isinstance(core, Sender) else 0, now, ok=False
                    )
                kind = "outgoing_failed" if transfer.outgoing else "incoming_failed"
                self._emit(transfer, kind, message=message, code=event.code)
                if transfer.future is not None and not transfer.future.done():
                    transfer.future.set_exception(TransferError(event.code, message))
                if not transfer.outgoing:
                    self._discard_temp(transfer)

    async def _finalize(self, transfer: _Transfer) -> None:
        core = transfer.core
        assert isinstance(core, Receiver) and transfer.temp_path is not None
        base = names.saved_name(transfer.peer_name, transfer.filename)
        try:
            final = await asyncio.to_thread(
                files.save_verified, transfer.file, transfer.temp_path, self._data_dir, base
            )
        except OSError as exc:
            transfer.log.warning("uvf.save_failed", error=str(exc))
            core.abort("io_error", f"the receiver could not save the file: {exc.strerror or exc}")
        else:
            transfer.final_path = final
            core.confirm_saved(final.name, self._loop.time())
            self.stats.transfers_completed += 1
            transfer.log.info(
                "uvf.transfer",
                outcome="ok",
                saved_as=final.name,
                duration_ms=int((self._loop.time() - transfer.started) * 1000),
            )
            self._emit(transfer, "incoming_done", path=final)
        finally:
            transfer.finalizing = None
        if not self._closed:
            self._service(transfer, self._loop.time())
            self._rearm()
        self._update_idle()

    def _discard_temp(self, transfer: _Transfer) -> None:
        if transfer.finalizing is not None:
            return  # the save thread owns the file now
        try:
            transfer.file.close()
        except OSError:
            pass
        if transfer.temp_path is not None and transfer.final_path is None:
            try:
                transfer.temp_path.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                transfer.log.warning("uvf.temp_not_removed", error=str(exc))

    def _recently_ended(self, tid: int, now: float) -> bool:
        recent = self._recent
        while recent:
            oldest, expiry = next(iter(recent.items()))
            if expiry > now and len(recent) <= MAX_RECENT_IDS:
                break
            del recent[oldest]
        return tid in recent

    def _end(self, transfer: _Transfer) -> None:
        if transfer.ended:
            return
        transfer.ended = True
        self._recent[transfer.core.transfer_id] = self._loop.time() + 2 * self._options.idle_timeout
        if transfer.outgoing:
            transfer.file.close()
            if transfer.future is not None and not transfer.future.done():
                transfer.future.set_exception(
                    TransferError("closed", "the transfer endpoint closed")
                )
        else:
            self._discard_temp(transfer)

    def _emit(
        self,
        transfer: _Transfer,
        kind: str,
        *,
        message: str = "",
        code: str = "",
        path: Path | None = None,
    ) -> None:
        if self._on_event is None:
            return
        core = transfer.core
        done = core.acked_bytes if isinstance(core, Sender) else core.received_bytes
        event = TransferEvent(
            kind=kind,
            peer_name=transfer.peer_name,
            filename=transfer.filename,
            path=path or transfer.final_path,
            size=transfer.size,
            message=message,
            transfer_id=transfer.tid,
            peer=transfer.key,
            done_bytes=done,
            code=code,
            direction="out" if transfer.outgoing else "in",
        )
        try:
            self._on_event(event)
        except Exception:  # a bug in the callback must not break every transfer
            log.exception("uvf.on_event_failed", kind=kind)

    def _update_idle(self) -> None:
        if self.active_transfers() == 0 and not any(t.finalizing for t in self._transfers.values()):
            self._idle.set()
        else:
            self._idle.clear()

    # -- send path and timer --------------------------------------------------------------------

    def _send(self, addr: udpsocket.SockAddr, datagrams: list[bytes]) -> None:
        if self._closed:
            return
        self.stats.datagrams_sent += len(datagrams)
        if self._send_queue:
            self._enqueue(addr, datagrams)
            return
        try:
            self._sender.send(addr, datagrams)
        except udpsocket.SendBlocked as blocked:
            self._enqueue(addr, datagrams[blocked.sent :])
            self._loop.add_writer(self._sock.fileno(), self._on_writable)
        self.stats.send_errors = self._sender.errors

    def _enqueue(self, addr: udpsocket.SockAddr, datagrams: list[bytes]) -> None:
        room = MAX_SEND_QUEUE - len(self._send_queue)
        if len(datagrams) > room:
            self.stats.send_queue_dropped += len(datagrams) - max(room, 0)
            datagrams = datagrams[: max(room, 0)]
        self._send_queue.extend((addr, d) for d in datagrams)

    def _on_writable(self) -> None:
        queue = self._send_queue
        while queue:
            addr = queue[0][0]
            batch: list[bytes] = []
            while queue and queue[0][0] == addr and len(batch) < udpsocket.MAX_GSO_SEGMENTS:
                batch.append(queue.popleft()[1])
            try:
                self._sender.send(addr, batch)
            except udpsocket.SendBlocked as blocked:
                for d in reversed(batch[blocked.sent :]):
                    queue.appendleft((addr, d))
                return
        self._loop.remove_writer(self._sock.fileno())

    def _rearm(self) -> None:
        if self._closed:
            return
        deadline: float | None = None
        for transfer in self._transfers.values():
            t = transfer.core.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        if deadline == self._timer_at:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timer_at = deadline
        if deadline is not None:
            self._timer = self._loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        now = max(self._loop.time(), self._timer_at or 0.0)
        self._timer_at = None
        for transfer in list(self._transfers.values()):
            t = transfer.core.get_timer()
            if t is not None and t <= now:
                transfer.core.handle_timer(now)
                self._service(transfer, now)
        self._rearm()

    # -- helpers --------------------------------------------------------------------------------

    def _new_transfer_id(self) -> int:
        while True:
            tid = secrets.randbits(64)
            if tid and tid not in self._transfers:
                return tid

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
