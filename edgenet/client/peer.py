"""The device's UDP side: the port bound at start-up, and UVF file transfers between devices.

``PeerLink`` owns the UDP socket from start-up on, so the port sent in the login request is
really ours and a taken port is reported before anything else happens. After login, ``start``
hands the socket to the reliable-UDP engine (``edgenet.rudp.endpoint.TransferEndpoint``), which from
then on receives files into the data dir as ``<sender>_<name>`` while the shell keeps reading
commands; the link turns the engine's events into one line each for the user (``announce``)
and, on a terminal, into progress bars (``status``).

``start_send`` does what must happen before a transfer can begin (the local file exists in the
data dir, the server says where the target listens: the ``lookup`` request), then runs the
transfer as a background task and returns at once; the task announces
``<filename> has been uploaded to <target> (N bytes, direct)`` (or ``relayed``) when the
receiver has confirmed the whole file, or one line with the reason it failed. Which path a
transfer takes (probes to the receiver's candidates, else the server's relay) is decided by
``edgenet.rudp.paths`` through ``rendezvous.find_route``. ``drain`` waits until no transfer runs (the
scripted shell calls it before logging out); every transfer ends by itself, by success or by
the engine's idle timeout.

Which files a device may send: ``filename`` is a path relative to the data dir and must stay
inside it with every symbolic link resolved (``clips/a.mp4`` is fine; ``../x``, absolute paths
and links that lead out are refused). The receiver only ever sees the last component typed
(``a.mp4``) and applies the engine's name rules.
"""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from edgenet.client.console import TransferMeter, status_text, terminal_width
from edgenet.client.rendezvous import Plan, find_route
from edgenet.client.results import UVF_FAILED
from edgenet.client.resume import resumed_percent
from edgenet.rudp import TransferError, TransferEvent, TransferOptions, files, names, udpsocket
from edgenet.rudp.endpoint import TransferEndpoint

if TYPE_CHECKING:
    from edgenet.config import ClientConfig
    from edgenet.wire.replies import PeerNotice

log = structlog.get_logger("edgenet.client")

#: Asks the server where a device listens: returns the ``lookup`` reply fields
#: (``name``, ``ip``, ``udp_port``) or raises LookupFailed.
LookupFn = Callable[[str], Awaitable[dict[str, Any]]]
#: Prints one line to the user (for example "received file X from Y").
AnnounceFn = Callable[[str], None]
#: Shows the progress bars of running transfers as one line ("" when there are none).
StatusFn = Callable[[str], None]

#: Progress events per second asked of the engine when bars are drawn.
BAR_INTERVAL = 0.25
#: ``.uvf-*.part`` files untouched this long belong to no running transfer (the engine gives
#: up on a silent peer after its idle timeout) and are removed when the link starts.
STALE_PART_SECONDS = 120.0
#: Kept for callers of the old seam.
UVF_UNAVAILABLE = "UVF is not available before login"


