"""What the kernel still holds of a connection's output.

A device reading a long reply through a slow link has no chance to answer a ping
queued behind that reply, yet it is plainly alive: the bytes it takes leave the
socket's send queue. ``unsent`` reads that queue's length (bytes written to the
socket and not yet acknowledged by the peer: Linux's ``SIOCOUTQ``, which is
``TIOCOUTQ`` for sockets), so that the connection can tell "still reading" from
"gone silent" without a byte from the device.
"""

from __future__ import annotations

import asyncio
import struct

try:
    import fcntl
    import termios

    _OUTQ: int | None = termios.TIOCOUTQ
except (ImportError, AttributeError):  # not Linux: the process's own buffer only
    _OUTQ = None

_INT = struct.Struct("i")
_ZERO = bytes(_INT.size)


def unsent(transport: asyncio.BaseTransport) -> int:
    """Bytes in the kernel's send queue of ``transport``'s socket (0 when unknown)."""
    if _OUTQ is None:
        return 0
    sock = transport.get_extra_info("socket")
    if sock is None:
        return 0
    try:
        return _INT.unpack(fcntl.ioctl(sock.fileno(), _OUTQ, _ZERO))[0]
    except (OSError, ValueError):  # closed meanwhile, or not a socket the ioctl knows
        return 0
