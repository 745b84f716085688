"""The device protocol's typed messages, both ways, in one namespace.

Requests (``edgenet.wire.requests``: ``Hello``, ``Login``, ``Upload``, ...,
``parse_request``, ``request_to_fields``) and replies (``edgenet.wire.replies``:
``HelloReply``, ``ErrorReply``, ``Notice``, one ``...Ok`` class per request,
``parse_reply``, ``reply_to_fields``). Code that speaks the protocol imports this
module (``from edgenet.wire import messages as m``); the two halves are apart only
to keep each module to one concern. See docs/PROTOCOL.md for every field.
"""

from __future__ import annotations

# Every public name of both halves (each module's __all__), under one roof.
from edgenet.wire.replies import *
from edgenet.wire.requests import *
