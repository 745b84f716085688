"""Requests of the device protocol (device -> server), validated on construction
from a header by ``parse_request`` and encoded by ``request_to_fields``.

Every request but ``hello`` carries an integer ``id`` that its reply echoes. The
field checks (``int_field``, ``str_field``) and the protocol's limits live here too;
``edgenet.wire.replies`` uses them for the other direction.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "MAX_CANDIDATES", "MAX_FILE_ID", "MAX_NAME", "MAX_PASSWORD", "OPERATIONS", "PROTOCOL_VERSION",
    "PROTOCOL_VERSIONS", "RENDEZVOUS_VERSION", "RESUME_VERSION", "Candidate", "Compute", "Connect", "Delete",
    "Hello", "ListDevices", "Login", "Logout", "Lookup", "MessageError", "Ping", "Pong",
    "Request", "UdpRegister", "Upload", "UploadOffset", "candidate_list", "int_field", "parse_request",
    "request_to_fields", "sha256_field", "str_field",
]

#: The version a hello asks for when it lists no ``versions`` (what version 1 spoke).
PROTOCOL_VERSION: Final = 1
#: Every version this code speaks; a device lists them in ``hello.versions``.
PROTOCOL_VERSIONS: Final = (1, 2, 3)
#: The first version with the UDP rendezvous: ``udp_register``, ``connect``, ``peer``.
RENDEZVOUS_VERSION: Final = 2
#: The first version with resumable, checked uploads: ``upload_offset``, ``upload``'s
#: ``offset`` and ``sha256``.
RESUME_VERSION: Final = 3
#: Candidate addresses in one message at most, and the kinds they come in.
MAX_CANDIDATES: Final = 8
CANDIDATE_KINDS: Final = ("reported", "local", "reflexive")
#: Longest device name, password and similar strings accepted on the wire.
MAX_NAME: Final = 64
MAX_PASSWORD: Final = 256
MAX_FILE_ID: Final = 2**63 - 1
#: Largest byte count or offset on the wire.
MAX_SIZE: Final = 2**63 - 1
OPERATIONS: Final = ("SUM", "AVERAGE", "MAX", "MIN")


class MessageError(Exception):
    """A well-framed header that is not a valid message."""

    def __init__(self, code: str, message: str, request_id: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id


@dataclass(frozen=True)
class Hello:
    """``version`` is what a version-1 server reads; ``versions`` (from version 2 on)
    lists every version the device speaks, and the server answers with the highest it
    speaks too."""

    version: int
    agent: str = ""
    versions: tuple[int, ...] = ()


@dataclass(frozen=True)
class Candidate:
    """An address where a device may be reached over UDP: ``reported`` (its TCP address
    with the UDP port it announced), ``local`` (its own interface address) or
    ``reflexive`` (what its NAT showed the server's rendezvous)."""

    ip: str
    port: int
    kind: str

    def to_fields(self) -> dict[str, Any]:
        return {"ip": self.ip, "port": self.port, "kind": self.kind}


@dataclass(frozen=True)
class Login:
    id: int
    name: str
    password: str = field(repr=False)
    udp_port: int


@dataclass(frozen=True)
class Upload:
    """``size`` is the body's length. From version 3, with ``sha256`` (of the whole file,
    64 hex digits): the body is the file from byte ``offset`` on, checked at the end."""

    id: int
    file_id: int
    size: int
    offset: int = 0
    sha256: str | None = None


@dataclass(frozen=True)
class UploadOffset:
    """Version 3: where an upload of ``file_id`` (now ``size`` bytes) may resume."""

    id: int
    file_id: int
    size: int


@dataclass(frozen=True)
class Compute:
    id: int
    file_id: int
    op: str


@dataclass(frozen=True)
class Delete:
    id: int
    file_id: int


@dataclass(frozen=True)
class ListDevices:
    id: int


@dataclass(frozen=True)
class Lookup:
    id: int
    name: str


@dataclass(frozen=True)
class UdpRegister:
    """Asks for the token of the UDP registration (after login); ``local`` are the
    device's own addresses of its UVF socket."""

    id: int
    local: tuple[Candidate, ...] = ()


@dataclass(frozen=True)
class Connect:
    """UVF's question from version 2 on: where the device ``name`` can be reached, with a
    rendezvous for both devices (the server tells the other one too)."""

    id: int
    name: str


@dataclass(frozen=True)
class Ping:
    id: int


@dataclass(frozen=True)
class Pong:
    id: int


@dataclass(frozen=True)
class Logout:
    id: int


Request = (Hello | Login | Upload | Compute | Delete | ListDevices | Lookup | Ping | Pong
           | Logout | UdpRegister | Connect | UploadOffset)


def int_field(fields: dict[str, Any], key: str, lo: int, hi: int, rid: int | None) -> int:
    """``fields[key]``, an integer from ``lo`` to ``hi``, or MessageError (for request ``rid``)."""
    value = fields.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        raise MessageError("bad_message", f"'{key}' must be an integer", rid)
    if not lo <= value <= hi:
        raise MessageError("bad_message", f"'{key}' must be between {lo} and {hi}", rid)
    return value


def str_field(fields: dict[str, Any], key: str, max_len: int, rid: int | None) -> str:
    """``fields[key]``, a string of at most ``max_len`` characters, or MessageError."""
    value = fields.get(key)
    if not isinstance(value, str):
        raise MessageError("bad_message", f"'{key}' must be a string", rid)
    if len(value) > max_len:
        raise MessageError("bad_message", f"'{key}' is longer than {max_len} characters", rid)
    return value


def candidate_list(fields: dict[str, Any], key: str, rid: int | None,
                   kinds: tuple[str, ...] = CANDIDATE_KINDS) -> tuple[Candidate, ...]:
    """``fields[key]``: at most MAX_CANDIDATES ``{ip, port, kind}`` objects, each ``ip`` an
    IP address literal, or MessageError."""
    items = fields.get(key)
    if not isinstance(items, list) or len(items) > MAX_CANDIDATES or not all(
            isinstance(c, dict) for c in items):
        raise MessageError("bad_message", f"'{key}' must be a list of at most "
                                          f"{MAX_CANDIDATES} objects", rid)
    out = []
    for item in items:
        ip = str_field(item, "ip", 64, rid)
        try:
            ipaddress.ip_address(ip)
        except ValueError:
            raise MessageError("bad_message", f"'{key}' holds {ip[:64]!r}, not an IP address",
                               rid) from None
        kind = item.get("kind", kinds[0])
        if kind not in kinds:
            raise MessageError("bad_message", f"'kind' must be one of {', '.join(kinds)}", rid)
        out.append(Candidate(ip, int_field(item, "port", 1, 65535, rid), str(kind)))
    return tuple(out)


def sha256_field(fields: dict[str, Any], key: str, rid: int | None) -> str:
    """``fields[key]``: a SHA-256 as 64 lower-case hex digits, or MessageError."""
    value = fields.get(key)
    if not isinstance(value, str) or len(value) != 64 or any(
            c not in "0123456789abcdef" for c in value):
        raise MessageError("bad_message", f"'{key}' must be 64 lower-case hex digits", rid)
    return value


def _versions(fields: dict[str, Any]) -> tuple[int, ...]:
    if "versions" not in fields:  # a version-1 device's hello (and the load generator's)
        return ()
    items = fields["versions"]
    if not isinstance(items, list) or len(items) > 16 or not all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**31 for v in items):
        raise MessageError("bad_message", "'versions' must be a list of at most 16 integers")
    return tuple(items)


