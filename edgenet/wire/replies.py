"""Replies of the device protocol (server -> device), typed as requests are.

An ``ok`` reply has one class per request it answers (``LoginOk``, ``UploadOk``, ...,
``Ack`` for ping and logout); a refusal is ``ErrorReply``. The server also answers
hello with ``HelloReply`` and sends ``Ping`` (the request's own class: the same shape)
and ``Notice`` unprompted. ``parse_reply`` validates a header into one, given the
request an ``ok`` answers; ``reply_to_fields`` encodes one. Sans-I/O, like the codec.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from edgenet.wire.requests import (
    MAX_FILE_ID,
    MAX_NAME,
    OPERATIONS,
    Candidate,
    Compute,
    Connect,
    Delete,
    Hello,
    ListDevices,
    Login,
    Logout,
    Lookup,
    MessageError,
    Ping,
    Pong,
    Request,
    UdpRegister,
    Upload,
    UploadOffset,
    candidate_list,
    int_field,
    sha256_field,
    str_field,
)

__all__ = [
    "MAX_REPLY_TEXT", "Ack", "ComputeOk", "ConnectOk", "DeleteOk", "DeviceEntry", "ErrorReply",
    "HelloReply", "ListDevicesOk", "LoginOk", "LookupOk", "Notice", "OkReply", "PeerNotice",
    "Reply", "UdpRegisterOk", "UploadOffsetOk", "UploadOk", "parse_reply", "reply_to_fields",
]

# --- server -> device -------------------------------------------------------
#
# An ``ok`` reply has one class per request it answers; its fields after ``id`` are
# listed, with their checks, in ``_OK_FIELDS``. Encoding follows the field order.


class _Encoded:
    """``to_fields``: the reply's header, fields in declaration order."""

    KIND: ClassVar[str] = "ok"

    def to_fields(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.KIND}
        for key in _field_names(type(self)):
            value = getattr(self, key)
            if value is not None or key == "id":  # optional extras are left out
                out[key] = value
        return out


def _field_names(cls: type[_Encoded]) -> tuple[str, ...]:
    """A reply class's field names (not its ClassVars), worked out once per class."""
    names: tuple[str, ...] | None = cls.__dict__.get("_field_names")
    if names is None:
        names = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
        setattr(cls, "_field_names", names)  # noqa: B010 (a per-class cache, set once)
    return names


@dataclass(frozen=True)
class HelloReply(_Encoded):
    """The server's answer to hello; ``heartbeat`` is its ping interval in seconds."""

    KIND: ClassVar[str] = "hello"
    version: int
    server: str = ""
    heartbeat: float | None = None


@dataclass(frozen=True)
class ErrorReply(_Encoded):
    """A refused request (``id``), or with ``id`` None a refused connection (framing,
    hello, ``server_busy``). Refused logins add ``attempts_left`` or ``seconds_left``."""

    KIND: ClassVar[str] = "error"
    id: int | None
    code: str
    message: str
    attempts_left: int | None = None
    seconds_left: int | None = None


@dataclass(frozen=True)
class Notice(_Encoded):
    """Sent unprompted just before the server closes the connection (``kind``:
    replaced, disconnected, shutdown, timeout, login_timeout, upload_timeout, revoked)."""

    KIND: ClassVar[str] = "notice"
    kind: str
    message: str


@dataclass(frozen=True)
class Ack(_Encoded):
    """``ok`` with no fields: the answer to ``ping`` and ``logout``."""

    id: int


@dataclass(frozen=True)
class LoginOk(_Encoded):
    id: int
    session: str
    name: str


@dataclass(frozen=True)
class UploadOk(_Encoded):
    """Stored and logged; ``bytes`` is the file's size on the server; ``resumed_from``
    (version 3, only when not 0): the offset the body carried on from."""

    id: int
    file_id: int
    samples: int
    bytes: int
    resumed_from: int | None = None


@dataclass(frozen=True)
class UploadOffsetOk(_Encoded):
    """Version 3: the server holds the first ``offset`` bytes of the file (SHA-256
    ``sha256``); 0 and the empty hash: start from the beginning."""

    id: int
    file_id: int
    offset: int
    sha256: str


@dataclass(frozen=True)
class ComputeOk(_Encoded):
    """``result`` is exact, as a decimal string."""

    id: int
    file_id: int
    op: str
    result: str


@dataclass(frozen=True)
class DeleteOk(_Encoded):
    id: int
    file_id: int
    samples: int


