"""The path logic of UVF across NATs (rudp/paths.py, registration.py, natpacket.py), sans-I/O:
a fake clock, datagrams handed over by hand or through simulated NATs."""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import pytest

from edgenet.rudp import natpacket as npk
from edgenet.rudp.packet import PacketError
from edgenet.rudp.paths import (
    DirectRoute,
    PathChosen,
    PathConfig,
    PathSet,
    RegisteredAs,
    RelayRoute,
    Target,
    relay_key,
)

SERVER = ("203.0.113.1", 5000)
TOKEN = b"\x11" * 16
RV = 0x1234_5678_9ABC_DEF0


def target(host: str, port: int, kind: str) -> Target:
    return Target((host, port), (host, port), kind)


def sent(paths: PathSet, now: float) -> list[tuple[object, bytes]]:
    return [(addr, d) for addr, batch in paths.datagrams_to_send(now) for d in batch]


def chosen(paths: PathSet) -> list[PathChosen]:
    return [e for e in paths.pop_events() if isinstance(e, PathChosen)]


# -- the codec ---------------------------------------------------------------------------------


def test_datagrams_round_trip_and_the_answers_are_never_larger() -> None:
    reg = npk.encode_register(npk.Register(7, TOKEN))
    assert len(reg) == npk.REGISTER_SIZE == 48
    assert npk.decode_register(reg) == npk.Register(7, TOKEN)
    for host in ("198.51.100.7", "2001:db8::5"):
        answer = npk.encode_registered(npk.Registered(7, host, 4242, 20))
        assert len(answer) == npk.REGISTERED_SIZE < len(reg)
        assert npk.decode_registered(answer) == npk.Registered(7, host, 4242, 20)
    probe = npk.encode_probe(npk.Probe(RV, 99, npk.ROLE_SENDER, ack=False))
    ack = npk.encode_probe(npk.Probe(RV, 99, npk.ROLE_RECEIVER, ack=True))
    assert len(probe) == len(ack) == npk.PROBE_SIZE
    assert npk.decode_probe(ack) == npk.Probe(RV, 99, npk.ROLE_RECEIVER, True)
    assert npk.relay_prefix(RV)[3] == npk.PathType.RELAY and npk.header_id(npk.relay_prefix(RV)) == RV


@pytest.mark.parametrize("data", [
    b"", b"UV\x01", b"XX\x01\x09" + bytes(44), b"UV\x02\x09" + bytes(44),
    npk.encode_register(npk.Register(1, TOKEN))[:-1],
    npk.encode_probe(npk.Probe(RV, 1, 0, False)) + b"x",
    npk.encode_probe(npk.Probe(RV, 1, 0, False))[:-1] + b"\x07",  # bad role
    npk.encode_registered(npk.Registered(1, "192.0.2.1", 1, 1))[:14] + b"\x05" + bytes(18),
])
def test_malformed_datagrams_are_refused(data: bytes) -> None:
    for decode in (npk.decode_register, npk.decode_registered, npk.decode_probe):
        with pytest.raises(PacketError):
            decode(data)


# -- registration -------------------------------------------------------------------------------


