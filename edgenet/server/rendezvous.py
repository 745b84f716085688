"""The server's UDP side for UVF across NATs, as a sans-I/O core: rendezvous and relay.

* **Registration.** A logged-in device gets a 16-byte token over its TCP session
  (``issue``); REGISTER datagrams carrying it teach the server the device's reflexive
  address (what its NAT shows), answered by REGISTERED with that address. A REGISTER with
  an unknown token, from an IP address other than the session's, of the wrong size or over
  the answer rate is dropped and counted: never answered, and an answer is always smaller
  than the REGISTER, so the server amplifies nothing.
* **Allocation.** Each UVF rendezvous (``allocate``) gets a random 64-bit token naming the
  pair of devices. ``revoke`` (the session ended) removes the device's registration and
  allocations; an allocation nothing used for ``allocation_idle`` goes by itself.
* **Relay.** A RELAY datagram is forwarded, unchanged, only when its token names an
  allocation, it comes from the registered address of one device of the pair, the other
  is registered, it carries a UVF transfer datagram, and the sender's rate and quota and
  the relay's total ones allow it (``relaycaps``). Everything else is dropped and counted
  by reason (``counters.dropped``).

Times are the caller's monotonic clock (``now``); nothing here touches a socket. State is
this node's own: a fleet relays on the node a pair's devices registered with.
"""

from __future__ import annotations

import secrets
from collections import Counter
from dataclasses import dataclass, field

from edgenet.rudp import natpacket as npk
from edgenet.rudp.packet import PacketError, PacketType
from edgenet.rudp.records import PeerKey, SockAddr
from edgenet.server.relaycaps import RelayLimits, TokenBucket, WindowQuota

#: REGISTERED answers per device and second at most (a burst as large).
REGISTER_ANSWER_RATE = 10.0
#: Why datagrams are dropped (the label values of the counter).
DROP_REASONS = ("malformed", "bad_version", "unknown_token", "wrong_address", "wrong_source",
                "unregistered", "not_relayable", "rate", "quota", "register_rate",
                "unexpected")
#: The relay's keepalive interval told to devices, in seconds.
KEEPALIVE = 20


@dataclass
class RendezvousCounters:
    registrations: int = 0
    relayed_datagrams: int = 0
    relayed_bytes: int = 0
    allocations: int = 0
    allocations_refused: int = 0
    dropped: Counter[str] = field(default_factory=Counter)


@dataclass(eq=False)
class _Device:
    name: str
    session_id: str
    ip: str
    token: bytes
    rate: TokenBucket
    quota: WindowQuota
    answers: TokenBucket
    #: The device's own addresses of its UVF socket, as it reported them.
    local: tuple[tuple[str, int], ...] = ()
    addr: SockAddr | None = None
    key: PeerKey | None = None
    allocations: set[int] = field(default_factory=set)


@dataclass(eq=False)
class _Allocation:
    token: int
    a: str
    b: str
    last_used: float


