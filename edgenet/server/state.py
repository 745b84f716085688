"""``ServerState``: what the device handlers and the admin API work with.

The app (``app.EdgeServer``) builds it once and hands it down, as uvicorn keeps its
``ServerState`` apart from its ``Server``: the shared state behind its interfaces
(presence, lockouts, stored files, events), the node's own helpers (the device
log writer, the AED cache, the per-address login limiter, the sessions live on
this node), the clock, the configuration and the current credentials. Nothing
here imports the app, the sessions or asyncio's streams.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import structlog

from edgenet.config import ServerConfig
from edgenet.server.auth import Credentials
from edgenet.server.devicelog import DeviceLogWriter
from edgenet.server.health import Health
from edgenet.server.interfaces import (
    ActiveDevice,
    Backends,
    EventLog,
    EvictReason,
    FileStore,
    Lockouts,
    Presence,
)
from edgenet.server.descriptors import UPLOAD_SLOTS, ExhaustionLog
from edgenet.server.limits import LoginRateLimiter
from edgenet.server.listing import DeviceListing
from edgenet.server.lockouts import LockoutTracker
from edgenet.server.logs import DEVICE_LOG
from edgenet.server.presence import ActiveDevices
from edgenet.server.partials import ResumeLimits
from edgenet.server.store import DataDirStore
from edgenet.server.uploadslots import UploadSlots

if TYPE_CHECKING:
    from edgenet.server.rendezvous import Rendezvous
    from edgenet.wire.replies import PeerNotice

log = structlog.get_logger("edgenet.server")

#: What a device is told when its entry is taken away, by reason.
EVICT_NOTICES: dict[EvictReason, str] = {
    "replaced": "this device logged in from another place; this session was replaced",
    "disconnected": "an operator disconnected this device",
    "revoked": "this device's credentials were revoked",
}


class LiveSession(Protocol):
    """A logged-in device connection on this node, as others see it."""

    peer: str
    #: Commands served and bytes stored in this session (for the admin API).
    commands: int
    bytes_uploaded: int

    def disconnect(self, kind: str, message: str) -> None:
        """Tell the device why (a notice), then close. Safe to call more than once."""
        ...

    @property
    def version(self) -> int:
        """The protocol version the session's hello settled on."""
        ...

    def tell(self, notice: PeerNotice) -> None:
        """Send an unprompted ``peer`` frame (a UVF is coming); nothing once closed."""
        ...


class LocalSessions:
    """The logged-in sessions on this node, by session id (sessions never leave the
    node: presence entries name them by id)."""

    def __init__(self) -> None:
        self._by_id: dict[str, LiveSession] = {}

    def add(self, session_id: str, session: LiveSession) -> None:
        self._by_id[session_id] = session

    def remove(self, session_id: str, session: LiveSession) -> None:
        if self._by_id.get(session_id) is session:
            del self._by_id[session_id]

    def get(self, session_id: str) -> LiveSession | None:
        return self._by_id.get(session_id)

    def evicted(self, device: ActiveDevice, reason: EvictReason) -> None:
        """A presence entry was taken away (``Presence.on_evict``): close its session
        if it lives here (it removes itself from here as it ends)."""
        session = self._by_id.get(device.session_id)
        if session is not None:
            session.disconnect(reason, EVICT_NOTICES[reason])

    def __len__(self) -> int:
        return len(self._by_id)


class NameLocks:
    """One ``asyncio.Lock`` per name while anyone holds or waits for it (bounded by the
    attempts in flight): login attempts on one name are judged one at a time here."""

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}
        self._users: dict[str, int] = {}

    async def acquire(self, name: str) -> None:
        lock = self._locks.get(name)
        if lock is None:
            lock = self._locks[name] = asyncio.Lock()
        self._users[name] = self._users.get(name, 0) + 1
        try:
            await lock.acquire()
        except BaseException:
            self._done(name)
            raise

    def release(self, name: str) -> None:
        self._locks[name].release()
        self._done(name)

    def _done(self, name: str) -> None:
        self._users[name] -= 1
        if not self._users[name]:  # nobody waits: forget it
            del self._users[name]
            del self._locks[name]


@dataclass(eq=False)
class ServerState:
    config: ServerConfig
    #: Replaced whole by a reload (SIGHUP, the admin API).
    credentials: Credentials
    clock: Callable[[], float]
    #: What the hello reply names as the server (``edgenet/<version>``).
    agent: str
    presence: Presence
    lockouts: Lockouts
    files: FileStore
    events: EventLog
    device_log: DeviceLogWriter
    listing: DeviceListing
    rate_limiter: LoginRateLimiter
    sessions: LocalSessions = field(default_factory=LocalSessions)
    login_locks: NameLocks = field(default_factory=NameLocks)
    #: What is wrong now (``/healthz``): a missing data dir, a device log behind.
    health: Health = field(default_factory=Health)
    #: "Too many open files", wherever it is met: one event per episode.
    fd_exhaustion: ExhaustionLog = field(default_factory=ExhaustionLog)
    #: Uploads in flight at once (set from the open-file limit by the app's start).
    upload_slots: UploadSlots = field(default_factory=lambda: UploadSlots(UPLOAD_SLOTS))
    #: This node's UDP rendezvous and relay (None: ``--udp-port 0``); set by the app.
    rendezvous: Rendezvous | None = None

    @classmethod
    def build(cls, config: ServerConfig, credentials: Credentials, clock: Callable[[], float],
              agent: str, backends: Backends, events: EventLog) -> ServerState:
        presence = backends.presence
        health = Health()
        state = cls(config=config, credentials=credentials, clock=clock, agent=agent,
                    presence=presence, lockouts=backends.lockouts, files=backends.files,
                    events=events, device_log=DeviceLogWriter(config.data_dir / DEVICE_LOG,
                                                              presence, health, clock),
                    listing=DeviceListing(presence),
                    rate_limiter=LoginRateLimiter(config.login_rate), health=health)
        presence.on_evict(state.sessions.evicted)
        return state


async def open_embedded(config: ServerConfig, now: float) -> Backends:
    """The single node's state: presence and lockouts in memory, files in the data dir."""
    limits = ResumeLimits(config.resume_hours, config.resume_budget, config.resume_total_budget)
    files = await asyncio.to_thread(DataDirStore.open, config.data_dir, now, limits)
    if files.removed_temporaries:
        log.info("temporaries_removed", count=files.removed_temporaries)
    swept = files.partial_sweep
    if swept.kept or swept.expired or swept.removed:
        log.info("partials_swept", kept=len(swept.kept), expired=swept.expired,
                 removed=len(swept.removed))
    for removed in swept.removed:
        log.warning("partial_removed", **removed)
    for repair in files.repairs:
        log.warning("log_repaired", **repair)
    return Backends(presence=ActiveDevices(),
                    lockouts=LockoutTracker(config.max_attempts, config.block_seconds),
                    files=files)
