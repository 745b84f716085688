"""The device port behind a load balancer that speaks the PROXY protocol (asyncio).

``ProxiedListener`` accepts connections itself (``loop.sock_accept``) so that it
can read the PROXY header from the raw socket byte-exactly, before asyncio's
transport or TLS sees anything: the header is read through ``proxyproto``, then
the socket gets the device connection's protocol (``acceptor.attach``), with TLS
starting after the header when the server serves TLS. A connection from an address that
is not a trusted proxy is closed at once (``untrusted_proxy``); a header that is
malformed or does not arrive within ``HEADER_TIMEOUT`` closes it too
(``proxy_header_invalid``). The device's address from the header is what the
rest of the server sees (logs, AED, UVF lookups, the login limiter, the admin API).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Sequence

import structlog

from edgenet.server.acceptor import Acceptor, ProtocolFactory, attach, bind_listeners
from edgenet.server.descriptors import ExhaustionLog
from edgenet.server.proxyproto import ProxyHeader, ProxyHeaderError, ProxyHeaderParser

log = structlog.get_logger("edgenet.server")

#: Seconds a trusted proxy has to send the whole header after connecting.
HEADER_TIMEOUT = 10.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """``127.0.0.1/32,10.0.0.0/8`` (a bare address is one host). Raises ValueError."""
    nets = []
    for part in text.split(","):
        part = part.strip()
        if part:
            nets.append(ipaddress.ip_network(part, strict=False))
    if not nets:
        raise ValueError("no address or network given")
    return tuple(nets)


def is_trusted(ip: str, networks: Sequence[Network]) -> bool:
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


async def read_header(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> ProxyHeader:
    """Read exactly one PROXY header from ``sock`` (non-blocking). Raises
    ProxyHeaderError, ConnectionError."""
    parser = ProxyHeaderParser()
    while True:
        event = parser.next_event()
        if isinstance(event, ProxyHeader):
            return event
        data = await loop.sock_recv(sock, parser.bytes_wanted())
        if not data:
            raise ConnectionError("the proxy closed before the header was complete")
        parser.receive_data(data)


class ProxiedListener:
    """Listening sockets whose connections start with a PROXY header."""

    def __init__(self, factory: ProtocolFactory, trusted: Sequence[Network],
                 ssl_context: ssl.SSLContext | None, handshake_timeout: float | None,
                 busy: bytes = b"", exhaustion: ExhaustionLog | None = None) -> None:
        self._factory = factory
        self._busy = busy
        self._exhaustion = exhaustion if exhaustion is not None else ExhaustionLog()
        self._acceptor: Acceptor | None = None
        self.trusted = tuple(trusted)
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self.sockets: list[socket.socket] = []
        #: Connections still reading their header (cancelled by ``close``).
        self._pending: set[asyncio.Task[None]] = set()
        #: Connections closed for coming from elsewhere than a trusted proxy.
        self.untrusted = 0

    async def start(self, host: str | None, port: int, backlog: int = 4096) -> None:
        self.sockets = await bind_listeners(host, port, backlog)
        self._acceptor = Acceptor(self.sockets, self._spawn, self._busy, self._exhaustion,
                                  "device_accept")
        self._acceptor.start()

    def close(self) -> None:
        if self._acceptor is not None:
            self._acceptor.close()
        for task in list(self._pending):
            task.cancel()

    def _spawn(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        task = asyncio.get_running_loop().create_task(self._connection(sock, peer))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _connection(self, sock: socket.socket, peer: tuple[str, int]) -> None:
        loop = asyncio.get_running_loop()
        sock.setblocking(False)
        if not is_trusted(peer[0], self.trusted):
            self.untrusted += 1
            log.warning("untrusted_proxy", peer=f"{peer[0]}:{peer[1]}")
            sock.close()
            return
        try:
            header = await asyncio.wait_for(read_header(loop, sock), HEADER_TIMEOUT)
        except (ProxyHeaderError, ConnectionError, OSError, asyncio.TimeoutError) as exc:
            reason = str(exc) or f"no header within {HEADER_TIMEOUT:g} s"
            log.warning("proxy_header_invalid", peer=f"{peer[0]}:{peer[1]}", error=reason)
            sock.close()
            return
        device = header.source if header.source is not None else peer
        await attach(sock, lambda: self._factory(device), self._ssl, self._handshake_timeout,
                     f"{device[0]}:{device[1]}")
