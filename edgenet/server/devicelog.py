"""``edge-device-log.txt``: the active devices, rewritten whole on every change.

``seq; dd Month yyyy hh:mm:ss; name; ip; udp_port``, numbered 1..n in login order.
The file is replaced whole (temporary file, then rename), so a reader never sees
half of it. A write that fails (a full disk, a missing data dir) leaves no
temporary file; the file is then *stale*: the fault is logged once
(``device_log_write_failed``), ``/healthz`` reports ``device_log_stale``, and the
writer tries again with backoff (0.25 s doubling to 5 s, at once on a new change)
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

from edgenet.server.health import Health
from edgenet.server.interfaces import ActiveDevice, BackendUnavailable, Presence
from edgenet.server.logs import format_timestamp, write_atomically

log = structlog.get_logger("edgenet.server")

#: Seconds before the first retry of a failed write; doubled up to ``RETRY_MAX``.
RETRY_FIRST = 0.25
RETRY_MAX = 5.0
STALE = "device_log_stale"


def device_log_lines(devices: Iterable[ActiveDevice]) -> str:
    return "".join(
        f"{seq}; {format_timestamp(d.since)}; {d.name}; {d.ip}; {d.udp_port}\n"
        for seq, d in enumerate(devices, 1)
    )


class DeviceLogWriter:
    """Keeps ``edge-device-log.txt`` equal to the active list.

    Changes in one turn of the event loop are written once (a rewrite costs
    O(devices), so 1,000 logins at once must not cost 1,000 rewrites): one writer
    task takes every request made until it runs. ``request()`` returns a future that
    resolves once the file holds the change.
    """

    def __init__(self, path: Path, presence: Presence, health: Health | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.presence = presence
        self.health = health if health is not None else Health()
        self._clock = clock
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None
        #: Seconds until the next retry while the file is stale (0: it is up to date).
        self._retry = 0.0
        self._wake: asyncio.Event | None = None

    def request(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if self._task is None:
            self._task = loop.create_task(self._run())
        elif self._wake is not None:
            self._wake.set()  # a change while stale: try again now, not after the backoff
        return fut

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
        write_atomically(self.path, device_log_lines(devices))

    async def _run(self) -> None:
        try:
            while self._waiters or self._retry:
                waiters, self._waiters = self._waiters, []
                try:
                    await self.write_now()
                except OSError as exc:
                    self._failed(exc)
                else:
                    self._caught_up()
                for fut in waiters:  # a failed write does not hold up a login
                    if not fut.done():
                        fut.set_result(None)
                if self._retry and not self._waiters:
                    self._wake = asyncio.Event()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), self._retry)
                    self._wake = None
        finally:
            self._task = None

    def _failed(self, exc: OSError) -> None:
        if not self._retry:
            log.error("device_log_write_failed", path=str(self.path),
                      error=exc.strerror or str(exc))
        self.health.report(STALE, f"{self.path.name} is behind the active devices: "
                                  f"{exc.strerror or exc}", self._clock())
        self._retry = min(RETRY_MAX, self._retry * 2) if self._retry else RETRY_FIRST

    def _caught_up(self) -> None:
        if self._retry:
            self._retry = 0.0
            problem = self.health.clear(STALE)
            log.info("device_log_caught_up", path=str(self.path),
                     seconds=round(self._clock() - problem.since, 1) if problem else None)
