"""UVF's exchanges from protocol version 2 on: the UDP registration token and ``connect``.

``udp_register`` gives a logged-in device the token it registers with at the server's UDP
rendezvous (``state.rendezvous``), and records the local addresses it reports. ``connect``
answers what ``lookup`` answers plus a rendezvous for the pair: a token, the receiver's
candidate addresses (the reported one, its local ones, its reflexive one), the relay's
port when the relay carries this pair, and tells the receiving device the same about the
sender (a ``peer`` frame, to devices of version 2 only; a version-1 receiver is offered
to at once, as before). Handlers take the state and return typed replies, as
``commands`` does.
"""

from __future__ import annotations

import secrets

from edgenet.server.interfaces import ActiveDevice
from edgenet.server.state import ServerState
from edgenet.wire import messages as m

UDP_OFF = "the server's UDP rendezvous is off (it runs with --udp-port 0)"


def udp_register(state: ServerState, device: str, session_id: str, ip: str,
                 req: m.UdpRegister, now: float) -> m.UdpRegisterOk | m.ErrorReply:
    rendezvous = state.rendezvous
    if rendezvous is None:
        return m.ErrorReply(req.id, "udp_off", UDP_OFF)
    local = tuple((c.ip, c.port) for c in req.local)
    token = rendezvous.issue(device, session_id, ip, now, local)
    return m.UdpRegisterOk(req.id, token.hex(), rendezvous.port)


def candidates(state: ServerState, dev: ActiveDevice) -> tuple[m.Candidate, ...]:
    """Where ``dev`` may be reached over UDP, each address once, the reported one first."""
    found = [m.Candidate(dev.ip, dev.udp_port, "reported")] if dev.udp_port else []
    if state.rendezvous is not None:
        local, reflexive = state.rendezvous.addresses(dev.name)
        found += [m.Candidate(ip, port, "local") for ip, port in local]
        if reflexive is not None:
            found.append(m.Candidate(reflexive[0], reflexive[1], "reflexive"))
    unique: dict[tuple[str, int], m.Candidate] = {}
    for cand in found:
        unique.setdefault((cand.ip, cand.port), cand)
    return tuple(unique.values())[: m.MAX_CANDIDATES]


async def connect(state: ServerState, device: str, req: m.Connect, now: float
                  ) -> m.ConnectOk | m.ErrorReply:
    if req.name == device:
        return m.ErrorReply(req.id, "self_target", "you cannot send a file to yourself")
    target = await state.presence.get(req.name)
    if target is None:
        return m.ErrorReply(req.id, "not_active", f"device {req.name} is not active")
    me = await state.presence.get(device)
    receiver = state.sessions.get(target.session_id)
    # Only a receiver of version 2 on this node probes and unwraps the relay's datagrams.
    probe = me is not None and receiver is not None and (
        receiver.version >= m.RENDEZVOUS_VERSION)
    rendezvous = state.rendezvous
    token = None
    if probe and rendezvous is not None:
        token = rendezvous.allocate(device, req.name, now)
    relay_port = rendezvous.port if token is not None and rendezvous is not None else 0
    if token is None:
        token = secrets.randbits(64) or 1  # probes still need one
    hex_token = f"{token:016x}"
    if probe and me is not None and receiver is not None:
        receiver.tell(m.PeerNotice(device, hex_token, candidates(state, me), relay_port))
    return m.ConnectOk(req.id, target.name, target.ip, target.udp_port, hex_token,
                       candidates(state, target), relay_port, probe)