def parse_request(fields: dict[str, Any], body: int = 0) -> Request:
    """Validate a device's header into a typed request, or raise MessageError."""
    kind = fields.get("type")
    if not isinstance(kind, str):
        raise MessageError("bad_message", "'type' must be a string")
    if kind == "hello":
        if body:
            raise MessageError("bad_message", "hello carries no body")
        return Hello(int_field(fields, "version", 0, 2**31, None), str_field(fields, "agent", 200, None)
                     if "agent" in fields else "", _versions(fields))
    rid = int_field(fields, "id", 0, 2**53, None)
    if body and kind != "upload":
        raise MessageError("bad_message", f"'{kind}' carries no body", rid)
    if kind == "login":
        return Login(
            rid,
            str_field(fields, "name", MAX_NAME, rid),
            str_field(fields, "password", MAX_PASSWORD, rid),
            int_field(fields, "udp_port", 0, 65535, rid),
        )
    if kind == "upload":
        file_id = int_field(fields, "file_id", 0, MAX_FILE_ID, rid)
        if "sha256" not in fields:
            if fields.get("offset", 0) != 0:
                raise MessageError("bad_message", "'offset' needs 'sha256'", rid)
            return Upload(rid, file_id, body)
        return Upload(rid, file_id, body, int_field(fields, "offset", 0, MAX_SIZE, rid)
                      if "offset" in fields else 0, sha256_field(fields, "sha256", rid))
    if kind == "upload_offset":
        return UploadOffset(rid, int_field(fields, "file_id", 0, MAX_FILE_ID, rid),
                            int_field(fields, "size", 0, MAX_SIZE, rid))
    if kind == "compute":
        op = str_field(fields, "op", 16, rid)
        if op not in OPERATIONS:
            raise MessageError("bad_operation", f"operation must be one of {', '.join(OPERATIONS)}", rid)
        return Compute(rid, int_field(fields, "file_id", 0, MAX_FILE_ID, rid), op)
    if kind == "delete":
        return Delete(rid, int_field(fields, "file_id", 0, MAX_FILE_ID, rid))
    if kind == "list_devices":
        return ListDevices(rid)
    if kind == "lookup":
        return Lookup(rid, str_field(fields, "name", MAX_NAME, rid))
    if kind == "udp_register":
        local = candidate_list(fields, "local", rid, ("local",)) if "local" in fields else ()
        return UdpRegister(rid, local)
    if kind == "connect":
        return Connect(rid, str_field(fields, "name", MAX_NAME, rid))
    if kind == "ping":
        return Ping(rid)
    if kind == "pong":
        return Pong(rid)
    if kind == "logout":
        return Logout(rid)
    raise MessageError("unknown_type", f"unknown message type {kind[:40]!r}", rid)