@dataclass(frozen=True)
class DeviceEntry:
    """One active device in an AED reply: ``since`` in seconds since the epoch,
    ``since_text`` in the device log's format."""

    name: str
    ip: str
    udp_port: int
    since: float
    since_text: str

    def to_fields(self) -> dict[str, Any]:
        return {"name": self.name, "ip": self.ip, "udp_port": self.udp_port,
                "since": self.since, "since_text": self.since_text}


@dataclass(frozen=True)
class ListDevicesOk(_Encoded):
    id: int
    devices: tuple[DeviceEntry, ...]

    def to_fields(self) -> dict[str, Any]:
        return {"type": "ok", "id": self.id, "devices": [d.to_fields() for d in self.devices]}


@dataclass(frozen=True)
class LookupOk(_Encoded):
    """Where the named device listens for UVF."""

    id: int
    name: str
    ip: str
    udp_port: int


@dataclass(frozen=True)
class UdpRegisterOk(_Encoded):
    """The token (32 hex digits) to register with at the server's UDP port ``udp_port``
    (at the address the device reached the server on)."""

    id: int
    token: str
    udp_port: int


def _with_candidates(reply: _Encoded) -> dict[str, Any]:
    out = _Encoded.to_fields(reply)
    out["candidates"] = [c.to_fields() for c in out["candidates"]]
    return out


@dataclass(frozen=True)
class ConnectOk(_Encoded):
    """Where ``name`` listens (as ``lookup`` says), and the rendezvous of this UVF: its
    ``token`` (16 hex digits), the receiver's ``candidates``, the server's UDP port for the
    relay (``relay_port``, 0: no relay) and whether the receiver probes (``probe``: it
    speaks version 2; if not, offer to ``ip``:``udp_port`` at once, as version 1 did)."""

    id: int
    name: str
    ip: str
    udp_port: int
    token: str
    candidates: tuple[Candidate, ...]
    relay_port: int
    probe: bool

    def to_fields(self) -> dict[str, Any]:
        return _with_candidates(self)


@dataclass(frozen=True)
class PeerNotice(_Encoded):
    """Sent unprompted to a device that is to receive a UVF from ``name``: the rendezvous
    ``token``, the sender's ``candidates`` and the relay's port (0: none)."""

    KIND: ClassVar[str] = "peer"
    name: str
    token: str
    candidates: tuple[Candidate, ...]
    relay_port: int

    def to_fields(self) -> dict[str, Any]:
        return _with_candidates(self)


OkReply = (Ack | LoginOk | UploadOk | ComputeOk | DeleteOk | ListDevicesOk | LookupOk
           | UdpRegisterOk | ConnectOk | UploadOffsetOk)
#: Everything the server sends; its heartbeat ``Ping`` has the request's shape.
Reply = HelloReply | ErrorReply | Notice | OkReply | Ping | PeerNotice

#: Longest string accepted in a reply field (messages, results, addresses).
MAX_REPLY_TEXT: Final = 64 * 1024
_Check = Callable[[dict[str, Any], str, int | None], Any]


def _ranged(lo: int, hi: int) -> _Check:
    return lambda fields, key, rid: int_field(fields, key, lo, hi, rid)


def _text(max_len: int = MAX_REPLY_TEXT) -> _Check:
    return lambda fields, key, rid: str_field(fields, key, max_len, rid)


def _number(fields: dict[str, Any], key: str, rid: int | None) -> float:
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise MessageError("bad_message", f"'{key}' must be a non-negative number", rid)
    return value


def _op(fields: dict[str, Any], key: str, rid: int | None) -> str:
    if fields.get(key) not in OPERATIONS:
        raise MessageError("bad_message", f"'{key}' must be one of {', '.join(OPERATIONS)}", rid)
    return str(fields[key])


def _entries(fields: dict[str, Any], key: str, rid: int | None) -> tuple[DeviceEntry, ...]:
    items = fields.get(key)
    if not isinstance(items, list) or not all(isinstance(d, dict) for d in items):
        raise MessageError("bad_message", f"'{key}' must be a list of objects", rid)
    return tuple(DeviceEntry(str_field(d, "name", MAX_NAME, rid), str_field(d, "ip", 256, rid),
                             int_field(d, "udp_port", 0, 65535, rid), _number(d, "since", rid),
                             str_field(d, "since_text", 256, rid)) for d in items)


def _hex(digits: int) -> _Check:
    def check(fields: dict[str, Any], key: str, rid: int | None) -> str:
        value = str_field(fields, key, digits, rid)
        if len(value) != digits or any(c not in "0123456789abcdef" for c in value):
            raise MessageError("bad_message", f"'{key}' must be {digits} hex digits", rid)
        return value
    return check


def _candidates(fields: dict[str, Any], key: str, rid: int | None) -> tuple[Candidate, ...]:
    return candidate_list(fields, key, rid)


