"""The server's UDP rendezvous and relay core (server/rendezvous.py, relaycaps.py), sans-I/O
with a fake clock: registration, forged datagrams, allocation, forwarding, caps."""

from __future__ import annotations

import pytest

from edgenet.rudp import natpacket as npk
from edgenet.rudp import packet as pk
from edgenet.server.relaycaps import RelayLimits, TokenBucket, WindowQuota
from edgenet.server.rendezvous import Rendezvous

ALPHA = ("203.0.113.11", 4000)  # alpha's NAT mapping, as the server sees it
BETA = ("203.0.113.12", 5000)
THIRD = ("203.0.113.66", 6000)
UNLIMITED = RelayLimits(0, 0, 0, 0)


def register(core: Rendezvous, token: bytes, addr: tuple[str, int], now: float = 0.0,
             nonce: int = 1) -> bytes | None:
    out = core.receive_datagram(npk.encode_register(npk.Register(nonce, token)), addr, addr,
                                now)
    return None if out is None else out[1]


def paired(limits: RelayLimits = UNLIMITED) -> tuple[Rendezvous, int]:
    core = Rendezvous(limits)
    ta = core.issue("alpha", "s-a", ALPHA[0], 0.0)
    tb = core.issue("beta", "s-b", BETA[0], 0.0)
    assert register(core, ta, ALPHA) and register(core, tb, BETA)
    token = core.allocate("alpha", "beta", 0.0)
    assert token is not None
    return core, token


def data(token: int, size: int = 1432) -> bytes:
    inner = pk.encode_data_header(7, 0, 0)
    return npk.relay_prefix(token) + inner + bytes(size - len(inner) - npk.RELAY_OVERHEAD)


def test_a_registration_learns_the_reflexive_address_and_answers_smaller() -> None:
    core = Rendezvous(UNLIMITED)
    token = core.issue("alpha", "s1", "::ffff:203.0.113.11", 0.0)
    request = npk.encode_register(npk.Register(42, token))
    out = core.receive_datagram(request, ALPHA, ALPHA, 0.0)
    assert out is not None and out[0] == ALPHA
    answer = npk.decode_registered(out[1])
    assert (answer.nonce, answer.host, answer.port, answer.keepalive) == (42, *ALPHA, 20)
    assert len(out[1]) < len(request)
    assert core.addresses("alpha") == ((), ALPHA)
    assert core.counters.registrations == 1


def test_forged_registrations_are_dropped_counted_and_never_answered() -> None:
    core = Rendezvous(UNLIMITED)
    token = core.issue("alpha", "s1", ALPHA[0], 0.0)
    assert register(core, b"\x00" * 16, ALPHA) is None  # unknown token
    assert register(core, token, THIRD) is None  # the token from another address
    too_short = npk.encode_register(npk.Register(1, token))[:-1]
    assert core.receive_datagram(too_short, ALPHA, ALPHA, 0.0) is None
    assert core.receive_datagram(b"\x00" * 600, ALPHA, ALPHA, 0.0) is None
    probe = npk.encode_probe(npk.Probe(5, 1, 0, False))
    assert core.receive_datagram(probe, ALPHA, ALPHA, 0.0) is None
    assert dict(core.counters.dropped) == {"unknown_token": 1, "wrong_address": 1,
                                           "malformed": 2, "unexpected": 1}
    assert core.addresses("alpha") == ((), None)
    # A valid token is answered at most 10 times a second (burst 10).
    answers = [register(core, token, ALPHA, 1.0) for _ in range(15)]
    assert sum(a is not None for a in answers) == 10
    assert core.counters.dropped["register_rate"] == 5
    assert register(core, token, ALPHA, 1.1) is not None  # one more after 0.1 s


def test_a_session_that_ends_or_is_replaced_loses_its_registration() -> None:
    core, token = paired()
    old = core.issue("alpha", "s-a2", ALPHA[0], 0.0)  # a takeover: a new login of alpha
    assert core.allocation_count() == 0  # alpha's allocations went with the old session
    assert core.receive_datagram(data(token), ALPHA, ALPHA, 0.1) is None
    core.revoke("alpha", "s-a")  # the replaced session leaving revokes nothing
    assert register(core, old, ALPHA) is not None
    core.revoke("alpha", "s-a2")
    assert register(core, old, ALPHA) is None and not core.registered("alpha")


def test_the_relay_forwards_only_for_the_pair_from_their_registered_addresses() -> None:
    core, token = paired()
    d = data(token)
    assert core.receive_datagram(d, ALPHA, ALPHA, 0.1) == (BETA, d)
    assert core.receive_datagram(d, BETA, BETA, 0.1) == (ALPHA, d)
    assert core.receive_datagram(d, THIRD, THIRD, 0.1) is None  # the right token, elsewhere
    assert core.receive_datagram(data(token ^ 1), ALPHA, ALPHA, 0.1) is None
    nested = npk.relay_prefix(token) + npk.relay_prefix(token) + bytes(20)
    assert core.receive_datagram(nested, ALPHA, ALPHA, 0.1) is None
    assert core.receive_datagram(npk.relay_prefix(token) + b"UV", ALPHA, ALPHA, 0.1) is None
    assert dict(core.counters.dropped) == {"wrong_source": 1, "unknown_token": 1,
                                           "not_relayable": 2}
    assert (core.counters.relayed_datagrams, core.counters.relayed_bytes) == (2, 2 * len(d))


