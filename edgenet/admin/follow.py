"""``edgenet admin events --follow``: read the server-sent event stream, and reconnect.

``SseParser`` is sans-I/O (bytes in, events out, bounded buffer). ``follow`` is the
loop around it: on a dropped stream it waits (1 s, doubling to 10 s), asks for the
events it missed with ``Last-Event-ID`` (the server replays those still in its ring
buffer), and carries on; when the server restarted (its newest event is older than
the last one seen) it starts afresh. Only a first connection that fails, or a
refused token, ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from edgenet.admin.client import EXIT_UNREACHABLE, AdminClient, AdminError
from edgenet.numbers import is_ascii_int

#: Longest line kept while waiting for its end (an event is a few KiB at most).
MAX_LINE = 1 << 20
FIRST_RETRY = 1.0
MAX_RETRY = 10.0


@dataclass(frozen=True)
class SseEvent:
    event: str
    data: str
    id: str | None


class SseParser:
    """The text/event-stream format (WHATWG HTML, server-sent events), incrementally."""

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []
        self._event = ""
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[SseEvent]:
        self._buf += chunk
        out: list[SseEvent] = []
        while True:
            end = self._buf.find(b"\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    self._buf = b""  # a line without end: drop it rather than grow
                return out
            line = self._buf[:end].rstrip(b"\r").decode("utf-8", "replace")
            self._buf = self._buf[end + 1:]
            if not line:
                if self._data or self._event:
                    out.append(SseEvent(self._event or "message", "\n".join(self._data),
                                        self._id))
                self._data, self._event = [], ""
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
            elif name == "id" and "\0" not in value:
                self._id = value


def _say(text: str) -> None:
    print(f"edgenet admin: {text}", file=sys.stderr, flush=True)


async def _restarted(client: AdminClient, last_id: str) -> bool:
    """Whether the server's newest event is older than the last one we saw."""
    body = await client.call("GET", "/api/v1/events", {"limit": "1"})
    newest = body.get("data") or []
    seq = newest[0].get("seq", 0) if newest else 0
    if not is_ascii_int(last_id) or not isinstance(seq, int) or isinstance(seq, bool):
        return True
    return seq < int(last_id)


@dataclass
class _Progress:
    """What survives a reconnect: the last event id seen, and whether any stream was up."""

    last_id: str | None = None
    connected: bool = False
    chunks: int = 0


async def follow(client: AdminClient, params: Mapping[str, str],
                 emit: Callable[[dict[str, Any]], None], *,
                 max_reconnects: int | None = None) -> int:
    """Print events as they come until interrupted; returns an exit status."""
    progress = _Progress()
    delay = FIRST_RETRY
    reconnects = 0
    while True:
        before = progress.chunks
        try:
            if progress.last_id is not None and await _restarted(client, progress.last_id):
                _say("the server restarted; following its new events")
                progress.last_id = None
            reason = await _read_stream(client, params, progress, emit)
            _say(f"the server ended the stream ({reason}); reconnecting"
                 if reason else "the event stream closed; reconnecting")
        except AdminError as exc:
            if exc.status != EXIT_UNREACHABLE or not progress.connected:
                raise
            _say(f"{exc.message}; reconnecting in {delay:.0f} s")
        if progress.chunks > before:
            delay = FIRST_RETRY  # the stream was up: the next wait starts short again
        reconnects += 1
        if max_reconnects is not None and reconnects > max_reconnects:
            return EXIT_UNREACHABLE
        await asyncio.sleep(delay)
        delay = min(delay * 2, MAX_RETRY)


async def _read_stream(client: AdminClient, params: Mapping[str, str], progress: _Progress,
                       emit: Callable[[dict[str, Any]], None]) -> str:
    """Emit the events of one stream until it ends: the reason the server gave
    (``end`` event), or "" when the connection just closed."""
    parser = SseParser()
    streamed = False
    async with contextlib.aclosing(client.stream("/api/v1/events/stream", params,
                                                 progress.last_id)) as chunks:
        async for chunk in chunks:
            if not progress.chunks:
                _say(f"following the events of {client.base} (Ctrl-C stops)")
            elif not streamed:
                _say("reconnected")
            streamed = True
            progress.connected = True
            progress.chunks += 1
            for ev in parser.feed(chunk):
                if ev.id is not None:
                    progress.last_id = ev.id
                if ev.event == "end":
                    return _reason(ev.data)
                entry = _entry(ev.data)
                if entry is not None:
                    emit(entry)
    return ""


def _entry(data: str) -> dict[str, Any] | None:
    try:
        entry = json.loads(data) if data else None
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def _reason(data: str) -> str:
    try:
        return str(json.loads(data).get("reason", "ended"))
    except (ValueError, AttributeError):
        return "ended"