def _flag(fields: dict[str, Any], key: str, rid: int | None) -> bool:
    value = fields.get(key)
    if not isinstance(value, bool):
        raise MessageError("bad_message", f"'{key}' must be true or false", rid)
    return value


_FILE_ID, _COUNT, _PORT = _ranged(0, MAX_FILE_ID), _ranged(0, 2**63), _ranged(0, 65535)
#: The rendezvous token of one UVF (64 bits) and a registration token (128 bits), in hex.
_PEER_TOKEN, _UDP_TOKEN = _hex(16), _hex(32)
#: The ok reply of each request, and its fields after ``id`` with their checks.
_OK_FIELDS: Final[dict[type[Request], tuple[type[OkReply], tuple[tuple[str, _Check], ...]]]] = {
    Login: (LoginOk, (("session", _text(256)), ("name", _text(MAX_NAME)))),
    Upload: (UploadOk, (("file_id", _FILE_ID), ("samples", _COUNT), ("bytes", _COUNT))),
    UploadOffset: (UploadOffsetOk, (("file_id", _FILE_ID), ("offset", _COUNT),
                                    ("sha256", sha256_field))),
    Compute: (ComputeOk, (("file_id", _FILE_ID), ("op", _op), ("result", _text()))),
    Delete: (DeleteOk, (("file_id", _FILE_ID), ("samples", _COUNT))),
    ListDevices: (ListDevicesOk, (("devices", _entries),)),
    Lookup: (LookupOk, (("name", _text(MAX_NAME)), ("ip", _text(256)), ("udp_port", _PORT))),
    Ping: (Ack, ()),
    Logout: (Ack, ()),
    UdpRegister: (UdpRegisterOk, (("token", _UDP_TOKEN), ("udp_port", _PORT))),
    Connect: (ConnectOk, (("name", _text(MAX_NAME)), ("ip", _text(256)), ("udp_port", _PORT),
                          ("token", _PEER_TOKEN), ("candidates", _candidates),
                          ("relay_port", _PORT), ("probe", _flag))),
}


def _optional(fields: dict[str, Any], key: str, check: _Check, rid: int | None,
              default: Any = None) -> Any:
    return check(fields, key, rid) if key in fields else default


def parse_reply(fields: dict[str, Any], request: Request | None = None) -> Reply:
    """Validate a server's header into a typed reply, or raise MessageError.

    An ``ok`` reply's shape depends on the ``request`` it answers (whose ``id`` it
    must carry); ``hello``, ``error``, ``ping`` and ``notice`` need none. Fields a
    newer server adds are ignored."""
    kind = fields.get("type")
    if kind == "ok":
        rid = int_field(fields, "id", 0, 2**53, None)
        if request is None or isinstance(request, (Hello, Pong)) or request.id != rid:
            raise MessageError("bad_message", f"ok reply {rid} answers no request sent", rid)
        cls, spec = _OK_FIELDS[type(request)]
        ok = cls(rid, *(check(fields, key, rid) for key, check in spec))
        if isinstance(ok, UploadOk) and "resumed_from" in fields:
            ok = dataclasses.replace(ok, resumed_from=_COUNT(fields, "resumed_from", rid))
        return ok
    if kind == "error":
        eid = None if fields.get("id") is None else int_field(fields, "id", 0, 2**53, None)
        count = _ranged(0, 2**53)
        return ErrorReply(eid, _optional(fields, "code", _text(64), eid, ""),
                          _optional(fields, "message", _text(), eid, ""),
                          _optional(fields, "attempts_left", count, eid),
                          _optional(fields, "seconds_left", count, eid))
    if kind == "ping":
        return Ping(int_field(fields, "id", 0, 2**53, None))
    if kind == "notice":
        return Notice(_optional(fields, "kind", _text(64), None, ""),
                      _optional(fields, "message", _text(), None, ""))
    if kind == "peer":
        return PeerNotice(str_field(fields, "name", MAX_NAME, None),
                          _PEER_TOKEN(fields, "token", None),
                          _candidates(fields, "candidates", None), _PORT(fields, "relay_port", None))
    if kind == "hello":
        return HelloReply(int_field(fields, "version", 0, 2**31, None),
                          _optional(fields, "server", _text(256), None, ""),
                          _optional(fields, "heartbeat", _number, None) or None)
    raise MessageError("unknown_type", f"unknown reply type {str(kind)[:40]!r}")


def reply_to_fields(reply: Reply) -> dict[str, Any]:
    """The header of a reply."""
    if isinstance(reply, Ping):
        return {"type": "ping", "id": reply.id}
    return reply.to_fields()
