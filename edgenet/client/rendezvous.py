"""The device's side of UVF across NATs, between its server link and its UDP endpoint.

* ``join_rendezvous`` (after login, when the server speaks version 2): asks for the UDP
  registration token (``udp_register``, reporting the device's own address of its UVF
  socket), starts the registration on the UVF socket, and takes the server's ``peer``
  frames (a UVF is coming: probe the sender, accept the relay's datagrams).
* ``lookup_route`` asks the server where a device is (``connect`` from version 2 on,
  ``lookup`` before) and gives a ``Plan``; ``find_route`` runs the probes for it and says
  where the file goes: the first direct path that answered, the relay, or (a version-1
  receiver or server) the reported address at once, as before.

The path logic is ``edgenet.rudp.paths`` (sans-I/O), driven by the endpoint's
``PathAgent``; this module only carries values between them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from edgenet.rudp.paths import RelayRoute
from edgenet.wire import messages as m

if TYPE_CHECKING:
    from edgenet.client.connection import ServerLink
    from edgenet.rudp.endpoint import TransferEndpoint

log = structlog.get_logger("edgenet.client")

DIRECT = "direct"
RELAYED = "relayed"


class UdpSide(Protocol):
    """What registration needs of the device's UDP side (``peer.PeerLink``)."""

    @property
    def bound_port(self) -> int: ...

    def register(self, host: str, port: int, token: bytes) -> bool: ...

    def expect_peer(self, notice: m.PeerNotice) -> None: ...


@dataclass(frozen=True)
class Plan:
    """What the server said about a UVF's receiver: its reported address and, from
    version 2 on, the rendezvous (token, candidates, relay, whether it probes)."""

    ip: str
    port: int
    token: int = 0
    candidates: tuple[tuple[str, int, str], ...] = ()
    relay: bool = False
    probe: bool = False

    @classmethod
    def from_fields(cls, where: dict[str, Any]) -> Plan | None:
        """From the reply's fields (None when they are unusable)."""
        ip, port = where.get("ip"), where.get("udp_port")
        if not isinstance(ip, str) or not isinstance(port, int) or not 0 < port < 65536:
            return None
        if not where.get("probe"):
            return cls(ip, port)
        cands = tuple((str(c["ip"]), int(c["port"]), str(c["kind"]))
                      for c in where.get("candidates", ()))
        return cls(ip, port, int(str(where["token"]), 16), cands,
                   bool(where.get("relay_port")), True)


async def lookup_fields(server: ServerLink, name: str) -> m.ConnectOk | m.LookupOk | m.ErrorReply:
    """The server's answer to where ``name`` listens, by the newest exchange it speaks."""
    if server.version >= m.RENDEZVOUS_VERSION:
        return await server.connect(name)
    return await server.lookup(name)


async def join_rendezvous(server: ServerLink, peers: UdpSide) -> bool:
    """Register this device's UVF socket with the server's rendezvous (version 2); True
    when the registration started."""
    if server.version < m.RENDEZVOUS_VERSION:
        return False
    server.on_peer = peers.expect_peer
    local: tuple[m.Candidate, ...] = ()
    try:
        ipaddress.ip_address(server.local_ip)
        local = (m.Candidate(server.local_ip, peers.bound_port, "local"),)
    except ValueError:
        pass
    reply = await server.udp_register(local)
    if isinstance(reply, m.ErrorReply):
        log.info("uvf.rendezvous_unavailable", code=reply.code)
        return False
    return peers.register(server.server_ip, reply.udp_port, bytes.fromhex(reply.token))


async def find_route(endpoint: TransferEndpoint, plan: Plan
                     ) -> tuple[tuple[str, int] | RelayRoute, str]:
    """Where the file goes, and the path's name (``direct`` or ``relayed``)."""
    if not plan.probe:
        return (plan.ip, plan.port), DIRECT
    route = await endpoint.paths.find_route(plan.token, plan.candidates, plan.relay)
    if isinstance(route, RelayRoute):
        return route, RELAYED
    if route is None:  # nothing answered and no relay: offer as a version-1 device did
        return (plan.ip, plan.port), DIRECT
    return route.key, DIRECT
