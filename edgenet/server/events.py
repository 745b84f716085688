"""The embedded ``EventLog``: a structlog processor feeding a ring buffer.

``EventBuffer`` is put in the structlog chain (``configure_logging(extra_processors=
[buffer])``). Each event the server logs is copied, made JSON-safe and stripped of
secrets, kept in a bounded ring buffer, handed to listeners (the Prometheus
metrics) and pushed to live subscribers (the admin API's SSE stream). The event
dict itself passes on unchanged, so rendering is not affected, and nothing here
ever raises into the logger.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from edgenet.server.interfaces import EventListener, Subscriber, event_matches

#: Events kept for ``GET /api/v1/events``.
DEFAULT_CAPACITY = 2000
#: Live SSE subscribers at once.
MAX_SUBSCRIBERS = 32
#: Longest string value kept in an event (longer ones are cut).
MAX_VALUE_CHARS = 2000

#: Keys never copied out of an event, whatever logged them.
_SECRET_KEYS = frozenset({"password", "passwd", "token", "admin_token", "secret",
                          "authorization", "credentials_text"})
#: Keys judged (kept or not) remembered, so that each is lowered and looked up once.
MAX_KEYS_REMEMBERED = 1024
#: Keys structlog uses internally that hold objects, not data.
_DROPPED_KEYS = frozenset({"exc_info", "stack_info", "_record", "_from_structlog"})


def _safe(value: Any, depth: int = 0) -> Any:
    """A JSON-safe copy of a logged value (bounded in depth and size)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= MAX_VALUE_CHARS else value[:MAX_VALUE_CHARS] + "..."
    if depth < 3 and isinstance(value, (list, tuple)):
        return [_safe(v, depth + 1) for v in list(value)[:100]]
    if depth < 3 and isinstance(value, dict):
        return {str(k): _safe(v, depth + 1) for k, v in list(value.items())[:100]
                if str(k).lower() not in _SECRET_KEYS}
    return _safe(str(value), depth)


class EventBuffer:
    """The last ``capacity`` events, with a sequence number each, and live subscribers.

    A structlog processor: call it as ``buffer(logger, method_name, event_dict)``.
    Events logged from another thread are recorded under a lock; subscribers,
    which live on the event loop, are fed through ``call_soon_threadsafe``.
    """

    def __init__(self, capacity: int = DEFAULT_CAPACITY, max_subscribers: int = MAX_SUBSCRIBERS,
                 clock: Callable[[], float] = time.time) -> None:
        self.capacity = capacity
        self.max_subscribers = max_subscribers
        self.clock = clock
        self._events: deque[dict[str, Any]] = deque(maxlen=capacity)
        self._lock = threading.Lock()
        self._seq = 0
        self._listeners: list[EventListener] = []
        self._subscribers: set[Subscriber] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._kept_keys: dict[Any, bool] = {}
        #: Events a listener failed on (a bug of ours; counted, never raised into logging).
        self.listener_errors = 0

    # -- the structlog processor -----------------------------------------------

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        try:
            self.record(event_dict)
        except Exception:  # noqa: BLE001 - logging must never fail because of the admin API
            self.listener_errors += 1
        return event_dict

    def record(self, event_dict: dict[str, Any]) -> dict[str, Any]:
        # One event per command: the common keys and scalar values take a fast path
        # (this copy was the largest part of an event's cost).
        entry: dict[str, Any] = {}
        kept = self._kept_keys
        for key, value in event_dict.items():
            keep = kept.get(key)
            if keep is None:
                k = str(key)
                keep = k.lower() not in _SECRET_KEYS and k not in _DROPPED_KEYS
                if len(kept) < MAX_KEYS_REMEMBERED:
                    kept[key] = keep
            if not keep:
                continue
            if type(key) is not str:
                key = str(key)
            kind = type(value)
            if kind is str:
                entry[key] = value if len(value) <= MAX_VALUE_CHARS else _safe(value)
            elif kind is int or kind is float or kind is bool or value is None:
                entry[key] = value
            else:
                entry[key] = _safe(value)
        if event_dict.get("exc_info"):
            entry["exception"] = True
        entry.setdefault("event", "")
        entry.setdefault("level", "info")
        with self._lock:
            self._seq += 1
            entry["seq"] = self._seq
            entry["ts"] = self.clock()
            self._events.append(entry)
        for listener in list(self._listeners):
            try:
                listener(entry)
            except Exception:  # noqa: BLE001 - a listener's bug must not break logging
                self.listener_errors += 1
        if self._subscribers:
            self._publish(entry)
        return entry

    def add_listener(self, listener: EventListener) -> None:
        self._listeners.append(listener)

    def remove_listener(self, listener: EventListener) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    # -- readers ----------------------------------------------------------------

    async def last_seq(self) -> int:
        return self._seq

    async def query(self, *, limit: int, before: int | None = None, device: str | None = None,
                    names: frozenset[str] | None = None, since: float | None = None
                    ) -> list[dict[str, Any]]:
        with self._lock:
            snapshot = list(self._events)
        out: list[dict[str, Any]] = []
        for entry in reversed(snapshot):
            if len(out) == limit:
                break
            if (before is None or entry["seq"] < before) \
                    and event_matches(entry, device, names, since):
                out.append(entry)
        return out

    async def after(self, seq: int) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e in self._events if e["seq"] > seq]

    # -- live subscribers -----------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def subscribe(self) -> Subscriber | None:
        """A new subscriber, or None when ``max_subscribers`` are already streaming."""
        if len(self._subscribers) >= self.max_subscribers:
            return None
        if self._loop is None:
            self.bind_loop(asyncio.get_running_loop())
        sub = Subscriber()
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self._subscribers.discard(sub)

    def close_subscribers(self) -> None:
        """End every stream (server shutdown)."""
        for sub in list(self._subscribers):
            sub.end("shutdown")

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def _publish(self, entry: dict[str, Any]) -> None:
        if self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._fan_out(entry)
        elif not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._fan_out, entry)

    def _fan_out(self, entry: dict[str, Any]) -> None:
        for sub in list(self._subscribers):
            sub.offer(entry)