def request_to_fields(req: Request) -> dict[str, Any]:
    """The header of a request (the upload's body is sent separately)."""
    if isinstance(req, Hello):
        hello: dict[str, Any] = {"type": "hello", "version": req.version, "agent": req.agent}
        if req.versions:
            hello["versions"] = list(req.versions)
        return hello
    if isinstance(req, Login):
        return {"type": "login", "id": req.id, "name": req.name, "password": req.password,
                "udp_port": req.udp_port}
    if isinstance(req, Upload):
        up: dict[str, Any] = {"type": "upload", "id": req.id, "file_id": req.file_id}
        if req.sha256 is not None:
            up.update(offset=req.offset, sha256=req.sha256)
        return up
    if isinstance(req, UploadOffset):
        return {"type": "upload_offset", "id": req.id, "file_id": req.file_id,
                "size": req.size}
    if isinstance(req, Compute):
        return {"type": "compute", "id": req.id, "file_id": req.file_id, "op": req.op}
    if isinstance(req, Delete):
        return {"type": "delete", "id": req.id, "file_id": req.file_id}
    if isinstance(req, ListDevices):
        return {"type": "list_devices", "id": req.id}
    if isinstance(req, Lookup):
        return {"type": "lookup", "id": req.id, "name": req.name}
    if isinstance(req, UdpRegister):
        return {"type": "udp_register", "id": req.id,
                "local": [c.to_fields() for c in req.local]}
    if isinstance(req, Connect):
        return {"type": "connect", "id": req.id, "name": req.name}
    if isinstance(req, Ping):
        return {"type": "ping", "id": req.id}
    if isinstance(req, Pong):
        return {"type": "pong", "id": req.id}
    return {"type": "logout", "id": req.id}