def test_registration_backs_off_until_answered_then_refreshes_at_the_keepalive() -> None:
    paths = PathSet()
    paths.register(SERVER, SERVER, TOKEN, 100.0)
    times = []
    now = 100.0
    for _ in range(8):
        out = sent(paths, now)
        assert out and all(addr == SERVER for addr, _ in out)
        times.append(round(now - 100.0, 3))
        now = paths.get_timer() or 0.0
    assert times == [0, 0.25, 0.75, 1.75, 3.75, 7.75, 15.75, 23.75]  # capped at 8 s
    register = npk.decode_register(sent(paths, now)[0][1])
    assert register.token == TOKEN
    wrong_nonce = npk.encode_registered(npk.Registered(register.nonce ^ 1, "203.0.113.9", 7, 30))
    paths.receive_datagram(wrong_nonce, SERVER, SERVER, now)
    elsewhere = npk.encode_registered(npk.Registered(register.nonce, "203.0.113.9", 7, 30))
    paths.receive_datagram(elsewhere, ("203.0.113.66", 5000), ("203.0.113.66", 5000), now)
    assert paths.pop_events() == [] and paths.registration is not None
    assert paths.registration.reflexive is None
    paths.receive_datagram(elsewhere, SERVER, SERVER, now)
    assert paths.pop_events() == [RegisteredAs("203.0.113.9", 7)]
    assert paths.get_timer() == now + 30  # the server's keepalive
    paths.receive_datagram(elsewhere, SERVER, SERVER, now)
    assert paths.pop_events() == []  # the same address again: nothing new
    assert sent(paths, now + 30) and paths.get_timer() == now + 60
    # The refresh at +30 went unanswered: from +60 on it is retried with the backoff.
    assert sent(paths, now + 60) and paths.get_timer() == now + 60.25


# -- probing and the choice ---------------------------------------------------------------------


def pair(sender_targets: list[Target], receiver_targets: list[Target], relay: bool = True,
         config: PathConfig = PathConfig()) -> tuple[PathSet, PathSet]:  # noqa: B008
    a, b = PathSet(config), PathSet(config)
    for paths in (a, b):
        paths.register(SERVER, SERVER, TOKEN, 0.0)
        sent(paths, 0.0)  # the REGISTER
    a.start(RV, sender=True, targets=sender_targets, relay=relay, now=0.0)
    b.start(RV, sender=False, targets=receiver_targets, relay=relay, now=0.0)
    return a, b


def test_the_probe_schedule_grows_and_stops_at_the_timeout() -> None:
    a = PathSet()
    a.start(RV, sender=True, targets=[target("198.51.100.2", 7, "reported")], relay=False,
            now=0.0)
    times = []
    now = 0.0
    while now < 5:
        if sent(a, now):
            times.append(round(now, 3))
        a.handle_timer(now)
        nxt = a.get_timer()
        if nxt is None:
            break
        now = nxt
    assert times[:6] == [0, 0.02, 0.06, 0.14, 0.3, 0.5]
    assert times[-1] == 1.9 and len(times) == 13  # then every 0.2 s until the timeout
    assert chosen(a) == [PathChosen(RV, None)]  # no answer, no relay
    assert a.stats.probes_sent == 13


def test_the_reported_address_wins_at_once_when_it_answers() -> None:
    b_reported, b_local = target("203.0.113.12", 2000, "reported"), target("198.51.100.2", 2000,
                                                                             "local")
    a, b = pair([b_local, b_reported], [target("203.0.113.11", 1000, "reported")])
    probes = sent(a, 0.0)
    assert [addr for addr, _ in probes] == [b_local.addr, b_reported.addr]
    for addr, data in probes:  # both reach b (one LAN)
        b.receive_datagram(data, ("203.0.113.11", 1000), ("203.0.113.11", 1000), 0.001)
    answers = [d for addr, d in sent(b, 0.001) if npk.decode_probe(d).ack]
    assert len(answers) == 2
    # The local answer comes first, but a better kind is still being probed: wait for it.
    a.receive_datagram(answers[0], b_local.addr, b_local.key, 0.002)
    assert chosen(a) == []
    a.receive_datagram(answers[1], b_reported.addr, b_reported.key, 0.003)
    assert chosen(a) == [PathChosen(RV, DirectRoute(b_reported.addr, b_reported.key,
                                                      "reported"))]