class Rendezvous:
    def __init__(self, limits: RelayLimits, keepalive: int = KEEPALIVE) -> None:
        self.limits = limits
        self.keepalive = keepalive
        self.counters = RendezvousCounters()
        self._by_token: dict[bytes, _Device] = {}
        self._devices: dict[str, _Device] = {}
        self._allocations: dict[int, _Allocation] = {}
        self._total_rate: TokenBucket | None = None
        self._total_quota = WindowQuota(limits.total_bytes)
        #: The UDP port devices register at and send relayed datagrams to (set on binding).
        self.port = 0

    # -- the TCP side -----------------------------------------------------------------------

    def issue(self, device: str, session_id: str, ip: str, now: float,
              local: tuple[tuple[str, int], ...] = ()) -> bytes:
        """A registration token for a logged-in session (a later login of the name
        replaces the older one's); ``local``: the addresses the device reported."""
        old = self._devices.get(device)
        if old is not None:
            self._drop_device(old)
        token = secrets.token_bytes(npk.TOKEN_BYTES)
        limits = self.limits
        dev = _Device(device, session_id, _canonical_ip(ip), token,
                      TokenBucket(limits.device_rate, now), WindowQuota(limits.device_bytes),
                      TokenBucket(REGISTER_ANSWER_RATE, now, REGISTER_ANSWER_RATE), local)
        self._by_token[token] = dev
        self._devices[device] = dev
        return token

    def revoke(self, device: str, session_id: str) -> None:
        """The session ended: its registration and its allocations go."""
        dev = self._devices.get(device)
        if dev is not None and dev.session_id == session_id:
            self._drop_device(dev)

    def registered(self, device: str) -> bool:
        """The device holds a registration token (it may not have registered yet)."""
        return device in self._devices

    def addresses(self, device: str) -> tuple[tuple[tuple[str, int], ...], PeerKey | None]:
        """The device's reported local addresses, and the reflexive one (None before it
        registered)."""
        dev = self._devices.get(device)
        return ((), None) if dev is None else (dev.local, dev.key)

    def allocate(self, sender: str, receiver: str, now: float) -> int | None:
        """A relay token for this pair, or None when a cap forbids one (counted)."""
        self.expire(now)
        a, b = self._devices.get(sender), self._devices.get(receiver)
        limits = self.limits
        if a is None or b is None or not (self._room(a, now) and self._room(b, now)) or (
                limits.total_allocations and len(self._allocations) >= limits.total_allocations):
            self.counters.allocations_refused += 1
            return None
        token = 0
        while not token or token in self._allocations:
            token = secrets.randbits(64)
        self._allocations[token] = _Allocation(token, sender, receiver, now)
        a.allocations.add(token)
        b.allocations.add(token)
        self.counters.allocations += 1
        return token

    def allocation_count(self) -> int:
        return len(self._allocations)

    def expire(self, now: float) -> None:
        idle = self.limits.allocation_idle
        for alloc in [x for x in self._allocations.values() if now - x.last_used >= idle]:
            self._drop_allocation(alloc)

    # -- the UDP side -----------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: SockAddr, key: PeerKey, now: float
                         ) -> tuple[SockAddr, bytes] | None:
        """One datagram; returns what to send for it (a REGISTERED answer or the relayed
        datagram, with its destination), or None (dropped and counted, or nothing due)."""
        try:
            ptype = npk.path_type(data)
        except PacketError as exc:
            self.counters.dropped["bad_version" if exc.reason == "version" else "malformed"] += 1
            return None
        if ptype == npk.PathType.RELAY:
            return self._relay(data, key, now)
        if ptype == npk.PathType.REGISTER:
            return self._register(data, addr, key, now)
        self.counters.dropped["unexpected"] += 1  # probes and answers are for devices
        return None

    def _register(self, data: bytes, addr: SockAddr, key: PeerKey, now: float
                  ) -> tuple[SockAddr, bytes] | None:
        dropped = self.counters.dropped
        try:
            reg = npk.decode_register(data)
        except PacketError:
            dropped["malformed"] += 1
            return None
        dev = self._by_token.get(reg.token)
        if dev is None:
            dropped["unknown_token"] += 1
            return None
        if key[0] != dev.ip:  # a token copied elsewhere does not move the device
            dropped["wrong_address"] += 1
            return None
        if not dev.answers.take(1, now):
            dropped["register_rate"] += 1
            return None
        dev.addr, dev.key = addr, key
        self.counters.registrations += 1
        answer = npk.Registered(reg.nonce, key[0], key[1], self.keepalive)
        return addr, npk.encode_registered(answer)

    def _relay(self, data: bytes, key: PeerKey, now: float) -> tuple[SockAddr, bytes] | None:
        dropped = self.counters.dropped
        alloc = self._allocations.get(npk.header_id(data))
        if alloc is None:
            dropped["unknown_token"] += 1
            return None
        devices = self._devices
        a, b = devices.get(alloc.a), devices.get(alloc.b)
        if a is not None and a.key == key:
            src, dst = a, b
        elif b is not None and b.key == key:
            src, dst = b, a
        else:
            dropped["wrong_source"] += 1
            return None
        if dst is None or dst.addr is None:
            dropped["unregistered"] += 1
            return None
        # Only a UVF transfer's datagram travels inside (no envelope in an envelope).
        if len(data) < 2 * npk.RELAY_OVERHEAD or data[12:14] != b"UV" or not (
                PacketType.OFFER <= data[15] <= PacketType.ABORT):
            dropped["not_relayable"] += 1
            return None
        size = len(data)
        if not (src.rate.take(size, now) and self._total_bucket(now).take(size, now)):
            dropped["rate"] += 1
            return None
        if not (src.quota.take(size, now) and self._total_quota.take(size, now)):
            dropped["quota"] += 1
            return None
        alloc.last_used = now
        counters = self.counters
        counters.relayed_datagrams += 1
        counters.relayed_bytes += size
        return dst.addr, data

    # -- helpers ----------------------------------------------------------------------------

    def _total_bucket(self, now: float) -> TokenBucket:
        if self._total_rate is None:
            self._total_rate = TokenBucket(self.limits.total_rate, now)
        return self._total_rate

    def _room(self, dev: _Device, now: float) -> bool:
        """Room for one more allocation of ``dev``: under its cap, or its least recently
        used allocation idle for 5 s (no transfer runs through it) is given up."""
        cap = self.limits.device_allocations
        if not cap or len(dev.allocations) < cap:
            return True
        oldest = min((self._allocations[t] for t in dev.allocations), key=lambda x: x.last_used)
        if now - oldest.last_used < 5.0:
            return False
        self._drop_allocation(oldest)
        return True

    def _drop_allocation(self, alloc: _Allocation) -> None:
        self._allocations.pop(alloc.token, None)
        for name in (alloc.a, alloc.b):
            dev = self._devices.get(name)
            if dev is not None:
                dev.allocations.discard(alloc.token)

    def _drop_device(self, dev: _Device) -> None:
        self._by_token.pop(dev.token, None)
        self._devices.pop(dev.name, None)
        for token in list(dev.allocations):
            alloc = self._allocations.get(token)
            if alloc is not None:
                self._drop_allocation(alloc)


def _canonical_ip(ip: str) -> str:
    if ip.startswith("::ffff:") and "." in ip:
        return ip[7:]
    return ip
