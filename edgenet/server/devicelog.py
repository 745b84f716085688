"""``edge-device-log.txt``: the active devices, rewritten whole on every change.

``seq; dd Month yyyy hh:mm:ss; name; ip; udp_port``, numbered 1..n in login order.
The file is replaced whole (temporary file, then rename), so a reader never sees
half of it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import structlog

from edgenet.server.interfaces import ActiveDevice, Presence
from edgenet.server.logs import format_timestamp, write_atomically

log = structlog.get_logger("edgenet.server")


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

    def __init__(self, path: Path, presence: Presence) -> None:
        self.path = path
        self.presence = presence
        self._waiters: list[asyncio.Future[None]] = []
        self._task: asyncio.Task[None] | None = None

    def request(self) -> asyncio.Future[None]:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._waiters.append(fut)
        if self._task is None:
            self._task = loop.create_task(self._run())
        return fut

    async def write_now(self) -> None:
        """Rewrite the file from the active list now (start-up, shutdown). Raises OSError."""
        write_atomically(self.path, device_log_lines(await self.presence.devices()))

    async def _run(self) -> None:
        try:
            while self._waiters:
                waiters, self._waiters = self._waiters, []
                try:
                    await self.write_now()
                except OSError as exc:
                    log.error("device_log_write_failed", error=str(exc))
                for fut in waiters:
                    if not fut.done():
                        fut.set_result(None)
        finally:
            self._task = None
