"""What each device command does to the server's state, as replies.

Handlers take the ``ServerState`` and return the typed reply. They reach the
state only through its interfaces (``state.files``, ``state.presence``, ...).
"""

from __future__ import annotations

import structlog

from edgenet.server.compute import DataError
from edgenet.server.interfaces import BackendUnavailable, PendingUpload
from edgenet.server.state import ServerState
from edgenet.wire import messages as m

COMMAND_NAMES = {
    "Upload": "UED", "Compute": "SCS", "Delete": "DTE", "ListDevices": "AED",
    "Lookup": "UVF", "Login": "LOGIN", "Logout": "OUT", "Ping": "PING", "Pong": "PONG",
    "Connect": "UVF", "UdpRegister": "UDP",
}

NOT_FOUND = "the file does not exist at the server side"

log = structlog.get_logger("edgenet.server")


def storage_error(state: ServerState, req: m.Upload | m.Compute | m.Delete, device: str,
                  doing: str, exc: OSError) -> m.ErrorReply:
    """A storage fault, as the reply to the one request it hit (the session goes on),
    one event for the operator, and a look at the storage now."""
    reason = exc.strerror or str(exc)
    log.error("storage_error", device=device, command=COMMAND_NAMES[type(req).__name__],
              file_id=req.file_id, error=reason, errno=exc.errno)
    state.health.storage_suspect()
    return m.ErrorReply(req.id, "storage_error", f"the server could not {doing}: {reason}")


async def finish_upload(state: ServerState, device: str, up: PendingUpload, req: m.Upload
                        ) -> m.UploadOk | m.ErrorReply:
    try:
        stored = await up.commit(state.clock())
    except DataError as exc:
        return m.ErrorReply(req.id, "bad_data", f"upload refused, nothing stored: {exc.message}")
    except OSError as exc:
        up.abort()
        return storage_error(state, req, device, "store the file", exc)
    except BackendUnavailable as exc:
        up.abort()
        return m.ErrorReply(req.id, "service_unavailable", f"upload refused: {exc.message}")
    return m.UploadOk(req.id, req.file_id, stored.samples, stored.size)


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
