"""The four kinds of server state a fleet of servers shares, as small async interfaces.

* ``Presence``: who is active (one entry per device name, in login order), and the
  takeover of a name;
* ``Lockouts``: failed-login counters and blocks per device name;
* ``FileStore``: the stored data files, their statistics, and the upload and
  deletion logs;
* ``EventLog``: the recent server events that the admin API lists and streams.

The embedded single node implements them in memory and in the data dir
(``presence``, ``lockouts``, ``store``, ``events``); a fleet implements the same
interfaces over shared engines, and both pass the same behavioural tests
(tests/contract_*.py). The server's handlers and the admin API use only these
methods. Everything is a value in and a value out: live sessions are local
objects and never go into a backend (see ``Presence.on_evict``). Times are
seconds since the epoch, passed in by the caller (``now``) wherever a method
judges or stamps something.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from edgenet.server.compute import Stats
from edgenet.server.logs import FileRecord


class BackendUnavailable(Exception):
    """A shared engine (a fleet's Redis or S3) cannot be reached now: the request it hit
    changed nothing and may be retried. ``message`` is one line for the device."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BackendStartError(Exception):
    """The shared state cannot be opened (an engine unreachable at start-up, a node id
    in use): one line for the operator, exit status 1."""


# -- presence --------------------------------------------------------------------


@dataclass(frozen=True)
class ActiveDevice:
    """One logged-in device. ``session_id`` names the login (a takeover makes a new one)."""

    name: str
    ip: str
    udp_port: int
    since: float
    session_id: str
    #: The fleet node that holds the session (None on a single node).
    node: str | None = None


@dataclass(frozen=True)
class Joined:
    """A login registered: the new entry, and the entry it replaced (a takeover), if any."""

    device: ActiveDevice
    replaced: ActiveDevice | None


#: Why an entry was taken from a session: ``replaced`` (a login of the same name),
#: ``disconnected`` (an operator), ``revoked`` (its credentials were removed).
EvictReason = Literal["replaced", "disconnected", "revoked"]
#: Told of each entry taken away from its session, so that the node holding that
#: session can close it (``Presence.on_evict``).
EvictHandler = Callable[[ActiveDevice, EvictReason], None]


class Presence(Protocol):
    """The devices active now, in login order; a name is active at most once."""

    def on_evict(self, handler: EvictHandler) -> None:
        """Call ``handler`` for every entry that ``join`` replaces or ``evict`` removes,
        on the node that holds its session (in the embedded presence: at once, before
        the method returns). The server closes the local session it names."""
        ...

    async def join(self, name: str, ip: str, udp_port: int, now: float) -> Joined:
        """Register a login; an entry of the same name is replaced in the same step."""
        ...

    async def leave(self, name: str, session_id: str) -> ActiveDevice | None:
        """Remove ``name`` only if ``session_id`` still owns it (a session replaced by a
        takeover must not remove its successor). Returns the removed entry."""
        ...

    async def evict(self, name: str, reason: EvictReason) -> ActiveDevice | None:
        """Remove whoever holds ``name`` and announce it (``on_evict``)."""
        ...

    async def get(self, name: str) -> ActiveDevice | None: ...

    async def devices(self) -> list[ActiveDevice]:
        """Every active device, in login order (oldest first)."""
        ...

    async def count(self) -> int: ...

    async def version(self) -> int:
        """A number that changes whenever the list changes (for caches of it)."""
        ...


# -- lockouts --------------------------------------------------------------------


@dataclass(frozen=True)
class LockoutEntry:
    name: str
    failures: int
    blocked_until: float | None


@dataclass(frozen=True)
class Attempt:
    """The judgement of one login attempt, made before its password is checked.

    ``seconds_left > 0``: the name is blocked; the password must not be checked.
    Otherwise the attempt has been counted as a failure already (it stays one unless
    ``Lockouts.succeeded`` follows): ``attempts_left`` failures remain before a block,
    and ``block_seconds > 0`` when this attempt, failing, blocks the name.
    """

    seconds_left: float = 0.0
    attempts_left: int = 0
    block_seconds: float = 0.0


class Lockouts(Protocol):
    """Consecutive failed logins per device name, and blocks.

    After MAX_ATTEMPTS consecutive failures a name is blocked for the block time,
    from everywhere. ``attempt`` judges and counts in one atomic step, so that
    concurrent attempts (on any node) cannot get more password checks than the
    limit allows: the check happens only after the attempt is counted.
    """

    async def attempt(self, name: str, now: float) -> Attempt: ...

    async def succeeded(self, name: str) -> None:
        """The attempt's password was right: forget the name's failures and block."""
        ...

    async def entries(self, now: float) -> list[LockoutEntry]:
        """Names with failures or a running block, oldest failure first (expired
        blocks are gone)."""
        ...

    async def lift(self, name: str, now: float) -> LockoutEntry | None:
        """Forget a name's failures and block; returns what was forgotten (None: nothing)."""
        ...


# -- stored files ------------------------------------------------------------------


@dataclass(frozen=True)
class StoredFile:
    device: str
    file_id: int
    size: int
    samples: int
    uploaded_at: float
    #: SUM/MIN/MAX/count once computed (by ``FileStore.stats``); None before.
    stats: Stats | None = None


@dataclass(frozen=True)
class StorageStatus:
    """What ``FileStore.check`` found."""

    #: Why the store cannot be used now (an event name, e.g. ``data_dir_missing``), or None.
    problem: str | None = None
    message: str = ""
    #: The storage came back (or was replaced) and was opened again, as at start-up.
    reopened: bool = False
    #: What opening it again cleaned up and repaired (as ``DataDirStore.open``).
    removed_temporaries: int = 0
    repairs: tuple[dict[str, Any], ...] = ()


class PendingUpload(Protocol):
    """One upload being received: validated and stored as it streams in, visible to
    nobody until ``commit``. A storage fault while it streams (a full disk, a missing
    data dir) never raises here: the upload keeps draining the body, stores nothing
    more, and ``commit`` raises the fault."""

    def write(self, chunk: bytes) -> None:
        """Take the next piece of the body (after a validation error or a storage
        fault: dropped)."""
        ...

    async def commit(self, now: float) -> StoredFile:
        """Store the file and log it, as one step: afterwards it is listed, logged and
        readable, or (an exception) nothing changed: a previous version of the file is
        still the one listed, read and logged, a new fileID is not there, no log line
        was added and nothing half-written is left, now and after reopening the store.
        Raises ``DataError`` when the body is not one integer per line, ``OSError``
        when it cannot be stored (at any point since ``begin_upload``)."""
        ...

    def abort(self) -> None:
        """Drop what was received (never a committed file). Safe to call more than once."""
        ...


LogName = Literal["uploads", "deletions"]

#: The SHA-256 of nothing: the hash of the part of a file a store holds when it holds none.
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


@dataclass(frozen=True)
class ResumePoint:
    """Where an upload of a file may carry on: the store holds its first ``offset``
    bytes, whose SHA-256 is ``sha256`` (offset 0: start over)."""

    offset: int = 0
    sha256: str = EMPTY_SHA256


@dataclass(frozen=True)
class ResumeRequest:
    """A checked upload (protocol version 3): the body is the file from ``offset`` on
    (what ``resume_point`` answered, or 0); ``sha256`` is that of the whole file,
    ``size`` bytes, checked before the commit."""

    offset: int
    sha256: str
    size: int


class ResumeRefused(Exception):
    """A resume the store cannot do: ``code`` (``resume_budget``: no room to keep a
    partial upload; ``resume_mismatch``: it does not hold what the request resumes
    from) and one line for the device. Nothing was changed."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChecksumMismatch(Exception):
    """The body received is not the file the device described (its SHA-256 differs):
    nothing stored."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class FileStore(Protocol):
    """Every device's data files (``<device>-<fileID>``), and the upload and deletion logs.

    Faults: a method that cannot reach its storage raises ``OSError`` for that call
    and changes nothing (``commit`` and ``delete`` included); ``check`` says whether
    the storage is usable and opens it again when it comes back."""

    async def begin_upload(self, device: str, file_id: int,
                           resume: ResumeRequest | None = None) -> PendingUpload:
        """Start receiving an upload (never raises for a storage fault: ``commit`` does).
        With ``resume`` the body carries on from ``resume.offset`` (0: from the start),
        a cut upload may be kept as a partial for ``resume_point``, and ``commit`` raises
        ``ChecksumMismatch`` unless the whole file has ``resume.sha256``. Raises
        ``ResumeRefused`` when the store does not hold the part the offset names."""
        ...

    async def resume_point(self, device: str, file_id: int, size: int, now: float
                           ) -> ResumePoint:
        """Where an upload of this file (now ``size`` bytes) may resume: the partial kept
        of a cut upload, or offset 0. A store may keep none and always answer 0. Raises
        ``ResumeRefused`` (``resume_budget``) when a partial of ``size`` bytes would not
        be kept (the upload may still go ahead, from 0, unkept if cut)."""
        ...

    async def get(self, device: str, file_id: int) -> StoredFile | None: ...

    async def stats(self, device: str, file_id: int) -> Stats | None:
        """SUM/MIN/MAX/count of a stored file (None: there is no such file), computed
        once per stored version and then shown by ``get`` and ``files`` too. Raises
        ``DataError`` when the file holds no sample."""
        ...

    async def delete(self, device: str, file_id: int, now: float) -> StoredFile | None:
        """Delete a file and log the deletion, as one step; returns what was deleted
        (None: no file). ``OSError``: nothing changed (the file is still listed and
        readable, no deletion line)."""
        ...

    async def check(self, now: float) -> StorageStatus:
        """Whether the storage can be used now (called about once a second by the
        server, and after a storage error). Storage that went away and came back is
        opened again here as at start-up (``now`` stamps what reconciling it adds)."""
        ...

    async def files(self, device: str | None = None) -> list[StoredFile]: ...

    async def finish_background(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, for the disk work the store runs on its own
        (a cut upload's last checkpoint): a shutdown keeps what was received. False when
        some was still running."""
        ...

    async def log_records(self, log: LogName, *, limit: int, before: int | None = None,
                          device: str | None = None, since: float | None = None
                          ) -> list[tuple[int, FileRecord]]:
        """Up to ``limit`` lines of a log, newest first, each with its position (it grows
        by one per line); only positions below ``before``, ``device``'s lines and those
        at or after ``since``, when given."""
        ...


# -- events ------------------------------------------------------------------------

#: Events queued for one slow live subscriber before it is cut off.
SUBSCRIBER_QUEUE = 1000

EventListener = Callable[[dict[str, Any]], None]


@dataclass(eq=False)  # compared and hashed by identity: kept in a set
class Subscriber:
    """One live reader of the event log: a bounded queue, and whether it must end."""

    queue: asyncio.Queue[dict[str, Any] | None] = field(
        default_factory=lambda: asyncio.Queue(SUBSCRIBER_QUEUE))
    #: Why the stream must end ("lagged", "shutdown"), or None while it runs.
    ended: str | None = None

    def offer(self, entry: dict[str, Any] | None) -> None:
        try:
            self.queue.put_nowait(entry)
        except asyncio.QueueFull:
            # A reader that cannot keep up is cut off rather than buffered without end.
            self.ended = self.ended or "lagged"

    def end(self, reason: str) -> None:
        self.ended = self.ended or reason
        self.offer(None)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event; None when told to end. Raises TimeoutError after ``timeout``."""
        return await asyncio.wait_for(self.queue.get(), timeout)


class EventLog(Protocol):
    """Server events (structlog event dicts made JSON-safe), each with a rising ``seq``
    and a ``ts``; bounded; readable newest first, after a seq, and live."""

    #: Live subscribers allowed at once.
    max_subscribers: int

    def record(self, event_dict: dict[str, Any]) -> dict[str, Any]:
        """Add an event (called from the logging chain, from any thread: never blocks)."""
        ...

    def add_listener(self, listener: EventListener) -> None:
        """Call ``listener`` with each event recorded on this node (the metrics)."""
        ...

    def remove_listener(self, listener: EventListener) -> None: ...

    async def last_seq(self) -> int: ...

    async def query(self, *, limit: int, before: int | None = None, device: str | None = None,
                    names: frozenset[str] | None = None, since: float | None = None
                    ) -> list[dict[str, Any]]:
        """Up to ``limit`` events, newest first, with ``seq < before``, of ``device``,
        named one of ``names``, at or after ``since``, when given."""
        ...

    async def after(self, seq: int) -> list[dict[str, Any]]:
        """The events still kept with ``seq`` above ``seq``, oldest first."""
        ...

    def subscribe(self) -> Subscriber | None:
        """A live subscriber, or None when ``max_subscribers`` are already reading."""
        ...

    def unsubscribe(self, sub: Subscriber) -> None: ...

    def close_subscribers(self) -> None:
        """End every live subscriber (shutdown)."""
        ...


def event_matches(entry: dict[str, Any], device: str | None, names: frozenset[str] | None,
                  since: float | None = None) -> bool:
    """Whether an event passes the filters of ``EventLog.query``."""
    if device is not None and entry.get("device") != device:
        return False
    if names is not None and entry.get("event") not in names:
        return False
    return since is None or float(entry.get("ts", 0.0)) >= since


@dataclass(frozen=True)
class Backends:
    """The shared state of one server, as opened (see ``state.open_embedded``)."""

    presence: Presence
    lockouts: Lockouts
    files: FileStore
