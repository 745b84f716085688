"""The device protocol's typed messages, both ways, in one namespace.

Requests (``edgenet.wire.requests``: ``Hello``, ``Login``, ``Upload``, ...,
``parse_request``, ``request_to_fields``) and replies (``edgenet.wire.replies``:
``HelloReply``, ``ErrorReply``, ``Notice``, one ``...Ok`` class per request,
``parse_reply``, ``reply_to_fields``). Code that speaks the protocol imports this
module (``from edgenet.wire import messages as m``); the two halves are apart only
to keep each module to one concern. See docs/PROTOCOL.md for every field.
"""

from __future__ import annotations

from edgenet.wire.replies import (
    MAX_REPLY_TEXT,
    Ack,
    ComputeOk,
    DeleteOk,
    DeviceEntry,
    ErrorReply,
    HelloReply,
    ListDevicesOk,
    LoginOk,
    LookupOk,
    Notice,
    OkReply,
    Reply,
    UploadOk,
    error,
    hello_ok,
    notice,
    ok,
    parse_reply,
    reply_to_fields,
)
from edgenet.wire.requests import (
    MAX_FILE_ID,
    MAX_NAME,
    MAX_PASSWORD,
    OPERATIONS,
    PROTOCOL_VERSION,
    Compute,
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
    Upload,
    int_field,
    parse_request,
    request_to_fields,
    str_field,
)

__all__ = [
    "MAX_FILE_ID", "MAX_NAME", "MAX_PASSWORD", "MAX_REPLY_TEXT", "OPERATIONS",
    "PROTOCOL_VERSION", "Ack", "Compute", "ComputeOk", "Delete", "DeleteOk", "DeviceEntry",
    "ErrorReply", "Hello", "HelloReply", "ListDevices", "ListDevicesOk", "Login", "LoginOk",
    "Logout", "Lookup", "LookupOk", "MessageError", "Notice", "OkReply", "Ping", "Pong",
    "Reply", "Request", "Upload", "UploadOk", "error", "hello_ok", "int_field", "notice", "ok",
    "parse_reply", "parse_request", "reply_to_fields", "request_to_fields", "str_field",
]