def test_an_unregistered_receiver_gets_nothing_and_idle_allocations_expire() -> None:
    core = Rendezvous(RelayLimits(0, 0, 0, 0, allocation_idle=30.0))
    ta = core.issue("alpha", "s-a", ALPHA[0], 0.0)
    core.issue("beta", "s-b", BETA[0], 0.0)
    register(core, ta, ALPHA)
    token = core.allocate("alpha", "beta", 0.0)
    assert token is not None
    assert core.receive_datagram(data(token), ALPHA, ALPHA, 1.0) is None
    assert core.counters.dropped["unregistered"] == 1
    core.expire(29.9)
    assert core.allocation_count() == 1  # the dropped datagram did not keep it alive
    core.expire(30.0)
    assert core.allocation_count() == 0
    assert core.allocate("alpha", "nobody", 31.0) is None  # not logged in with a token


def test_allocation_caps_per_device_and_in_all() -> None:
    core = Rendezvous(RelayLimits(0, 0, 0, 0, device_allocations=3, total_allocations=4))
    for name, ip in (("alpha", ALPHA[0]), ("beta", BETA[0]), ("gamma", "203.0.113.13"),
                     ("delta", "203.0.113.14")):
        core.issue(name, f"s-{name}", ip, 0.0)
    assert all(core.allocate("alpha", "beta", 0.0) for _ in range(3))
    assert core.allocate("alpha", "gamma", 1.0) is None  # alpha's three are busy (< 5 s)
    assert core.allocate("alpha", "gamma", 5.0) is not None  # its oldest idle one goes
    assert core.allocation_count() == 3
    assert core.allocate("gamma", "delta", 5.0) is not None
    assert core.allocate("gamma", "delta", 5.0) is None  # 4 in all
    assert core.counters.allocations_refused == 2


def test_the_per_device_rate_cap_holds_exactly() -> None:
    rate = 1_000_000
    core, token = paired(RelayLimits(rate, 0, 0, 0))
    d = data(token)
    forwarded, now = 0, 0.0
    for _ in range(20_000):  # 2 s of offering 10 MB/s, every 0.1 ms
        now += 0.0001
        if core.receive_datagram(d, ALPHA, ALPHA, now) is not None:
            forwarded += len(d)
    burst = rate  # a bucket holds one second of its rate (at least 256 KiB)
    assert rate * 2 <= forwarded <= rate * 2 + burst + len(d)
    assert core.counters.dropped["rate"] > 0
    # beta's own bucket is untouched by alpha's traffic
    assert core.receive_datagram(d, BETA, BETA, now) is not None


def test_the_total_rate_cap_holds_over_all_devices() -> None:
    core = Rendezvous(RelayLimits(0, 400_000, 0, 0))
    names = [("alpha", ALPHA), ("beta", BETA), ("gamma", ("203.0.113.13", 1)),
             ("delta", ("203.0.113.14", 1))]
    for name, addr in names:
        register(core, core.issue(name, name, addr[0], 0.0), addr)
    t1 = core.allocate("alpha", "beta", 0.0)
    t2 = core.allocate("gamma", "delta", 0.0)
    assert t1 and t2
    forwarded, now = 0, 0.0
    for _ in range(10_000):  # 1 s, two pairs at 7 MB/s each
        now += 0.0001
        for token, addr in ((t1, ALPHA), (t2, names[2][1])):
            if core.receive_datagram(data(token), addr, addr, now) is not None:
                forwarded += 1432
    assert 400_000 <= forwarded <= 400_000 + 400_000 + 1432  # 1 s, plus a 1 s burst


def test_byte_quotas_per_device_and_in_all_reset_each_hour() -> None:
    core, token = paired(RelayLimits(0, 0, 10 * 1432, 15 * 1432))
    d = data(token)
    sent_a = [core.receive_datagram(d, ALPHA, ALPHA, 10.0) for _ in range(12)]
    assert sum(x is not None for x in sent_a) == 10  # alpha's hour is used up
    sent_b = [core.receive_datagram(d, BETA, BETA, 11.0) for _ in range(8)]
    assert sum(x is not None for x in sent_b) == 5  # what is left of the total
    assert core.counters.dropped["quota"] == 5
    assert core.receive_datagram(d, ALPHA, ALPHA, 3600.0) is not None  # a new hour


def test_buckets_and_quotas() -> None:
    bucket = TokenBucket(100.0, 0.0, burst=100.0)
    assert bucket.take(100, 0.0) and not bucket.take(1, 0.0)
    assert bucket.take(50, 0.5) and not bucket.take(1, 0.5)
    assert TokenBucket(0, 0.0).take(10**12, 0.0)  # 0: no limit
    quota = WindowQuota(10, window=60.0)
    assert quota.take(10, 59.9) and not quota.take(1, 59.9) and quota.take(10, 60.0)
    assert WindowQuota(0).take(10**15, 0.0)


@pytest.mark.parametrize("junk", [b"", b"UV", b"UV\x01\x0d", b"UV\x09\x0d" + bytes(40),
                                  b"UV\x01\x63" + bytes(40)])
def test_junk_is_dropped(junk: bytes) -> None:
    core, _ = paired()
    assert core.receive_datagram(junk, THIRD, THIRD, 1.0) is None
    assert sum(core.counters.dropped.values()) == 1


def test_the_core_loads_no_asyncio_socket_or_structlog() -> None:
    """In a fresh interpreter: the server's rendezvous core is sans-I/O."""
    import subprocess
    import sys

    code = ("import sys, edgenet.server.rendezvous, edgenet.server.relaycaps; print(sorted("
            "m for m in ('asyncio', 'socket', 'selectors', 'structlog') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