def test_a_lesser_path_is_taken_after_the_grace() -> None:
    reported, reflexive = target("203.0.113.12", 2000, "reported"), target("203.0.113.12", 3000,
                                                                            "reflexive")
    a, _ = pair([reported, reflexive], [])
    sent(a, 0.0)
    ack = npk.encode_probe(npk.Probe(RV, a._rendezvous[RV].nonce, npk.ROLE_RECEIVER, True))
    a.receive_datagram(ack, reflexive.addr, reflexive.key, 0.01)
    now = 0.01
    while not (events := chosen(a)):
        sent(a, now)
        now = a.get_timer() or 0.0
        a.handle_timer(now)
    assert now == pytest.approx(0.07)  # the answer at 10 ms + max(grace 60 ms, 3 x 10 ms)
    assert events == [PathChosen(RV, DirectRoute(reflexive.addr, reflexive.key, "reflexive"))]


def test_without_an_answer_the_relay_is_taken_at_the_probe_timeout() -> None:
    a, _ = pair([target("203.0.113.12", 2000, "reported")], [],
                config=PathConfig(probe_timeout=0.5))
    now = 0.0
    while not (events := chosen(a)):
        sent(a, now)
        now = a.get_timer() or 0.0
        a.handle_timer(now)
    assert now == 0.5
    assert events == [PathChosen(RV, RelayRoute(SERVER, RV, npk.relay_prefix(RV)))]


def test_probes_are_answered_only_for_known_tokens_and_the_other_role() -> None:
    b = PathSet()
    b.start(RV, sender=False, targets=[], relay=False, now=0.0)
    stranger = ("203.0.113.66", 9)
    for probe in (npk.Probe(RV + 1, 5, npk.ROLE_SENDER, False),  # unknown rendezvous
                  npk.Probe(RV, 5, npk.ROLE_RECEIVER, False),  # our own role (a reflection)
                  npk.Probe(RV, 5, npk.ROLE_SENDER, True)):  # an ACK for nothing we sent
        b.receive_datagram(npk.encode_probe(probe), stranger, stranger, 0.1)
    assert sent(b, 0.1) == [] and b.stats.dropped_unknown == 3
    b.receive_datagram(npk.encode_probe(npk.Probe(RV, 5, npk.ROLE_SENDER, False)), stranger,
                       stranger, 0.1)
    (addr, answer), *rest = sent(b, 0.1)
    assert addr == stranger and npk.decode_probe(answer) == npk.Probe(RV, 5, 1, True)
    # ... and the address it came from is probed back (a peer-reflexive candidate).
    assert [a for a, _ in rest] == [stranger]
    b.handle_timer(b.get_timer() or 0.0)
    sent(b, 0.15)
    b.forget(RV)
    b.receive_datagram(npk.encode_probe(npk.Probe(RV, 5, npk.ROLE_SENDER, False)), stranger,
                       stranger, 0.2)
    assert sent(b, 0.2) == []


def test_relay_datagrams_are_taken_only_from_the_server_with_a_live_token() -> None:
    a, b = pair([], [], config=PathConfig(relay_idle=5.0))
    inner = b"UV\x01\x07" + bytes(8)  # a CLOSE
    wrapped = npk.relay_prefix(RV) + inner
    assert b.unwrap(wrapped, ("203.0.113.66", 5000), 1.0) is None  # not from the relay
    assert b.unwrap(npk.relay_prefix(RV + 1) + inner, SERVER, 1.0) is None  # unknown token
    got = b.unwrap(wrapped, SERVER, 1.0)
    assert got is not None and got[0] == inner and got[2] == relay_key(RV)
    assert got[1] == RelayRoute(SERVER, RV, npk.relay_prefix(RV))
    assert b.unwrap(wrapped, SERVER, 5.9) is not None  # each use keeps it alive
    b.handle_timer(10.9)
    assert b.unwrap(wrapped, SERVER, 10.9) is None
    # The sender takes the relay's datagrams only once it chose the relay.
    assert a.unwrap(wrapped, SERVER, 1.0) is None
    assert (b.stats.dropped_relay_source, b.stats.dropped_unknown) == (1, 2)


# -- two devices behind simulated NATs ----------------------------------------------------------


