"""The process's file descriptors: the limit, a reserve, and running out of them.

At start-up the server raises its soft open-file limit to the hard limit
(``raise_open_file_limit``) and, unless told otherwise, allows as many device
connections as that leaves room for (``connections_allowed``): ``FD_RESERVE``
descriptors stay for the server itself (listening sockets, logs, the admin
port, the UDP socket, worker threads), ``upload_slots`` for the temporary files
of the uploads in flight (``uploadslots.UploadSlots``: one more waits for a
slot), and one for each device's socket. So running out of descriptors refuses
new connections (``server_busy``) instead of failing the uploads of devices
already in.

When the table is full anyway (``--max-connections`` set above what the limit
allows, another process's fault, a leak), EMFILE/ENFILE is one
``too_many_open_files`` event per episode (``ExhaustionLog``: at most one every
``EPISODE_SECONDS``, with how many more there were), never a traceback and never
a "connection lost". ``SpareDescriptor`` keeps one descriptor open on
``/dev/null`` so that an accept loop that hit EMFILE can still accept one
connection to tell it ``server_busy`` and close it (instead of leaving it in the
backlog, where the listening socket stays readable and the loop spins).

No asyncio here: the clock is a parameter.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import Any

import structlog

log = structlog.get_logger("edgenet.server")

#: Descriptors kept for the server itself when ``--max-connections`` is left to the limit.
FD_RESERVE = 64
#: Fewest device connections the default allows, whatever the limit.
MIN_CONNECTIONS = 16
#: Uploads in flight at once (each holds its temporary file open), at most; under a
#: limit too low for that, half of what the reserve leaves.
UPLOAD_SLOTS = 256
#: Kept too in fleet mode, beside ``--redis-max-connections``: the S3 client's pool
#: (aiobotocore's default, 10) and the Redis connections of blocking reads and pub/sub.
FLEET_CLIENT_FDS = 14
#: Soft limit aimed at when the hard limit is unlimited (Linux's default fs.nr_open).
UNLIMITED_TARGET = 1 << 20
#: At most one ``too_many_open_files`` event per this many seconds (one per episode).
EPISODE_SECONDS = 10.0
EXHAUSTION_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE})


@dataclass(frozen=True)
class FdLimits:
    soft: int
    hard: int
    #: The soft limit before it was raised.
    was: int


def _as_int(value: int, fallback: int) -> int:
    try:
        import resource

        return fallback if value == resource.RLIM_INFINITY else value
    except ImportError:  # not on POSIX
        return value


def raise_open_file_limit() -> FdLimits | None:
    """Raise the soft RLIMIT_NOFILE to the hard one; None where there is no such limit."""
    try:
        import resource
    except ImportError:
        return None
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    was = soft
    target = hard if hard != resource.RLIM_INFINITY else UNLIMITED_TARGET
    if soft == resource.RLIM_INFINITY or soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass  # keep what we have; it is logged
    return FdLimits(_as_int(soft, UNLIMITED_TARGET), _as_int(hard, UNLIMITED_TARGET),
                    _as_int(was, UNLIMITED_TARGET))


def upload_slots(soft_limit: int, reserve: int = FD_RESERVE) -> int:
    """Uploads in flight at once under ``soft_limit`` (more wait for a slot)."""
    return max(1, min(UPLOAD_SLOTS, (soft_limit - reserve) // 2))


def connections_allowed(soft_limit: int, reserve: int = FD_RESERVE) -> int:
    """Device connections the default ``--max-connections`` allows under ``soft_limit``:
    one descriptor each, beside the ``reserve`` and the upload slots."""
    return max(MIN_CONNECTIONS, soft_limit - reserve - upload_slots(soft_limit, reserve))


@dataclass(frozen=True)
class Budget:
    """What the open-file limit gives: device connections and upload slots."""

    connections: int
    uploads: int
    #: Descriptors kept for the server itself.
    reserve: int
    #: None where the platform has no such limit.
    limits: FdLimits | None


def connection_budget(configured: int, clients: int = 0) -> Budget:
    """Raise the open-file limit; ``configured``, or when it is 0 the device connections
    the limit allows, the upload slots, and the limits (``log_fd_limit`` logs them once
    the port is bound). ``clients``: descriptors of the fleet's clients (Redis, S3),
    kept beside ``FD_RESERVE``."""
    limits = raise_open_file_limit()
    soft = limits.soft if limits is not None else 1024
    reserve = FD_RESERVE + clients
    return Budget(configured or connections_allowed(soft, reserve),
                  upload_slots(soft, reserve), reserve, limits)


def log_fd_limit(budget: Budget) -> None:
    limits = budget.limits
    if limits is not None:
        log.info("fd_limit", soft=limits.soft, hard=limits.hard, raised_from=limits.was,
                 max_connections=budget.connections, upload_slots=budget.uploads,
                 reserve=budget.reserve)


def is_exhaustion(exc: BaseException) -> bool:
    """True for 'too many open files' (this process's table, or the system's)."""
    return isinstance(exc, OSError) and exc.errno in EXHAUSTION_ERRNOS


class ExhaustionLog:
    """``too_many_open_files`` events, one per episode: the first hit logs at once, later
    hits within ``EPISODE_SECONDS`` are counted and reported with the next event."""

    def __init__(self, episode_seconds: float = EPISODE_SECONDS) -> None:
        self._count = RateLimitedCount(episode_seconds)
        #: Every hit ever (for metrics and tests).
        self.total = 0

    def report(self, where: str, now: float, **fields: Any) -> bool:
        """Count one hit at ``where`` (``device_accept``, ``admin_accept``, ``upload``...);
        True when it was logged."""
        self.total += 1
        more = self._count.hit(now)
        if more is None:
            return False
        log.error("too_many_open_files", where=where, more=more,
                  hint="raise the open-file limit (ulimit -n) or lower --max-connections",
                  **fields)
        return True


class RateLimitedCount:
    """Something logged at most once per ``seconds``: ``hit`` says when, and how many
    hits were not logged since the last time."""

    def __init__(self, seconds: float = 1.0) -> None:
        self.seconds = seconds
        self._last: float | None = None
        self._suppressed = 0

    def hit(self, now: float) -> int | None:
        """None: do not log this one; else log it, with this many left out before it."""
        if self._last is not None and now - self._last < self.seconds:
            self._suppressed += 1
            return None
        more, self._suppressed, self._last = self._suppressed, 0, now
        return more


class SpareDescriptor:
    """One descriptor held in reserve, given up for a moment to shed a connection."""

    def __init__(self) -> None:
        self._fd: int | None = None
        self.restore()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> bool:
        """Close the spare (True when there was one to close)."""
        if self._fd is None:
            return False
        fd, self._fd = self._fd, None
        os.close(fd)
        return True

    def restore(self) -> None:
        """Open the spare again (stays without one while the table is still full)."""
        if self._fd is not None:
            return
        try:
            self._fd = os.open(os.devnull, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:
            self._fd = None

    def close(self) -> None:
        self.release()