class PeerBindError(Exception):
    """The UDP port could not be bound; ``message`` is one line for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LookupFailed(Exception):
    """The server would not say where a device is (``not_active``, ``self_target``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SendStart:
    """What ``UVF`` did at once: started a transfer (``ok``), or refused with a ``code``
    (``not_active``, ``self_target``, ``no_local_file``, ``outside_data_dir``, ``bad_name``,
    ``not_ready``, ``bad_reply``) and one line ``text``."""

    ok: bool
    text: str
    code: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    #: How the transfer ended (set when ``ok``): resolves once the receiver has
    #: confirmed the whole file, or the transfer failed.
    outcome: asyncio.Future[SendOutcome] | None = None


@dataclass(frozen=True)
class SendOutcome:
    """The end of a transfer: ``ok`` with the size, or a ``code`` and one line ``text``."""

    ok: bool
    text: str
    code: str | None = None
    size: int = 0
    #: The path the file took: ``direct`` or ``relayed``.
    path: str = ""
    #: Bytes the receiver already held from an earlier transfer (0: all were sent).
    resumed_at: int = 0


def bind_udp(family: int, port: int, buffer_bytes: int) -> socket.socket:
    """A UDP socket bound to ``port`` (0: the OS chooses) on every address of ``family``
    (IPv6 dual-stack where the OS allows it); raises PeerBindError with one line."""
    host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    try:
        return udpsocket.open_socket(host, port, buffer_bytes)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise PeerBindError(f"UDP port {port} is already in use") from None
        reason = (exc.strerror or str(exc)).lower()
        raise PeerBindError(f"cannot bind UDP port {port}: {reason}") from None


def transfer_options(config: ClientConfig) -> TransferOptions:
    return TransferOptions(chunk_size=config.chunk_size, max_file_size=config.max_receive_size,
                           max_incoming=config.max_incoming,
                           resume_seconds=config.uvf_resume_hours * 3600,
                           resume_budget=config.uvf_resume_budget)


def local_file(data_dir: Path, filename: str) -> tuple[Path | None, str, str]:
    """``filename`` resolved in ``data_dir``, symbolic links followed: (the real path, "", "")
    or (None, code, message). What leads out of the data dir, by ``..``, an absolute path or
    a symbolic link anywhere on the way, is refused."""
    norm = os.path.normpath(filename) if filename else ""
    outside = (None, "outside_data_dir", (f"{filename} is outside the data dir; UVF sends "
                                          "files from the data dir only (give a name "
                                          "relative to it)"))
    if os.path.isabs(filename) or norm == os.pardir or norm.startswith(os.pardir + os.sep):
        return outside
    root = os.path.realpath(data_dir)
    real = os.path.realpath(os.path.join(root, norm))
    if os.path.commonpath([root, real]) != root:
        return outside  # before "does not exist": nothing is said about what lies outside
    if not os.path.exists(real):
        return None, "no_local_file", f"the file {filename} does not exist"
    if not os.path.isfile(real):
        return None, "no_local_file", f"{filename} is not a regular file"
    return Path(real), "", ""


def resumed_note(resumed_at: int, size: int) -> str:
    """``, resumed at 73 %`` when a transfer carried on from an earlier one (as UED says)."""
    return f", resumed at {resumed_percent(resumed_at, size)} %" if resumed_at else ""


def offered_name(filename: str) -> str:
    """The name a file travels under: the last component of what the user typed (not of
    the file a symbolic link leads to)."""
    return os.path.basename(os.path.normpath(filename))


class PeerLink:
    """The bound UDP socket and, after login, the UVF transfer endpoint built on it."""

    def __init__(self, sock: socket.socket, data_dir: Path,
                 options: TransferOptions | None = None,
                 advertise_port: int | None = None) -> None:
        self.sock = sock
        self.data_dir = data_dir
        self.options = options or TransferOptions()
        self.advertise_port = advertise_port
        self.device: str | None = None
        self._lookup: LookupFn | None = None
        self._announce: AnnounceFn = lambda line: None
        self._status: StatusFn | None = None
        self._endpoint: TransferEndpoint | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._meters: dict[str, TransferMeter] = {}  # transfer id -> its progress
        self._incoming: set[str] = set()  # ids of files being received
        self._targets: dict[tuple[str, int], str] = {}  # (file name, port) -> device name
        self._closing = False
        self._registered = False

    @classmethod
    def bind(cls, family: int, port: int, data_dir: Path, *,
             options: TransferOptions | None = None,
             advertise_port: int | None = None) -> PeerLink:
        """Raises PeerBindError with a one-line message."""
        options = options or TransferOptions()
        return cls(bind_udp(family, port, options.socket_buffer), data_dir, options,
                   advertise_port)

    @classmethod
    def for_client(cls, family: int, config: ClientConfig) -> PeerLink:
        """The link a client's options describe. Raises PeerBindError."""
        return cls.bind(family, config.udp_port, config.data_dir,
                        options=transfer_options(config),
                        advertise_port=config.advertise_udp_port)

    @property
    def port(self) -> int:
        """The port the login request announces: the bound one, unless the device is
        reached through a forwarded port (``--advertise-udp-port``)."""
        return self.advertise_port or self.bound_port

    @property
    def bound_port(self) -> int:
        return int(self.sock.getsockname()[1])

    async def start(self, device: str, lookup: LookupFn, announce: AnnounceFn,
                    status: StatusFn | None = None) -> None:
        """Called once after login: from now on files are received and can be sent.
        ``status`` (a terminal only) gets the progress-bar line."""
        self.device = device
        self._lookup = lookup
        self._announce = announce
        self._status = status
        options = self.options
        if status is not None:
            options = replace(options, progress_interval=BAR_INTERVAL)
        stale = max(STALE_PART_SECONDS, 6 * options.idle_timeout)
        removed = await asyncio.to_thread(files.remove_stale_parts, self.data_dir, stale)
        if removed:
            log.info("uvf.stale_parts_removed", count=removed)
        self._endpoint = await TransferEndpoint.from_socket(self.sock, self.data_dir,
                                                            options=options,
                                                            on_event=self._on_event)

    def register(self, host: str, port: int, token: bytes) -> bool:
        """Register the UDP socket with the server's rendezvous at ``host:port``."""
        self._registered = self._endpoint is not None and self._endpoint.paths.register(
            host, port, token)
        return self._registered

    def expect_peer(self, notice: PeerNotice) -> None:
        """A UVF is coming (the server's ``peer`` frame): probe the sender's candidates;
        with the relay, take its datagrams of this rendezvous."""
        if self._endpoint is None or self._closing:
            return
        candidates = [(c.ip, c.port, c.kind) for c in notice.candidates]
        self._endpoint.paths.expect(int(notice.token, 16), candidates,
                                    relay=bool(notice.relay_port) and self._registered)

    # --- sending -----------------------------------------------------------

    async def start_send(self, target_name: str, filename: str,
                         announce_end: bool = True) -> SendStart:
        """Check, look ``target_name`` up, start sending ``filename`` in the background.

        The end is announced as a line (``announce_end``) and in ``outcome``."""
        endpoint, device, lookup = self._endpoint, self.device, self._lookup
        if endpoint is None or device is None or lookup is None or self._closing:
            return SendStart(False, UVF_UNAVAILABLE, "not_ready")
        path, code, problem = await asyncio.to_thread(local_file, self.data_dir, filename)
        if path is None:
            return SendStart(False, problem, code)
        name = offered_name(filename)
        try:
            names.saved_name(device, name)
        except names.NameRefused as exc:
            return SendStart(False, f"cannot send {filename}: {exc}", "bad_name")
        try:
            where = await lookup(target_name)
        except LookupFailed as exc:
            return SendStart(False, exc.message, exc.code)
        plan = Plan.from_fields(where)
        if plan is None:
            return SendStart(False, f"the server gave no usable address for {target_name}",
                             "bad_reply")
        ip, port = plan.ip, plan.port
        self._targets[(name, port)] = target_name
        outcome: asyncio.Future[SendOutcome] = asyncio.get_running_loop().create_future()
        task = asyncio.ensure_future(self._deliver(endpoint, device, target_name, plan,
                                                   path, filename, outcome, announce_end))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return SendStart(True, f"sending {filename} to {target_name} ...", None,
                         {"device": target_name, "filename": filename, "peer": f"{ip}:{port}"},
                         outcome)

    async def send(self, target_name: str, filename: str) -> str:
        """``start_send``, as the line to print."""
        return (await self.start_send(target_name, filename)).text

    async def _deliver(self, endpoint: TransferEndpoint, device: str, target: str,
                       plan: Plan, path: Path, shown: str,
                       outcome: asyncio.Future[SendOutcome], announce_end: bool) -> None:
        started = time.monotonic()
        try:
            result = await self._send_one(endpoint, device, target, plan, path, shown)
        except asyncio.CancelledError:
            if not outcome.done():
                outcome.set_result(SendOutcome(False, f"sending {shown} to {target} was "
                                                      "aborted", "aborted"))
            raise
        finally:
            self._targets.pop((offered_name(shown), plan.port), None)
        if result.ok:
            log.info("uvf.sent", target=target, file=shown, size=result.size, path=result.path,
                     resumed_at=result.resumed_at,
                     duration_ms=int((time.monotonic() - started) * 1000))
        if not outcome.done():
            outcome.set_result(result)
        if announce_end and not (self._closing and not result.ok):
            self._announce(result.text)

    @staticmethod
    async def _send_one(endpoint: TransferEndpoint, device: str, target: str,
                        plan: Plan, path: Path, shown: str) -> SendOutcome:
        way = "direct"
        try:
            peer, way = await find_route(endpoint, plan)
            sent = await endpoint.send(peer, path, device, name=offered_name(shown))
        except TransferError as exc:
            return SendOutcome(False, f"sending {shown} to {target} failed: {exc.message}",
                               exc.code or UVF_FAILED)
        except Exception:  # a bug: say so in one line, keep the traceback in the log
            log.exception("uvf.send_crashed", target=target, file=shown)
            return SendOutcome(False, f"sending {shown} to {target} failed: internal error",
                               "internal")
        how = resumed_note(sent.resumed_at, sent.size)
        return SendOutcome(True, f"{shown} has been uploaded to {target} ({sent.size} bytes, "
                                 f"{way}{how})", None, sent.size, way, sent.resumed_at)

    # --- engine events -----------------------------------------------------

    def _on_event(self, ev: TransferEvent) -> None:
        if self._closing:
            return
        now = time.monotonic()
        incoming = ev.direction == "in"
        if ev.kind == "incoming_started":
            self._incoming.add(ev.transfer_id)
            self._meters[ev.transfer_id] = TransferMeter(f"{ev.filename} from {ev.peer_name}",
                                                         ev.size, now)
            how = resumed_note(ev.resumed_at, ev.size)
            self._announce(f"receiving {ev.filename} from {ev.peer_name} ({ev.size} bytes{how}) "
                           "...")
        elif ev.kind == "incoming_done":
            saved = ev.path.name if ev.path is not None else ev.filename
            how = resumed_note(ev.resumed_at, ev.size)
            self._announce(f"received {saved} from {ev.peer_name} ({ev.size} bytes{how})")
        elif ev.kind == "incoming_failed":
            self._announce(f"receiving {ev.filename} from {ev.peer_name} failed: {ev.message}")
        elif ev.kind == "progress" and self._status is not None:
            meter = self._meters.get(ev.transfer_id)
            if meter is None:
                target = "" if incoming or ev.peer is None else self._targets.get(
                    (ev.filename, ev.peer[1]), "")
                label = f"{ev.filename} to {target}" if target else ev.filename
                meter = self._meters[ev.transfer_id] = TransferMeter(
                    label, ev.size, now - self.options.progress_interval)
            meter.update(ev.done_bytes, now)
        if ev.kind in ("incoming_done", "incoming_failed", "outgoing_done", "outgoing_failed"):
            self._meters.pop(ev.transfer_id, None)
            self._incoming.discard(ev.transfer_id)
        if self._status is not None and (ev.kind == "progress" or ev.transfer_id
                                         not in self._meters):
            self._status(status_text(list(self._meters.values()), now, terminal_width()))

    # --- the end -------------------------------------------------------------

    def running(self) -> int:
        """Transfers still running, in both directions (sends still hashing included)."""
        return len(self._tasks) + len(self._incoming)

    async def drain(self) -> None:
        """Until no transfer runs. Each ends by itself: done, refused, or timed out by the
        engine when the peer falls silent (``idle_timeout``)."""
        while True:
            if self._tasks:
                await asyncio.wait(set(self._tasks))
            elif self._endpoint is not None and self._endpoint.active_transfers():
                await self._endpoint.wait_idle(self.options.idle_timeout)
            else:
                return

    async def aclose(self) -> None:
        """Abort what still runs (peers are told), then close the socket."""
        self._closing = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        if self._endpoint is not None:
            await self._endpoint.close()
        else:
            self.sock.close()

    def close(self) -> None:
        """Without a loop to finish on: stop listening and close (peers time out)."""
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._endpoint is not None:
            try:
                asyncio.get_running_loop().remove_reader(self.sock.fileno())
            except (RuntimeError, ValueError, OSError):
                pass
        self.sock.close()


async def send_file(link: PeerLink, target_name: str, filename: str) -> str:
    """The old seam (one line to print); ``PeerLink.start_send`` says more."""
    return await link.send(target_name, filename)
