"""Which path a UVF takes between two devices, as a sans-I/O state machine (ICE's steps).

For each UVF the server hands both devices a rendezvous: the other device's candidate
addresses (the one it reported, its local one, the server-reflexive one the registration
learned), a 64-bit token, and whether its relay can carry the transfer. ``PathSet`` then,
for every rendezvous of one endpoint:

* probes each candidate at once and again at growing intervals (``first_interval``
  doubling to ``max_interval``), both devices at the same time, so each NAT opens a mapping
  towards the other (hole punching);
* answers every PROBE carrying a token it knows with a PROBE_ACK of the same size, to the
  address it came from, and adds that address as a candidate of its own (a peer-reflexive
  one, RFC 8445 7.3.1.3), at most ``MAX_LEARNED`` per rendezvous;
* on the sending device: a candidate whose PROBE_ACK arrives (from the very address probed:
  a round trip, so the path works both ways) is a working path. The first one is chosen
  (``PathChosen`` with a ``DirectRoute``) at once when it is of the best kind there is
  (``reported`` before ``local``, ``reflexive``, ``peer``: so two devices on one LAN use
  the reported address, as before rendezvous existed); else the best that answered within
  a short grace (three times the time the first answer took, at least ``grace``) is. If
  none answers within ``probe_timeout`` (2 s), the relay is chosen (a ``RelayRoute``), or
  ``None`` when there is no relay;
* knows the relay tokens in use, so that ``unwrap`` takes a RELAY datagram only from the
  relay's address and with a live token (each use keeps it ``relay_idle`` seconds more).

Registration with the rendezvous (``registration.Registration``) runs here too: one socket,
one set of timers. No sockets, no clock: datagrams and ``now`` in; datagrams, events and the
next deadline out. The adapter resolves candidate addresses into socket addresses.
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import NamedTuple

from . import natpacket as npk
from .packet import PacketError
from .records import PeerKey, SockAddr
from .registration import Registration, RegistrationConfig

#: Peer-reflexive addresses learned per rendezvous at most.
MAX_LEARNED = 4
#: Rendezvous (probing or answering) and relay tokens remembered at most (oldest go).
MAX_RENDEZVOUS = 256
#: PROBE_ACKs sent per rendezvous at most (a probe costs its sender as much as the answer).
MAX_ANSWERS = 256
#: The order candidates are preferred in when more than one answers (unknown kinds last).
KIND_RANK = {"reported": 0, "local": 1, "reflexive": 2, "peer": 3}


@dataclass(frozen=True)
class PathConfig:
    #: The sender waits this long for a direct path before it takes the relay.
    probe_timeout: float = 2.0
    first_interval: float = 0.02
    max_interval: float = 0.2
    #: Least wait, after a working path of a lesser kind, for one of a better kind.
    grace: float = 0.06
    #: Both sides answer probes (and remember the rendezvous) this long after the start.
    linger: float = 10.0
    #: A relay token unused this long is forgotten.
    relay_idle: float = 60.0
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)


class RelayRoute(NamedTuple):
    """Where a relayed transfer's datagrams go: in an envelope with ``token``, to the
    server's relay at ``server``. Used as the transfer's send address."""

    server: SockAddr
    token: int
    prefix: bytes


@dataclass(frozen=True)
class DirectRoute:
    addr: SockAddr
    key: PeerKey
    kind: str


@dataclass(frozen=True)
class Target:
    """One candidate of the other device, resolved by the adapter."""

    addr: SockAddr
    key: PeerKey
    kind: str


@dataclass(frozen=True)
class PathChosen:
    token: int
    route: DirectRoute | RelayRoute | None


@dataclass(frozen=True)
class RegisteredAs:
    host: str
    port: int


PathEvent = PathChosen | RegisteredAs


def _rank(target: Target) -> int:
    return KIND_RANK.get(target.kind, len(KIND_RANK))


def _route(target: Target | None) -> DirectRoute | None:
    return None if target is None else DirectRoute(target.addr, target.key, target.kind)


def relay_key(token: int) -> PeerKey:
    """The peer key of a transfer through the relay (one per rendezvous)."""
    return (f"relay:{token:016x}", 0)


def relay_route(server: SockAddr, token: int) -> RelayRoute:
    return RelayRoute(server, token, npk.relay_prefix(token))


@dataclass
class PathStats:
    probes_sent: int = 0
    probes_answered: int = 0
    dropped_malformed: int = 0
    dropped_unknown: int = 0
    dropped_relay_source: int = 0
    registrations_sent: int = 0


@dataclass(eq=False)
class _Rendezvous:
    token: int
    sender: bool
    targets: list[Target]
    relay: SockAddr | None
    nonce: int
    started: float
    next_probe: float | None
    interval: float
    decide_at: float | None  # the sender's deadline for a direct path
    expires: float
    learned: int = 0
    answers: int = 0
    done: bool = False  # chosen (sender) or proven from this side (receiver)
    working: Target | None = None  # the best target that answered (sender)
    grace_until: float | None = None


class PathSet:
    def __init__(self, config: PathConfig = PathConfig()) -> None:
        self.config = config
        self.stats = PathStats()
        self.registration: Registration | None = None
        self._rendezvous: OrderedDict[int, _Rendezvous] = OrderedDict()
        self._relayed: OrderedDict[int, tuple[RelayRoute, PeerKey, float]] = OrderedDict()
        self._out: list[tuple[SockAddr, list[bytes]]] = []
        self._events: list[PathEvent] = []

    # -- inputs -------------------------------------------------------------------------------

    def register(self, server: SockAddr, server_key: PeerKey, token: bytes, now: float) -> None:
        """Register with the rendezvous at ``server`` (again, after a new login)."""
        self.registration = Registration(server, server_key, token, now,
                                         self.config.registration)

    def start(self, token: int, *, sender: bool, targets: list[Target], relay: bool,
              now: float) -> None:
        """A rendezvous: probe ``targets``; ``relay``: the server relays this pair."""
        server = self.registration.server if relay and self.registration is not None else None
        cfg = self.config
        rv = _Rendezvous(
            token=token, sender=sender, targets=list(targets), relay=server,
            nonce=secrets.randbits(32), started=now, next_probe=now if targets else None,
            interval=cfg.first_interval, decide_at=now + cfg.probe_timeout if sender else None,
            expires=now + max(cfg.linger, cfg.probe_timeout))
        self._rendezvous.pop(token, None)
        self._rendezvous[token] = rv
        while len(self._rendezvous) > MAX_RENDEZVOUS:
            self._rendezvous.popitem(last=False)
        if server is not None and not sender:
            self._allow_relay(token, server, now)  # the sender may take the relay at once

    def forget(self, token: int) -> None:
        self._rendezvous.pop(token, None)

    def receive_datagram(self, data: bytes, addr: SockAddr, key: PeerKey, now: float) -> None:
        """A datagram of this module's types (not RELAY: see ``unwrap``)."""
        try:
            ptype = npk.path_type(data)
            if ptype == npk.PathType.REGISTERED:
                self._on_registered(npk.decode_registered(data), key, now)
            elif ptype in (npk.PathType.PROBE, npk.PathType.PROBE_ACK):
                self._on_probe(npk.decode_probe(data), addr, key, now)
            else:  # REGISTER goes to servers; RELAY to unwrap
                self.stats.dropped_malformed += 1
        except PacketError:
            self.stats.dropped_malformed += 1

    def unwrap(self, data: bytes, key: PeerKey, now: float
               ) -> tuple[bytes, RelayRoute, PeerKey] | None:
        """A RELAY datagram's content, with the route and peer key of its transfer; None
        (counted) unless it comes from the relay with a live token."""
        reg = self.registration
        if reg is None or key != reg.server_key or len(data) < 2 * npk.RELAY_OVERHEAD:
            self.stats.dropped_relay_source += 1
            return None
        token = npk.header_id(data)
        entry = self._relayed.get(token)
        if entry is None or entry[2] <= now:
            self.stats.dropped_unknown += 1
            return None
        route, rkey, _ = entry
        self._relayed[token] = (route, rkey, now + self.config.relay_idle)
        return data[npk.RELAY_OVERHEAD:], route, rkey

    def handle_timer(self, now: float) -> None:
        for token, rv in list(self._rendezvous.items()):
            if rv.expires <= now:
                del self._rendezvous[token]
                continue
            due = [t for t in (rv.decide_at, rv.grace_until) if t is not None]
            if due and min(due) <= now and not rv.done:
                self._decide(rv, _route(rv.working), now)
            if rv.next_probe is not None and rv.next_probe <= now:
                self._probe_all(rv, now)
        for token, (_, _, expiry) in list(self._relayed.items()):
            if expiry <= now:
                del self._relayed[token]

    # -- outputs ------------------------------------------------------------------------------

    def get_timer(self) -> float | None:
        deadlines = [self.registration.get_timer()] if self.registration is not None else []
        for rv in self._rendezvous.values():
            deadlines.append(rv.expires)
            if rv.next_probe is not None:
                deadlines.append(rv.next_probe)
            if rv.decide_at is not None and not rv.done:
                deadlines.append(rv.decide_at)
            if rv.grace_until is not None and not rv.done:
                deadlines.append(rv.grace_until)
        if self._relayed:
            deadlines.append(min(e[2] for e in self._relayed.values()))
        return min(deadlines) if deadlines else None

    def datagrams_to_send(self, now: float) -> list[tuple[SockAddr, list[bytes]]]:
        reg = self.registration
        if reg is not None:
            due = reg.datagrams_to_send(now)
            if due:
                self.stats.registrations_sent += len(due)
                self._out.append((reg.server, due))
        for rv in self._rendezvous.values():
            if rv.next_probe is not None and rv.next_probe <= now:
                self._probe_all(rv, now)
        out, self._out = self._out, []
        return out

    def pop_events(self) -> list[PathEvent]:
        events, self._events = self._events, []
        return events

    def probing(self) -> int:
        """Rendezvous still remembered (probing or answering)."""
        return len(self._rendezvous)

    # -- the logic ----------------------------------------------------------------------------

    def _on_registered(self, answer: npk.Registered, key: PeerKey, now: float) -> None:
        reg = self.registration
        if reg is None:
            self.stats.dropped_unknown += 1
        elif reg.receive(answer, key, now):
            self._events.append(RegisteredAs(answer.host, answer.port))

    def _on_probe(self, probe: npk.Probe, addr: SockAddr, key: PeerKey, now: float) -> None:
        rv = self._rendezvous.get(probe.token)
        own_role = npk.ROLE_SENDER if rv is not None and rv.sender else npk.ROLE_RECEIVER
        if rv is None or probe.role == own_role:  # unknown, or our own probe come back
            self.stats.dropped_unknown += 1
            return
        known = next((t for t in rv.targets if t.key == key), None)
        if not probe.ack:
            if rv.answers < MAX_ANSWERS:
                rv.answers += 1
                self.stats.probes_answered += 1
                answer = npk.Probe(probe.token, probe.nonce, own_role, ack=True)
                self._out.append((addr, [npk.encode_probe(answer)]))
            if known is None and rv.learned < MAX_LEARNED and not rv.done:
                rv.learned += 1  # the other side reaches us from here: probe it back
                rv.targets.append(Target(addr, key, "peer"))
                rv.next_probe = now
            return
        if probe.nonce != rv.nonce or known is None or rv.done:
            self.stats.dropped_unknown += 1
            return
        if rv.sender:
            rank = _rank(known)
            if rv.working is None or rank < _rank(rv.working):
                rv.working = known
            if rank == min(_rank(t) for t in rv.targets):
                self._decide(rv, _route(known), now)
            elif rv.grace_until is None:
                rv.grace_until = now + max(self.config.grace, 3 * (now - rv.started))
        else:
            rv.done = True  # proven from this side; keep answering the sender's probes
            rv.next_probe = None

    def _decide(self, rv: _Rendezvous, route: DirectRoute | None, now: float) -> None:
        rv.done = True
        rv.next_probe = None
        chosen: DirectRoute | RelayRoute | None = route
        if route is None and rv.relay is not None:
            chosen = self._allow_relay(rv.token, rv.relay, now)
        self._events.append(PathChosen(rv.token, chosen))

    def _allow_relay(self, token: int, server: SockAddr, now: float) -> RelayRoute:
        route = relay_route(server, token)
        self._relayed.pop(token, None)
        self._relayed[token] = (route, relay_key(token), now + self.config.relay_idle)
        while len(self._relayed) > MAX_RENDEZVOUS:
            self._relayed.popitem(last=False)
        return route

    def _probe_all(self, rv: _Rendezvous, now: float) -> None:
        role = npk.ROLE_SENDER if rv.sender else npk.ROLE_RECEIVER
        datagram = npk.encode_probe(npk.Probe(rv.token, rv.nonce, role, ack=False))
        for target in rv.targets:
            self._out.append((target.addr, [datagram]))
            self.stats.probes_sent += 1
        # The sender decides at ``probe_timeout``; probes after it (a little later, for a
        # receiver told late) no longer help.
        stop = rv.decide_at if rv.sender else rv.started + 1.25 * self.config.probe_timeout
        nxt = now + rv.interval
        rv.interval = min(rv.interval * 2, self.config.max_interval)
        rv.next_probe = nxt if stop is None or nxt < stop else None
