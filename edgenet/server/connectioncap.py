"""The device port's connection cap: whether one more connection is served, and the
frame that turns it away (sans-I/O: counts and ``now`` in, bytes out).

The cap is judged as soon as a connection is accepted, before it becomes a
stream (or starts TLS): a refused connection is told why and closed in the same
step, so a burst of connections over the cap never holds more descriptors than
the cap allows (each refused one is open for a moment only).
"""

from __future__ import annotations

import structlog

from edgenet.server.connection import SHUTDOWN_MESSAGE
from edgenet.server.descriptors import RateLimitedCount
from edgenet.wire import messages as m
from edgenet.wire.frames import encode_frame

log = structlog.get_logger("edgenet.server")

class ConnectionCap:
    """At most ``limit`` device connections; refusals logged at most once a second."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._refusals = RateLimitedCount()

    def refusal(self, open_now: int, closing: bool, peer: str, now: float) -> bytes | None:
        """None: serve the connection; else the frame to send it before closing it."""
        reply: m.Reply
        if closing:
            reply = m.Notice("shutdown", SHUTDOWN_MESSAGE)
        elif open_now < self.limit:
            return None
        else:
            more = self._refusals.hit(now)
            if more is not None:  # a flood must not flood the log
                log.warning("connection_refused", reason="max_connections", limit=self.limit,
                            peer=peer, more=more)
            reply = m.ErrorReply(None, "server_busy", f"the server is at its limit of "
                                 f"{self.limit} connections; try again later")
        return encode_frame(m.reply_to_fields(reply))
