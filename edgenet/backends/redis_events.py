"""The fleet's ``EventLog``: every node's events in one Redis sorted set.

``record`` (the structlog processor, any thread, never blocks) makes the entry
as the embedded ``EventBuffer`` does (JSON-safe, secrets stripped, this node's
listeners told), stamps it with this node's id and a fleet-wide ``seq``, and
queues it; a publisher task adds queued entries to ``events`` (score: seq) and
trims it to ``capacity``. Readers (``query``, ``after``, ``last_seq``) publish
what is queued first, then read the fleet's set, so each node lists every node's
events, in one order.

``seq`` is a hybrid logical clock made on the node, with no round trip:
``(milliseconds << 10) | (counter << 4) | slot``: rising on each node, roughly
time-ordered across nodes, unique per node (``slot`` is given to each node at
start, 16 of them), and below 2**53 (exact as a sorted-set score). Live
subscribers are fed by a poller that reads, every ``POLL`` seconds, the entries
older than ``LAG`` seconds that it has not delivered yet, in seq order; so the
stream merges all nodes in one order, ``LAG`` behind. While Redis is down,
events queue here (at most ``MAX_QUEUED``; older ones are dropped and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgenet.backends.redislink import RedisLink
from edgenet.server.events import DEFAULT_CAPACITY, MAX_SUBSCRIBERS, EventBuffer
from edgenet.server.interfaces import BackendUnavailable, EventListener, Subscriber, event_matches
from edgenet.server.stopping import stop_loop

POLL = 0.1
LAG = 0.3
MAX_QUEUED = 10_000
#: Entries published to Redis per round trip.
BATCH = 500
#: Seconds the publisher waits after the first queued event, to publish many at once.
BATCH_WINDOW = 0.01


class RedisEventLog:
    def __init__(self, node: str, capacity: int = DEFAULT_CAPACITY,
                 max_subscribers: int = MAX_SUBSCRIBERS,
                 clock: Callable[[], float] = time.time) -> None:
        self.node = node
        self.capacity = capacity
        self.max_subscribers = max_subscribers
        # Only for making entries and telling listeners; the fleet's set is the log.
        self._maker = EventBuffer(capacity=1, max_subscribers=0, clock=clock)
        self._link: RedisLink | None = None
        self._key = ""
        self._lock = threading.Lock()
        self._ms = 0
        self._count = 0
        self._slot = 0
        self._queue: deque[tuple[int, str]] = deque()
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._publishing = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscribers: set[Subscriber] = set()
        self._poller: asyncio.Task[None] | None = None
        self.stopped = False

    # -- set-up -------------------------------------------------------------------

    async def attach(self, link: RedisLink) -> None:
        """Start publishing to ``link``'s Redis (queued events go first)."""
        self._link = link
        self._key = link.key("events")
        slot = await link.run(lambda r: r.incr(link.key("event_slots")))
        self._slot = int(slot) % 16
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._tasks.append(self._loop.create_task(self._publisher()))
        link.on_recover.append(self._publish_pending)

    async def close(self) -> None:
        self.close_subscribers()
        with contextlib.suppress(BackendUnavailable):
            await self._publish_pending()
        for task in [*self._tasks, *([self._poller] if self._poller else [])]:
            await stop_loop(task, self)

    # -- recording ------------------------------------------------------------------

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        try:
            self.record(event_dict)
        except Exception:  # noqa: BLE001 - logging must never fail because of the fleet
            self.dropped += 1
        return event_dict

    def _next_seq(self) -> int:
        with self._lock:
            ms = int(time.time() * 1000)
            if ms > self._ms:
                self._ms, self._count = ms, 0
            else:
                self._count += 1
                if self._count >= 64:
                    self._ms, self._count = self._ms + 1, 0
            return (self._ms << 10) | (self._count << 4) | self._slot

    def record(self, event_dict: dict[str, Any]) -> dict[str, Any]:
        entry = self._maker.record(event_dict)
        entry["seq"] = self._next_seq()
        entry["node"] = self.node
        text = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
        with self._lock:
            if len(self._queue) >= MAX_QUEUED:
                self._queue.popleft()
                self.dropped += 1
            self._queue.append((entry["seq"], text))
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            if self._in_loop_thread():
                wake.set()
            else:
                loop.call_soon_threadsafe(wake.set)
        return entry

    def _in_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def add_listener(self, listener: EventListener) -> None:
        self._maker.add_listener(listener)

    def remove_listener(self, listener: EventListener) -> None:
        self._maker.remove_listener(listener)

    # -- publishing -----------------------------------------------------------------

    async def _publish_pending(self) -> None:
        link = self._link
        if link is None:
            return
        async with self._publishing:
            while True:
                with self._lock:
                    batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
                if not batch:
                    return

                async def put(r: Any, batch: list[tuple[int, str]] = batch) -> None:
                    async with r.pipeline(transaction=True) as pipe:
                        pipe.zadd(self._key, {text: seq for seq, text in batch})
                        pipe.zremrangebyrank(self._key, 0, -(self.capacity + 1))
                        await pipe.execute()
                try:
                    await link.run(put)
                except BackendUnavailable:
                    with self._lock:
                        self._queue.extendleft(reversed(batch))
                    raise

    async def _publisher(self) -> None:
        assert self._wake is not None
        while not self.stopped:
            await self._wake.wait()
            # Gather what a busy node logs in a few milliseconds into one round trip.
            await asyncio.sleep(BATCH_WINDOW)
            self._wake.clear()
            with contextlib.suppress(BackendUnavailable):
                await self._publish_pending()

    # -- reading --------------------------------------------------------------------

    async def _read(self, low: str, high: str, newest_first: bool) -> list[dict[str, Any]]:
        link = self._link
        if link is None:
            return []
        await self._publish_pending()
        if newest_first:
            raw = await link.run(lambda r: r.zrevrangebyscore(self._key, high, low))
        else:
            raw = await link.run(lambda r: r.zrangebyscore(self._key, low, high))
        return [json.loads(text) for text in raw]

    async def last_seq(self) -> int:
        newest = await self._read("-inf", "+inf", True)
        return int(newest[0]["seq"]) if newest else 0

    async def query(self, *, limit: int, before: int | None = None, device: str | None = None,
                    names: frozenset[str] | None = None, since: float | None = None
                    ) -> list[dict[str, Any]]:
        high = "+inf" if before is None else f"({before}"
        found = [e for e in await self._read("-inf", high, True)
                 if event_matches(e, device, names, since)]
        return found[:limit]

    async def after(self, seq: int) -> list[dict[str, Any]]:
        return await self._read(f"({seq}", "+inf", False)

    # -- live subscribers -----------------------------------------------------------

    def subscribe(self) -> Subscriber | None:
        if len(self._subscribers) >= self.max_subscribers:
            return None
        sub = Subscriber()
        self._subscribers.add(sub)
        if self._poller is None or self._poller.done():
            self._poller = asyncio.get_running_loop().create_task(self._poll())
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def close_subscribers(self) -> None:
        for sub in list(self._subscribers):
            sub.end("shutdown")

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @staticmethod
    def _horizon(lag: float) -> int:
        return (int((time.time() - lag) * 1000) << 10) | 0x3FF

    async def _poll(self) -> None:
        delivered = self._horizon(LAG)
        while self._subscribers and not self.stopped:
            await asyncio.sleep(POLL)
            horizon = self._horizon(LAG)
            try:
                entries = await self._read(f"({delivered}", str(horizon), False)
            except BackendUnavailable:
                continue
            delivered = horizon
            for entry in entries:
                for sub in list(self._subscribers):
                    sub.offer(entry)
