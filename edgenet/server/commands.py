"""What each device request does to the server's state, as replies.

Handlers return the reply's fields. Blocking disk work (fsync, scanning a big
file) runs in a worker thread; in-memory state changes happen on the event loop.
"""

from __future__ import annotations

import asyncio
import json
import struct
from typing import TYPE_CHECKING, Any

from edgenet.server.compute import DataError
from edgenet.server.logs import FileRecord, format_timestamp
from edgenet.server.state import ActiveDevices
from edgenet.wire import messages as m
from edgenet.wire.frames import MAX_REPLY_HEADER, encode_frame

if TYPE_CHECKING:
    from edgenet.server.app import EdgeServer
    from edgenet.server.store import UploadInProgress

#: Files smaller than this are scanned on the event loop; bigger ones in a thread.
INLINE_SCAN_BYTES = 256 * 1024

COMMAND_NAMES = {
    "Upload": "UED", "Compute": "SCS", "Delete": "DTE", "ListDevices": "AED",
    "Lookup": "UVF", "Login": "LOGIN", "Logout": "OUT", "Ping": "PING", "Pong": "PONG",
}


def login_failure(server: EdgeServer, name: str, now: float) -> dict[str, Any]:
    """Count a failed login for ``name`` and build the reply (unknown names alike)."""
    blocked = server.lockouts.record_failure(name, now)
    if blocked:
        return {"code": "blocked", "seconds_left": round(blocked),
                "message": "Invalid password. Your account has been blocked. "
                           f"Please try again in {round(blocked)} seconds"}
    return {"code": "auth_failed", "attempts_left": server.lockouts.failures_left(name),
            "message": "Invalid password. Please try again"}


def blocked_reply(name: str, seconds_left: float) -> dict[str, Any]:
    secs = max(1, int(seconds_left + 0.999))
    return {"code": "blocked", "seconds_left": secs,
            "message": f"Your account is blocked due to multiple login failures. "
                       f"Please try again in {secs} seconds"}


async def finish_upload(server: EdgeServer, device: str, up: UploadInProgress,
                        req: m.Upload) -> dict[str, Any]:
    try:
        samples = up.finish_validation()
    except DataError as exc:
        return m.error(req.id, "bad_data", f"upload refused, nothing stored: {exc.message}")
    now = server.clock()
    record = FileRecord(device, now, req.file_id, samples)
    up.committing = True  # a cancelled wait (shutdown) must not pull the file from the thread
    try:
        await asyncio.to_thread(up.commit, record)
    except OSError as exc:
        up.abort()
        return m.error(req.id, "storage_error", f"the server could not store the file: "
                                                f"{exc.strerror or exc}")
    stored = server.store.index_upload(up, record)
    dev = server.devices.get(device)
    if dev is not None:
        dev.bytes_uploaded += stored.size
    return m.ok(req.id, file_id=req.file_id, samples=samples, bytes=stored.size)


async def compute(server: EdgeServer, device: str, req: m.Compute) -> dict[str, Any]:
    stored = server.store.get(device, req.file_id)
    if stored is None:
        return m.error(req.id, "not_found", "the file does not exist at the server side")
    try:
        if stored.stats is None:
            path = server.store.path_for(device, req.file_id)
            if stored.size <= INLINE_SCAN_BYTES:
                stats = server.store.scan(path)
            else:
                stats = await asyncio.to_thread(server.store.scan, path)
            stored.stats = stats
        result = stored.stats.result(req.op)
    except DataError:
        return m.error(req.id, "empty_file",
                       f"the file with ID of {req.file_id} holds no samples at the server side")
    except FileNotFoundError:
        return m.error(req.id, "not_found", "the file does not exist at the server side")
    return m.ok(req.id, file_id=req.file_id, op=req.op, result=result)


async def delete(server: EdgeServer, device: str, req: m.Delete) -> dict[str, Any]:
    stored = server.store.take(device, req.file_id)
    if stored is None:
        return m.error(req.id, "not_found", "the file does not exist at the server side")
    record = FileRecord(device, server.clock(), req.file_id, stored.samples)
    await asyncio.to_thread(server.store.remove_file, record)
    server.store.deletions.remember(record)
    return m.ok(req.id, file_id=req.file_id, samples=stored.samples)


class DeviceListing:
    """AED replies, written from a cache instead of being encoded per request.

    Each active device's JSON entry is encoded once per session, and all entries
    are joined once per change of the active list (login, logout). A reply is
    then a small framed prefix plus one or two views into the joined bytes (the
    asker's own entry is cut out), written without copying: at 5,000 devices an
    AED reply is ~600 KB, and building it per request would cost the server most
    of its time in allocation alone.
    """

    def __init__(self, devices: ActiveDevices) -> None:
        self.devices = devices
        self._version = -1
        self._encoded: dict[str, bytes] = {}
        self._joined = b""
        self._spans: dict[str, tuple[int, int]] = {}

    def _refresh(self) -> None:
        if self._version == self.devices.version:
            return
        encoded: dict[str, bytes] = {}
        parts: list[bytes] = []
        spans: dict[str, tuple[int, int]] = {}
        pos = 0
        for d in self.devices:
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
        self._version = self.devices.version

    def reply(self, request_id: int, device: str) -> list[bytes | memoryview]:
        """The framed ``ok`` reply listing every active device but ``device``, as
        pieces to write in order."""
        self._refresh()
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
            return [encode_frame(m.error(request_id, "too_large",
                                         "too many active devices to list in one reply"))]
        return [struct.pack(">I", length) + head, *body, b"]}"]


def lookup(server: EdgeServer, device: str, req: m.Lookup) -> dict[str, Any]:
    if req.name == device:
        return m.error(req.id, "self_target", "you cannot send a file to yourself")
    target = server.devices.get(req.name)
    if target is None:
        return m.error(req.id, "not_active", f"device {req.name} is not active")
    return m.ok(req.id, name=target.name, ip=target.ip, udp_port=target.udp_port)
