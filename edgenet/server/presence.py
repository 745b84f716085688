"""The embedded ``Presence``: the devices logged in to this server, in memory.

One owner (the server's state); nothing here does I/O or reads a clock. Every
method returns without waiting, so a join judges and replaces in one step.
"""

from __future__ import annotations

import secrets

from edgenet.server.interfaces import ActiveDevice, EvictHandler, EvictReason, Joined


class ActiveDevices:
    """Devices logged in now, in login order. A name is active at most once: a second
    login takes over, as an MQTT broker does with a client id."""

    def __init__(self) -> None:
        self._by_name: dict[str, ActiveDevice] = {}
        self._version = 0
        self._evict_handlers: list[EvictHandler] = []

    def on_evict(self, handler: EvictHandler) -> None:
        self._evict_handlers.append(handler)

    def _announce(self, dev: ActiveDevice, reason: EvictReason) -> None:
        for handler in self._evict_handlers:
            handler(dev, reason)

    async def join(self, name: str, ip: str, udp_port: int, now: float) -> Joined:
        old = self._by_name.pop(name, None)
        dev = ActiveDevice(name, ip, udp_port, now, secrets.token_hex(8))
        self._by_name[name] = dev
        self._version += 1
        if old is not None:
            self._announce(old, "replaced")
        return Joined(dev, old)

    async def leave(self, name: str, session_id: str) -> ActiveDevice | None:
        dev = self._by_name.get(name)
        if dev is None or dev.session_id != session_id:
            return None
        del self._by_name[name]
        self._version += 1
        return dev

    async def evict(self, name: str, reason: EvictReason) -> ActiveDevice | None:
        dev = self._by_name.pop(name, None)
        if dev is not None:
            self._version += 1
            self._announce(dev, reason)
        return dev

    async def get(self, name: str) -> ActiveDevice | None:
        return self._by_name.get(name)

    async def devices(self) -> list[ActiveDevice]:
        return list(self._by_name.values())

    async def count(self) -> int:
        return len(self._by_name)

    async def version(self) -> int:
        return self._version
