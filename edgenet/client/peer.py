"""The device's UDP side: the port bound at start-up, and the seam for UVF.

``PeerLink`` owns the UDP socket from start-up on, so the port sent in the login
request is really ours and a taken port is reported before anything else
happens. File transfers between devices (UVF) are not wired in yet: the
reliable-UDP engine (``edgenet.rudp.endpoint.TransferEndpoint``) plugs in here,
in ``start`` (wrap ``self.sock`` in a datagram endpoint that also receives
files into ``data_dir`` and reports them through ``announce``) and ``send``
(``lookup`` the target's address through the server, then transfer). Nothing
outside this module needs to change when it lands.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

#: Asks the server where a device listens: returns the ``lookup`` reply fields
#: (``name``, ``ip``, ``udp_port``) or raises LookupFailed.
LookupFn = Callable[[str], Awaitable[dict[str, Any]]]
#: Prints one line to the user (for example "received file X from Y").
AnnounceFn = Callable[[str], None]

UVF_UNAVAILABLE = "UVF is not available yet"


class PeerBindError(Exception):
    """The UDP port could not be bound; ``message`` is one line for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class LookupFailed(Exception):
    """The server would not say where a device is (``not_active``, ``self_target``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bind_udp(family: int, port: int) -> socket.socket:
    """A UDP socket bound to ``port`` (0: the OS chooses) on every address of ``family``.

    An IPv6 socket is made dual-stack where the OS allows it, so IPv4 peers reach it too.
    """
    host = "::" if family == socket.AF_INET6 else "0.0.0.0"
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except (OSError, AttributeError):
                pass
        sock.bind((host, port))
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PeerBindError(f"UDP port {port} is already in use") from None
        reason = (exc.strerror or str(exc)).lower()
        raise PeerBindError(f"cannot bind UDP port {port}: {reason}") from None
    return sock


class PeerLink:
    """The bound UDP socket and, later, the UVF transfer endpoint built on it."""

    def __init__(self, sock: socket.socket, data_dir: Path) -> None:
        self.sock = sock
        self.data_dir = data_dir
        self.device: str | None = None
        self._lookup: LookupFn | None = None
        self._announce: AnnounceFn | None = None

    @classmethod
    def bind(cls, family: int, port: int, data_dir: Path) -> PeerLink:
        """Raises PeerBindError with a one-line message."""
        return cls(bind_udp(family, port), data_dir)

    @property
    def port(self) -> int:
        """The port actually bound (the one the login request announces)."""
        return int(self.sock.getsockname()[1])

    async def start(self, device: str, lookup: LookupFn, announce: AnnounceFn) -> None:
        """Called once after login. The UVF engine starts receiving here."""
        self.device = device
        self._lookup = lookup
        self._announce = announce

    async def send(self, target_name: str, filename: str) -> str:
        """Send ``filename`` (in ``data_dir``) to the device ``target_name``.
        Returns the line to print; never raises for user or network errors."""
        return UVF_UNAVAILABLE

    def close(self) -> None:
        self.sock.close()


async def send_file(link: PeerLink, target_name: str, filename: str) -> str:
    """The shell's UVF hook: one line to print."""
    return await link.send(target_name, filename)
