"""``edge-device-log.txt``: the active devices, rewritten whole, at most once a second.

``seq; dd Month yyyy hh:mm:ss; name; ip; udp_port``, numbered 1..n in login order.
The file is replaced whole (temporary file, then rename), so a reader never sees
half of it. A rewrite costs O(devices), so logins in bursts must not each cost one:
the first change after a quiet second is written at once (on the next turn of the
event loop, with every change of that turn), later ones together at most
``MIN_INTERVAL`` (1 s) after the previous write; start-up and shutdown write it
exactly. Each device's line but its number is formatted once, at its first write.
A write that fails (a full disk, a missing data dir) leaves no
temporary file; the file is then *stale*: the fault is logged once
(``device_log_write_failed``), ``/healthz`` reports ``device_log_stale``, and the
writer tries again with backoff (0.25 s doubling to 5 s, sooner on a new change)
until a write succeeds (``device_log_caught_up``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import structlog

from edgenet.server.descriptors import is_exhaustion
from edgenet.server.health import Health
from edgenet.server.interfaces import ActiveDevice, BackendUnavailable, Presence
from edgenet.server.logs import format_timestamp, write_atomically

log = structlog.get_logger("edgenet.server")

#: Seconds between two rewrites at least (the file's delay behind the active list at most).
MIN_INTERVAL = 1.0
#: Seconds before the first retry of a failed write; doubled up to ``RETRY_MAX``.
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
STALE = "device_log_stale"


class DeviceLines:
    """The file's text, with each device's line (all but its number) formatted once:
    ``format_timestamp`` (a ``time.localtime``) per device per rewrite was most of a
    rewrite's cost at 20,000 devices."""

    def __init__(self) -> None:
        self._tails: dict[str, str] = {}

    def render(self, devices: Iterable[ActiveDevice]) -> str:
        old, tails = self._tails, {}
        parts = []
        for seq, d in enumerate(devices, 1):
            key = d.session_id
            tail = old.get(key)
            if tail is None:
                tail = f"; {format_timestamp(d.since)}; {d.name}; {d.ip}; {d.udp_port}\n"
            tails[key] = tail
            parts.append(f"{seq}{tail}")
        self._tails = tails  # only the devices active now: bounded by them
        return "".join(parts)


class DeviceLogWriter:
    """Keeps ``edge-device-log.txt`` equal to the active list, at most ``interval``
    seconds behind it.

    ``request()`` says the list changed. When the file was last written ``interval``
    or more ago, it is rewritten on the next turn of the event loop (with every change
    made until then) and the returned future resolves once the file holds the change;
    otherwise the rewrite waits for the interval to end, and the future is already
    resolved (a login in a burst does not wait for the file).
    """

    def __init__(self, path: Path, presence: Presence, health: Health | None = None,
                 clock: Callable[[], float] = time.time, interval: float = MIN_INTERVAL) -> None:
        self.path = path
        self.presence = presence
        self.health = health if health is not None else Health()
        self.interval = interval
        self._clock = clock
        self._lines = DeviceLines()
        self._waiters: list[asyncio.Future[None]] = []
        self._dirty = False
        self._writing = False
        #: ``loop.time()`` of the last write attempted for a change (not start-up's).
        self._last = -float("inf")
        self._task: asyncio.Task[None] | None = None
        #: Seconds until the next retry while the file is stale (0: it is up to date).
        self._retry = 0.0
        self._wake: asyncio.Event | None = None

    def request(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._dirty = True
        if loop.time() - self._last >= self.interval:
            self._waiters.append(fut)
        else:
            fut.set_result(None)
        if self._task is None:
            self._task = loop.create_task(self._run())
        elif self._wake is not None:
            self._wake.set()  # a change while stale: try again now, not after the backoff
        return fut

    def written(self) -> asyncio.Future[None]:
        """A future that resolves once the file holds every change made so far (within
        ``interval``; at once when it does already)."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.pending and self._task is not None:
            self._waiters.append(fut)
        else:
            fut.set_result(None)
        return fut

    @property
    def pending(self) -> bool:
        """A change is not in the file yet (it will be within ``interval``)."""
        return self._dirty or self._writing

    @property
    def stale(self) -> bool:
        return bool(self._retry)

    def close(self) -> None:
        """Stop retrying (shutdown writes the file one last time itself)."""
        if self._task is not None:
            self._task.cancel()

    async def write_now(self) -> None:
        """Rewrite the file from the active list now (start-up, shutdown). Raises OSError
        (also when a fleet's presence cannot be read: the file is behind until it can)."""
        try:
            devices = await self.presence.devices()
        except BackendUnavailable as exc:
            raise OSError(errno.EAGAIN, exc.message) from None
        write_atomically(self.path, self._lines.render(devices))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._dirty or self._retry:
                delay = self._last + self.interval - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                self._dirty = False
                waiters, self._waiters = self._waiters, []
                self._last = loop.time()
                self._writing = True
                try:
                    await self.write_now()
                except OSError as exc:
                    self._failed(exc)
                else:
                    self._caught_up()
                finally:
                    self._writing = False
                for fut in waiters:  # a failed write does not hold up a login
                    if not fut.done():
                        fut.set_result(None)
                if self._retry and not self._dirty:
                    self._wake = asyncio.Event()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._retry)
                    self._wake = None
        finally:
            self._task = None
            for fut in self._waiters:  # cancelled (shutdown): nobody waits for a write
                if not fut.done():
                    fut.set_result(None)
            self._waiters = []

    def _failed(self, exc: OSError) -> None:
        if not self._retry:  # once per episode: the retries back off quietly
            log.error("too_many_open_files" if is_exhaustion(exc) else "device_log_write_failed",
                      where="device_log", path=str(self.path), error=exc.strerror or str(exc))
        self.health.report(STALE, f"{self.path.name} is behind the active devices: "
                                  f"{exc.strerror or exc}", self._clock())
        self._retry = min(RETRY_MAX, self._retry * 2) if self._retry else RETRY_FIRST

    def _caught_up(self) -> None:
        if self._retry:
            self._retry = 0.0
            problem = self.health.clear(STALE)
            log.info("device_log_caught_up", path=str(self.path),
                     seconds=round(self._clock() - problem.since, 1) if problem else None)