@dataclass
class FakeNat:
    """A Linux-like masquerade: ``eim`` keeps a mapping per internal address (the port kept),
    ``random`` one per destination; inbound passes only from where a mapping sent to."""

    public: str
    mode: str
    mappings: dict[tuple[object, ...], int] = field(default_factory=dict)
    inside: dict[int, tuple[str, int]] = field(default_factory=dict)
    sent_to: set[tuple[int, tuple[str, int]]] = field(default_factory=set)

    def out(self, src: tuple[str, int], dst: tuple[str, int]) -> tuple[str, int]:
        key: tuple[object, ...] = (src,) if self.mode == "eim" else (src, dst)
        port = self.mappings.get(key)
        if port is None:
            port = src[1] if self.mode == "eim" else 40000 + len(self.mappings)
            self.mappings[key] = port
            self.inside[port] = src
        self.sent_to.add((port, dst))
        return (self.public, port)

    def into(self, port: int, src: tuple[str, int]) -> tuple[str, int] | None:
        return self.inside.get(port) if (port, src) in self.sent_to else None


def run_through_nats(mode_a: str, mode_b: str) -> tuple[PathChosen, float]:
    nats = {"a": FakeNat("203.0.113.11", mode_a), "b": FakeNat("203.0.113.12", mode_b)}
    inner = {"a": ("192.0.2.2", 1000), "b": ("198.51.100.2", 2000)}
    devices = {"a": PathSet(), "b": PathSet()}
    wire: list[tuple[float, int, str, tuple[str, int], tuple[str, int], bytes]] = []
    seq = 0

    def send(side: str, dst: tuple[str, int], data: bytes, now: float) -> None:
        nonlocal seq
        src = nats[side].out(inner[side], dst)
        seq += 1
        heapq.heappush(wire, (now + 0.005, seq, side, src, dst, data))

    # The server saw each device's registration come from its NAT's mapping towards it.
    reflexive = {s: nats[s].out(inner[s], SERVER) for s in nats}
    for side, other in (("a", "b"), ("b", "a")):
        nat_ip = nats[other].public
        cands = [target(nat_ip, inner[other][1], "reported"),
                 target(*inner[other], "local"), target(*reflexive[other], "reflexive")]
        devices[side].start(RV, sender=side == "a", targets=cands, relay=False, now=0.0)
    now = 0.0
    for _ in range(10_000):
        for side, paths in devices.items():
            for addr, batch in paths.datagrams_to_send(now):
                for d in batch:
                    send(side, addr, d, now)  # type: ignore[arg-type]
        if events := chosen(devices["a"]):
            return events[0], now
        timers = [t for t in (p.get_timer() for p in devices.values()) if t is not None]
        nxt = min([wire[0][0]] if wire else [] + timers) if wire else min(timers)
        now = max(now, min([nxt, *timers]))
        while wire and wire[0][0] <= now:
            _, _, side, src, dst, data = heapq.heappop(wire)
            for other, nat in nats.items():
                if dst[0] == nat.public and other != side:
                    delivered = nat.into(dst[1], src)
                    if delivered is not None:
                        devices[other].receive_datagram(data, src, src, now)
        for paths in devices.values():
            paths.handle_timer(now)
    raise AssertionError("no choice")


def test_two_endpoint_independent_nats_punch_through() -> None:
    event, at = run_through_nats("eim", "eim")
    assert isinstance(event.route, DirectRoute) and event.route.kind == "reported"
    assert event.route.key == ("203.0.113.12", 2000) and at < 0.1


@pytest.mark.parametrize("modes", [("eim", "random"), ("random", "eim"), ("random", "random")])
def test_a_port_randomising_nat_leaves_no_direct_path(modes: tuple[str, str]) -> None:
    event, at = run_through_nats(*modes)
    assert event.route is None and at == pytest.approx(2.0)  # no relay in this test
