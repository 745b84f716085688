"""AED replies, written from a cache instead of being encoded per request."""

from __future__ import annotations

import asyncio
import json
import struct

from edgenet.server.interfaces import Presence
from edgenet.server.logs import format_timestamp
from edgenet.wire import messages as m
from edgenet.wire.frames import MAX_REPLY_HEADER


class DeviceListing:
    """Each active device's JSON entry is encoded once per session, and all entries
    are joined once per change of the active list (login, logout). A reply is
    then a small framed prefix plus one or two views into the joined bytes (the
    asker's own entry is cut out), written without copying: at 5,000 devices an
    AED reply is ~600 KB, and building it per request would cost the server most
    of its time in allocation alone. Many AEDs that find the list changed at once
    rebuild it once: the first reads the presence, the others wait for it (in a
    fleet a read of the whole list is a Redis round trip and a decode of every
    entry, which hundreds of AEDs at once after a login burst would each repeat).
    """

    def __init__(self, presence: Presence) -> None:
        self.presence = presence
        self._version = -1
        self._encoded: dict[str, bytes] = {}
        self._joined = b""
        self._spans: dict[str, tuple[int, int]] = {}
        self._rebuilding = asyncio.Lock()

    async def _refresh(self) -> None:
        if self._version == await self.presence.version():
            return
        async with self._rebuilding:
            await self._rebuild()

    async def _rebuild(self) -> None:
        version = await self.presence.version()
        if self._version == version:  # rebuilt while this one waited
            return
        encoded: dict[str, bytes] = {}
        parts: list[bytes] = []
        spans: dict[str, tuple[int, int]] = {}
        pos = 0
        for d in await self.presence.devices():
            entry = self._encoded.get(d.session_id)
            if entry is None:
                entry = json.dumps(
                    {"name": d.name, "ip": d.ip, "udp_port": d.udp_port, "since": d.since,
                     "since_text": format_timestamp(d.since)},
                    separators=(",", ":"), ensure_ascii=False).encode("utf-8")
            encoded[d.session_id] = entry
            if parts:
                pos += 1  # the comma before this entry
            spans[d.name] = (pos, pos + len(entry))
            pos += len(entry)
            parts.append(entry)
        self._encoded = encoded
        self._joined = b",".join(parts)
        self._spans = spans
        self._version = version

    async def reply(self, request_id: int, device: str) -> list[bytes | memoryview] | m.ErrorReply:
        """The framed ``ok`` reply listing every active device but ``device``, as
        pieces to write in order (``DeviceSession.send_encoded``); an error reply when
        the list is too long for one frame."""
        await self._refresh()
        joined = memoryview(self._joined)
        span = self._spans.get(device)
        if span is None:
            body = [joined]
        elif span[0] == 0:
            body = [joined[span[1] + 1:]]  # drop the entry and the comma after it
        else:
            body = [joined[: span[0] - 1], joined[span[1]:]]  # and the comma before it
        head = b'{"type":"ok","id":%d,"devices":[' % request_id
        length = len(head) + sum(len(piece) for piece in body) + 2
        if length > MAX_REPLY_HEADER:
            return m.ErrorReply(request_id, "too_large",
                                "too many active devices to list in one reply")
        return [struct.pack(">I", length) + head, *body, b"]}"]
