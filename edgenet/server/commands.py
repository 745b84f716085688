"""What each device command does to the server's state, as replies.

Handlers take the ``ServerState`` and return the typed reply. They reach the
state only through its interfaces (``state.files``, ``state.presence``, ...).
"""

from __future__ import annotations

import time

import structlog

from edgenet.server.compute import DataError
from edgenet.server.descriptors import is_exhaustion
from edgenet.server.interfaces import (
    BackendUnavailable,
    ChecksumMismatch,
    PendingUpload,
    ResumeRefused,
    ResumeRequest,
    StoredFile,
)
from edgenet.server.state import ServerState
from edgenet.wire import messages as m

COMMAND_NAMES = {
    "Upload": "UED", "Compute": "SCS", "Delete": "DTE", "ListDevices": "AED",
    "Lookup": "UVF", "Login": "LOGIN", "Logout": "OUT", "Ping": "PING", "Pong": "PONG",
    "Connect": "UVF", "UdpRegister": "UDP", "UploadOffset": "UED",
}

NOT_FOUND = "the file does not exist at the server side"

log = structlog.get_logger("edgenet.server")


def storage_error(state: ServerState, req: m.Upload | m.Compute | m.Delete | m.UploadOffset,
                  device: str,
                  doing: str, exc: OSError) -> m.ErrorReply:
    """A storage fault, as the reply to the one request it hit (the session goes on),
    one event for the operator, and a look at the storage now."""
    reason = exc.strerror or str(exc)
    command = COMMAND_NAMES[type(req).__name__]
    if is_exhaustion(exc):  # out of descriptors: not the storage's fault
        state.fd_exhaustion.report("command", time.monotonic(), device=device, command=command,
                                   file_id=req.file_id, error=reason)
        return m.ErrorReply(req.id, "storage_error", f"the server could not {doing}: {reason}")
    log.error("storage_error", device=device, command=command,
              file_id=req.file_id, error=reason, errno=exc.errno)
    state.health.storage_suspect()
    return m.ErrorReply(req.id, "storage_error", f"the server could not {doing}: {reason}")


class RefusedUpload:
    """The pending upload of a body that will not be stored (the store is unreachable, a
    resume it cannot do): the body is drained and dropped, and the commit says why."""

    def __init__(self, exc: BackendUnavailable | ResumeRefused) -> None:
        self.exc = exc

    def write(self, chunk: bytes) -> None:
        return None

    async def commit(self, now: float) -> StoredFile:
        raise self.exc

    def abort(self) -> None:
        return None


async def begin_upload(state: ServerState, device: str, req: m.Upload) -> PendingUpload:
    """The pending upload of ``req``: checked and resumable when it carries a SHA-256
    (version 3), else as version 1 had it. It holds one of the server's upload slots
    until it ends (waiting here for one while every slot is taken)."""
    if req.sha256 is not None and req.offset + req.size > state.config.max_upload:
        return RefusedUpload(ResumeRefused(
            "frame_too_large", f"the file is {req.offset + req.size} bytes; the server "
            f"takes at most {state.config.max_upload}"))
    slots = state.upload_slots
    await slots.acquire()
    try:
        if req.sha256 is None:
            upload = await state.files.begin_upload(device, req.file_id)
        else:
            upload = await state.files.begin_upload(
                device, req.file_id, ResumeRequest(req.offset, req.sha256,
                                                   req.offset + req.size))
    except (BackendUnavailable, ResumeRefused) as exc:
        slots.release()
        return RefusedUpload(exc)
    except BaseException:
        slots.release()
        raise
    return slots.hold(upload)


async def upload_offset(state: ServerState, device: str, req: m.UploadOffset
                        ) -> m.UploadOffsetOk | m.ErrorReply:
    if req.size > state.config.max_upload:
        return m.ErrorReply(req.id, "frame_too_large", f"the file is {req.size} bytes; the "
                            f"server takes at most {state.config.max_upload}")
    try:
        point = await state.files.resume_point(device, req.file_id, req.size, state.clock())
    except ResumeRefused as exc:
        log.info("resume_refused", device=device, file_id=req.file_id, reason=exc.message)
        return m.ErrorReply(req.id, exc.code, exc.message)
    except OSError as exc:
        return storage_error(state, req, device, "look for a partial upload", exc)
    return m.UploadOffsetOk(req.id, req.file_id, point.offset, point.sha256)


async def finish_upload(state: ServerState, device: str, up: PendingUpload, req: m.Upload
                        ) -> m.UploadOk | m.ErrorReply:
    try:
        stored = await up.commit(state.clock())
    except DataError as exc:
        return m.ErrorReply(req.id, "bad_data", f"upload refused, nothing stored: {exc.message}")
    except ChecksumMismatch as exc:
        return m.ErrorReply(req.id, "bad_checksum", f"upload refused: {exc.message}")
    except ResumeRefused as exc:
        return m.ErrorReply(req.id, exc.code, f"upload refused, nothing stored: {exc.message}")
    except OSError as exc:
        up.abort()
        return storage_error(state, req, device, "store the file", exc)
    except BackendUnavailable as exc:
        up.abort()
        return m.ErrorReply(req.id, "service_unavailable", f"upload refused: {exc.message}")
    return m.UploadOk(req.id, req.file_id, stored.samples, stored.size, req.offset or None)


async def compute(state: ServerState, device: str, req: m.Compute
                  ) -> m.ComputeOk | m.ErrorReply:
    try:
        stats = await state.files.stats(device, req.file_id)
        if stats is None:
            return m.ErrorReply(req.id, "not_found", NOT_FOUND)
        result = stats.result(req.op)
    except DataError:
        return m.ErrorReply(req.id, "empty_file", f"the file with ID of {req.file_id} holds "
                                                  "no samples at the server side")
    except OSError as exc:
        return storage_error(state, req, device, "read the file", exc)
    return m.ComputeOk(req.id, req.file_id, req.op, result)


async def delete(state: ServerState, device: str, req: m.Delete) -> m.DeleteOk | m.ErrorReply:
    try:
        stored = await state.files.delete(device, req.file_id, state.clock())
    except OSError as exc:
        return storage_error(state, req, device, "delete the file", exc)
    if stored is None:
        return m.ErrorReply(req.id, "not_found", NOT_FOUND)
    return m.DeleteOk(req.id, req.file_id, stored.samples)


async def lookup(state: ServerState, device: str, req: m.Lookup) -> m.LookupOk | m.ErrorReply:
    if req.name == device:
        return m.ErrorReply(req.id, "self_target", "you cannot send a file to yourself")
    target = await state.presence.get(req.name)
    if target is None:
        return m.ErrorReply(req.id, "not_active", f"device {req.name} is not active")
    return m.LookupOk(req.id, target.name, target.ip, target.udp_port)
