"""asyncio glue for the path logic (``paths.PathSet``) on a UVF endpoint's socket.

The endpoint hands it the datagrams of the path types (registration answers, probes) and
asks it to unwrap RELAY datagrams; it sends what the core has through the endpoint's own
send function, keeps one ``call_at`` timer for the core's next deadline, turns candidate
addresses (IP literals from the server) into socket addresses, and resolves the future of
each ``find_route`` when the core chooses. Nothing is decided here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from . import udpsocket
from .deadline import DeadlineTimer
from .paths import DirectRoute, PathChosen, PathConfig, PathSet, RegisteredAs, RelayRoute, Target
from .records import PeerKey, SockAddr

log = structlog.get_logger("edgenet.rudp")

Route = DirectRoute | RelayRoute | None
#: A candidate as the server gives it: (ip, port, kind).
Candidate = tuple[str, int, str]


class PathAgent:
    def __init__(self, loop: asyncio.AbstractEventLoop, family: int,
                 send: Callable[[SockAddr, list[bytes]], None],
                 config: PathConfig = PathConfig()) -> None:  # noqa: B008 - frozen
        self._loop = loop
        self._family = family
        self._send = send
        self.core = PathSet(config)
        self.stats = self.core.stats
        self._timer = DeadlineTimer(loop, self._on_timer)
        self._waiting: dict[int, asyncio.Future[Route]] = {}
        self._closed = False

    @property
    def reflexive(self) -> tuple[str, int] | None:
        """This device's address as the rendezvous sees it (None until it answered)."""
        reg = self.core.registration
        return None if reg is None else reg.reflexive

    def resolve(self, host: str, port: int) -> tuple[SockAddr, PeerKey] | None:
        try:
            addr = udpsocket.sockaddr_for(self._family, host, port)
            return addr, udpsocket.peer_key(addr)
        except (OSError, ValueError):
            return None

    def register(self, host: str, port: int, token: bytes) -> bool:
        """Register with the rendezvous at ``host:port`` (an IP literal); False when this
        socket cannot reach it."""
        where = self.resolve(host, port)
        if where is None:
            return False
        self.core.register(where[0], where[1], token, self._loop.time())
        self.flush(self._loop.time())
        return True

    def expect(self, token: int, candidates: Sequence[Candidate], relay: bool) -> None:
        """This device is to receive a UVF: probe the sender's candidates, answer its probes,
        take the relay's datagrams of ``token``."""
        now = self._loop.time()
        self.core.start(token, sender=False, targets=self._targets(candidates), relay=relay,
                        now=now)
        self.flush(now)

    async def find_route(self, token: int, candidates: Sequence[Candidate], relay: bool
                         ) -> Route:
        """Probe the receiver's candidates; the first that answers, else the relay (after
        the probe timeout), else None."""
        fut: asyncio.Future[Route] = self._loop.create_future()
        self._waiting[token] = fut
        now = self._loop.time()
        self.core.start(token, sender=True, targets=self._targets(candidates), relay=relay,
                        now=now)
        self.flush(now)
        try:
            return await fut
        finally:
            self._waiting.pop(token, None)

    def _targets(self, candidates: Sequence[Candidate]) -> list[Target]:
        out: list[Target] = []
        for host, port, kind in candidates:
            where = self.resolve(host, port)
            if where is not None and all(t.key != where[1] for t in out):
                out.append(Target(where[0], where[1], kind))
        return out

    # -- called by the endpoint -----------------------------------------------------------------

    def receive(self, data: bytes, addr: SockAddr, key: PeerKey, now: float) -> None:
        self.core.receive_datagram(data, addr, key, now)

    def unwrap(self, data: bytes, key: PeerKey, now: float
               ) -> tuple[bytes, RelayRoute, PeerKey] | None:
        return self.core.unwrap(data, key, now)

    def flush(self, now: float) -> None:
        """Send what the core has, act on its events, re-arm the timer."""
        if self._closed:
            return
        for addr, datagrams in self.core.datagrams_to_send(now):
            self._send(addr, datagrams)
        for event in self.core.pop_events():
            if isinstance(event, RegisteredAs):
                log.info("uvf.registered", reflexive=f"{event.host}:{event.port}")
            elif isinstance(event, PathChosen):
                fut = self._waiting.get(event.token)
                if fut is not None and not fut.done():
                    fut.set_result(event.route)
        self._rearm()

    def close(self) -> None:
        self._closed = True
        self._timer.cancel()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(None)

    def _rearm(self) -> None:
        self._timer.rearm(self.core.get_timer())

    def _on_timer(self, now: float) -> None:
        self.core.handle_timer(now)
        self.flush(now)
