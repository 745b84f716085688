"""asyncio adapter for the server's UDP rendezvous and relay (``rendezvous.Rendezvous``).

Glue only: a reader callback on the non-blocking socket drains a batch of datagrams
(``udpsocket.receive_batch``, with UDP GRO where the kernel has it), feeds each to the core
with ``loop.time()``, and sends what the core returns grouped by destination
(``udpsocket.QueuedSender``: runs of equal-size datagrams to one address go out as one GSO
``sendmsg``). A relay forwards every datagram of a transfer, so a plain
``DatagramProtocol`` (one Python callback and one ``sendto`` per datagram, about 40,000
datagrams/s) would cap it below the direct path; the batched socket is the UVF endpoint's
own, measured in bench/bench_nat.py. A timer removes idle allocations every few seconds.
"""

from __future__ import annotations

import asyncio
import errno
import socket

import structlog

from edgenet.config import ServerConfig
from edgenet.rudp import udpsocket
from edgenet.server.relaycaps import relay_limits
from edgenet.server.rendezvous import Rendezvous
from edgenet.server.state import ServerState

log = structlog.get_logger("edgenet.server")

#: Socket buffers asked for each way (the OS may cap them: net.core.rmem_max).
SOCKET_BUFFER = 8 * 2**20
#: How often idle allocations are swept, in seconds.
SWEEP_INTERVAL = 5.0


class RendezvousEndpoint:
    def __init__(self, sock: socket.socket, core: Rendezvous) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self.core = core
        self._gro = udpsocket.enable_gro(sock)
        self._out = udpsocket.QueuedSender(sock, gso=True)
        self._sweep: asyncio.TimerHandle | None = None
        self._closed = False
        self.datagrams_received = 0
        self._loop.add_reader(sock.fileno(), self._on_readable)
        self._schedule_sweep()

    @classmethod
    def open(cls, host: str, port: int, core: Rendezvous) -> RendezvousEndpoint:
        """Bind ``host:port`` (0: any free port); raises OSError."""
        if host in ("", "*"):
            host = "::" if socket.has_dualstack_ipv6() else "0.0.0.0"
        return cls(udpsocket.open_socket(host, port, SOCKET_BUFFER), core)

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    @property
    def send_errors(self) -> int:
        return self._out.batch.errors + self._out.dropped

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._sweep is not None:
            self._sweep.cancel()
        self._loop.remove_reader(self._sock.fileno())
        self._loop.remove_writer(self._sock.fileno())
        self._out.clear()
        self._sock.close()

    def _on_readable(self) -> None:
        now = self._loop.time()
        receive = self.core.receive_datagram
        out: dict[object, list[bytes]] = {}
        keys: dict[object, udpsocket.PeerKey] = {}

        def deliver(data: bytes, addr: udpsocket.SockAddr) -> None:
            key = keys.get(addr)
            if key is None:
                try:
                    key = keys[addr] = udpsocket.peer_key(addr)
                except ValueError:
                    self.core.counters.dropped["malformed"] += 1
                    return
            result = receive(data, addr, key, now)
            if result is not None:
                dest, datagram = result
                batch = out.get(dest)
                if batch is None:
                    out[dest] = [datagram]
                else:
                    batch.append(datagram)

        self.datagrams_received += udpsocket.receive_batch(self._sock, self._gro, deliver)
        for dest, datagrams in out.items():
            if self._out.send(dest, datagrams):  # type: ignore[arg-type]
                self._loop.add_writer(self._sock.fileno(), self._on_writable)

    def _on_writable(self) -> None:
        if self._out.flush():
            self._loop.remove_writer(self._sock.fileno())

    def _schedule_sweep(self) -> None:
        self._sweep = self._loop.call_later(SWEEP_INTERVAL, self._on_sweep)

    def _on_sweep(self) -> None:
        self.core.expire(self._loop.time())
        if not self._closed:
            self._schedule_sweep()


class RendezvousStartError(Exception):
    """The UDP rendezvous could not be opened (one line for the operator)."""


def start_rendezvous(config: ServerConfig, tcp_port: int, state: ServerState
                     ) -> RendezvousEndpoint:
    """The node's rendezvous and relay, bound and put in ``state``; raises
    RendezvousStartError."""
    explicit = config.udp_port is not None
    port = config.udp_port if config.udp_port is not None else tcp_port
    core = Rendezvous(relay_limits(config))
    try:
        endpoint = open_rendezvous(config.host, port, tcp_port, explicit, core)
    except OSError as exc:
        raise RendezvousStartError(f"cannot open UDP port {port} for the rendezvous: "
                                   f"{(exc.strerror or str(exc)).lower()}") from None
    core.port = endpoint.port
    state.rendezvous = core
    log.info("rendezvous_ready", udp_port=core.port)
    return endpoint


def open_rendezvous(host: str, port: int, tcp_port: int, explicit: bool, core: Rendezvous
                    ) -> RendezvousEndpoint:
    """The server's UDP endpoint on ``port``. When the port was not asked for (it is the
    TCP port's number by default) and is taken, an OS-chosen port is used instead (devices
    learn it over TCP) and a warning logged; an asked-for port that is taken raises."""
    try:
        return RendezvousEndpoint.open(host, port, core)
    except OSError as exc:
        if explicit or exc.errno != errno.EADDRINUSE:
            raise
        log.warning("udp_port_taken", port=port, tcp_port=tcp_port,
                    hint="the rendezvous uses a port the OS chose; give --udp-port to fix it")
        return RendezvousEndpoint.open(host, 0, core)
