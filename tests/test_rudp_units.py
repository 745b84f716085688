"""Unit tests of the small UVF modules: codec, ranges, RTO, congestion, names, progress."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import random
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgenet.rudp import packet as pk
from edgenet.rudp.congestion import CongestionConfig, CongestionController
from edgenet.rudp.names import (
    NameRefused,
    check_component,
    is_temp_name,
    numbered_names,
    saved_name,
    temp_name,
)
from edgenet.rudp.progress import ProgressBar, format_eta, render
from edgenet.rudp.rangeset import RangeSet, RangeSetFull
from edgenet.rudp.recovery import RtoConfig, RttEstimator, SentChunks

# -- packet ----------------------------------------------------------------------------------------


def test_data_header_fits_mtu() -> None:
    datagram = pk.encode_data(pk.Data(1, 2, 3, b"x" * 1400))
    assert len(datagram) == 1420 <= pk.MTU_PAYLOAD_IPV4
    assert pk.DATA_HEADER_SIZE == 20


@pytest.mark.parametrize(
    "packet",
    [
        pk.Offer(2**64 - 1, 4 * 2**30, 1400, bytes(range(32)), "alpha", "vidéo.mp4", 123),
        pk.Accept(5, 6000, 99),
        pk.Data(5, 7, 2**32 - 1, b"payload"),
        pk.Ack(5, 100, 6100, 42, 17, ((105, 110), (200, 201), (300, 5000))),
        pk.Ack(5, 0, 10, 0, 0, ()),
        pk.Fin(5, 77),
        pk.Done(5, "alpha_video (1).mp4"),
        pk.Close(5),
        pk.Abort(5, "too_large", "the file is 10 bytes; at most 5"),
    ],
)
def test_round_trip(packet: pk.Packet) -> None:
    assert pk.decode(pk.encode(packet)) == packet


def test_ack_ranges_truncated_to_fit() -> None:
    ranges = tuple((i * 1000, i * 1000 + 500) for i in range(1, 1000))
    data = pk.encode_ack(pk.Ack(1, 0, 10**6, 0, 0, ranges))
    assert len(data) <= pk.MAX_CONTROL_SIZE
    decoded = pk.decode(data)
    assert isinstance(decoded, pk.Ack)
    assert 0 < len(decoded.ranges) <= pk.MAX_ACK_RANGES
    assert decoded.ranges == ranges[: len(decoded.ranges)]  # lowest ranges kept


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "malformed"),
        (b"XX\x01\x03" + bytes(8), "malformed"),
        (b"UV\x02\x03" + bytes(8), "version"),
        (b"UV\x01\x63" + bytes(8), "malformed"),
        (b"UV\x01\x03" + bytes(8), "malformed"),  # DATA without chunk index
        (b"UV\x01\x02" + bytes(9), "malformed"),  # ACCEPT of the wrong length
        (pk.encode_offer(pk.Offer(1, 1, 1400, bytes(32), "a", "b", 0)) + b"!", "malformed"),
        (pk.encode_ack(pk.Ack(1, 0, 1, 0, 0, ((3, 4),)))[:-1], "malformed"),
    ],
)
def test_malformed_datagrams_raise(data: bytes, reason: str) -> None:
    with pytest.raises(pk.PacketError) as info:
        pk.decode(data)
    assert info.value.reason == reason


@given(st.binary(max_size=200))
def test_decode_never_crashes(data: bytes) -> None:
    # PacketError is the one allowed answer to garbage; anything else fails the test.
    with contextlib.suppress(pk.PacketError):
        pk.decode(b"UV\x01" + data)


# -- rangeset --------------------------------------------------------------------------------------


def test_rangeset_add_reports_new_parts_and_merges() -> None:
    rs = RangeSet()
    assert rs.add(10, 20) == [(10, 20)]
    assert rs.add(30, 40) == [(30, 40)]
    assert rs.add(15, 35) == [(20, 30)]
    assert list(rs) == [(10, 40)]
    assert rs.add(40, 41) == [(40, 41)]  # touching ranges merge
    assert rs.add(5, 50) == [(5, 10), (41, 50)]
    assert list(rs) == [(5, 50)] and 5 in rs and 49 in rs and 50 not in rs
    assert rs.add(7, 9) == []


def test_rangeset_remove_below_and_pop_prefix() -> None:
    rs = RangeSet()
    rs.add(3, 5)
    rs.add(8, 12)
    rs.remove_below(9)
    assert list(rs) == [(9, 12)]
    assert rs.pop_prefix(8) == 8
    assert rs.pop_prefix(9) == 12 and not rs


def test_rangeset_bound() -> None:
    rs = RangeSet(max_ranges=2)
    rs.add(0, 1)
    rs.add(2, 3)
    rs.add(1, 2)  # merging is always allowed
    rs.add(5, 6)
    with pytest.raises(RangeSetFull):
        rs.add(8, 9)


@given(st.lists(st.tuples(st.integers(0, 200), st.integers(0, 30)), max_size=40))
def test_rangeset_matches_a_set(ops: list[tuple[int, int]]) -> None:
    rs = RangeSet()
    model: set[int] = set()
    for start, length in ops:
        new = rs.add(start, start + length)
        added = {i for s, e in new for i in range(s, e)}
        assert added == set(range(start, start + length)) - model
        model |= added
    assert {i for s, e in rs for i in range(s, e)} == model
    assert rs.count() == len(model)
    starts = [s for s, _ in rs]
    assert starts == sorted(starts)


# -- recovery --------------------------------------------------------------------------------------


def test_rto_initial_and_first_sample() -> None:
    rtt = RttEstimator(RtoConfig(initial_rto=1.0, min_rto=0.2, max_rto=4.0))
    assert rtt.rto == 1.0
    rtt.on_sample(0.1)
    assert rtt.srtt == pytest.approx(0.1)
    assert rtt.rttvar == pytest.approx(0.05)
    assert rtt.rto == pytest.approx(0.3)  # 0.1 + 4 * 0.05


def test_rto_rfc6298_update() -> None:
    rtt = RttEstimator(RtoConfig(min_rto=0.0))
    rtt.on_sample(0.1)
    rtt.on_sample(0.3)
    # RTTVAR = 3/4 * 0.05 + 1/4 * |0.1 - 0.3| = 0.0875; SRTT = 7/8 * 0.1 + 1/8 * 0.3 = 0.125
    assert rtt.rttvar == pytest.approx(0.0875)
    assert rtt.srtt == pytest.approx(0.125)
    assert rtt.rto == pytest.approx(0.125 + 4 * 0.0875)


def test_rto_bounds_and_backoff() -> None:
    rtt = RttEstimator(RtoConfig(initial_rto=1.0, min_rto=0.2, max_rto=4.0))
    rtt.on_sample(0.001)
    assert rtt.rto == 0.2  # min bound
    expected = [0.4, 0.8, 1.6, 3.2, 4.0, 4.0]
    for value in expected:
        rtt.on_timeout()
        assert rtt.rto == pytest.approx(value)
    rtt.on_progress()
    assert rtt.rto == 0.2


def test_sender_rto_deadlines_exact() -> None:
    """The sender's retransmission timer: armed at send + RTO, doubled on every expiry."""
    import hashlib

    from edgenet.rudp.sender import Sender, SenderConfig

    data = bytes(5000)
    s = Sender(
        transfer_id=1,
        peer=("p", 1),
        sender_name="a",
        filename="f",
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        now=0.0,
        config=SenderConfig(
            chunk_size=1000,
            idle_timeout=100.0,
            rto=RtoConfig(initial_rto=1.0, min_rto=0.2, max_rto=4.0),
        ),
    )
    assert s.get_timer() == 0.0
    assert s.wanted_reads() == [(0, 5000)]  # the whole (small) file, asked for once
    assert s.wanted_reads() == []
    s.supply(0, data)
    assert len(s.datagrams_to_send(0.0)) == 1  # OFFER
    assert s.get_timer() == 1.0
    s.handle_timer(1.0)
    assert len(s.datagrams_to_send(1.0)) == 1  # OFFER again
    assert s.get_timer() == pytest.approx(1.0 + 2.0)  # backed off
    s.receive_datagram(pk.encode_accept(pk.Accept(1, 100, 1_000_000)), ("p", 1), 1.1)
    assert s.rtt.srtt == pytest.approx(0.1)
    out = s.datagrams_to_send(1.1)
    assert len(out) == 5
    rto = s.rtt.rto
    assert rto == pytest.approx(max(0.2, 0.1 + 4 * 0.05))
    assert s.get_timer() == pytest.approx(1.1 + rto)
    s.handle_timer(1.1 + rto)
    assert len(s.datagrams_to_send(1.1 + rto)) == 2  # first expiry: a probe of the oldest two
    assert s.retransmissions == 2
    t = 1.1 + rto + 2 * rto
    assert s.get_timer() == pytest.approx(t)  # backed off
    window = s.cc.window
    s.handle_timer(t)
    assert len(s.datagrams_to_send(t)) == 5  # second expiry: everything unacknowledged
    assert s.retransmissions == 7
    assert s.cc.window < window or s.cc.window == s.cc._config.min_window
    assert s.get_timer() == pytest.approx(t + 4 * rto)


def test_loss_detection_packet_and_time_thresholds() -> None:
    rtt = RttEstimator()
    rtt.on_sample(0.1)
    sent = SentChunks()
    for i in range(6):
        sent.on_sent(i, i, now=i * 0.01)
    sent.on_acked(4)  # pn 4 acknowledged: pn 0 and 1 are >= 3 older -> lost
    lost, next_check = sent.detect_lost(0.06, rtt)
    assert lost == [0, 1]
    # pn 2 and 3 wait for the time threshold: 9/8 * srtt after their send time.
    assert next_check == pytest.approx(0.02 + 9 / 8 * 0.1)
    lost, _ = sent.detect_lost(0.02 + 9 / 8 * 0.1, rtt)
    assert lost == [2]
    assert 5 in sent and 3 in sent


def test_spurious_loss_widens_thresholds() -> None:
    sent = SentChunks()
    sent.on_spurious_loss()
    assert sent.packet_threshold == 6 and sent.time_threshold == pytest.approx(1.375)
    for _ in range(20):
        sent.on_spurious_loss()
    assert sent.packet_threshold == 64 and sent.time_threshold == 2.0


# -- congestion ------------------------------------------------------------------------------------


def test_window_halves_on_heavy_loss_and_grows_on_progress() -> None:
    cc = CongestionController(CongestionConfig(initial_window=100, min_window=8))
    pn = 0
    cc.on_window_limited()
    cc.on_acked(100, pn, next_pn=100)  # round 0 ends at once: slow start doubles
    assert cc.window == 200
    cc.on_lost(50)
    cc.on_window_limited()
    cc.on_acked(150, 100, next_pn=400)  # 25 % loss > 10 % tolerance: halve
    assert cc.window == 100 and not cc.in_slow_start
    cc.on_lost(5)
    cc.on_window_limited()
    cc.on_acked(95, 400, next_pn=600)  # 5 % loss is tolerated: grow by 1/8 of acked
    assert cc.window == 100 + int(95 * 0.125)
    for _ in range(20):
        cc.on_timeout()
    assert cc.window == 8


def test_pacing_budget_is_bounded_burst() -> None:
    cc = CongestionController(CongestionConfig(initial_window=100, min_burst=16, max_burst=64))
    assert cc.send_budget(0.0, srtt=0.01) == 16
    cc.on_sent(16)
    assert cc.send_budget(0.0, srtt=0.01) == 0
    rate = cc.pacing_rate(0.01)  # 2 * 100 / 0.01 in slow start
    assert rate == pytest.approx(20_000)
    assert cc.next_send_time(0.0) == pytest.approx(1 / rate)
    assert cc.send_budget(10.0, srtt=0.01) == 40  # 2 ms of the rate, within [16, 64]


# -- names -----------------------------------------------------------------------------------------


def test_saved_name_and_refusals() -> None:
    assert saved_name("alpha", "video.mp4") == "alpha_video.mp4"
    for bad in [
        "",
        ".",
        "..",
        "a/b",
        "a\\b",
        "/abs",
        "tab\there",
        "nul\x00",
        "del\x7f",
        "C:x",
        "é" * 128,
    ]:
        with pytest.raises(NameRefused):
            check_component(bad)
    with pytest.raises(NameRefused):
        saved_name("alpha", "x" * 250)
    assert check_component("ünïcode ok.txt") == "ünïcode ok.txt"


def test_numbered_names() -> None:
    names = numbered_names("alpha_video.mp4")
    assert [next(names) for _ in range(3)] == [
        "alpha_video.mp4",
        "alpha_video (1).mp4",
        "alpha_video (2).mp4",
    ]
    assert list(numbered_names("alpha_.bashrc"))[1] == "alpha_ (1).bashrc"
    assert list(numbered_names("alpha_noext"))[1] == "alpha_noext (1)"
    long_name = "a" * 252
    assert list(numbered_names(long_name)) == [long_name]  # no numbered variant fits 255 bytes
    assert temp_name(255) == ".uvf-00000000000000ff.part"


_NAME_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=40)


@given(_NAME_TEXT, _NAME_TEXT, st.integers(0, 2**64 - 1))
def test_no_saved_name_looks_like_a_temp_name(sender: str, filename: str, tid: int) -> None:
    """A received file can never be taken for a temp file (and swept away at start-up)."""
    assert is_temp_name(temp_name(tid))
    try:
        base = saved_name(sender, filename)
    except NameRefused:
        return
    for candidate in itertools.islice(numbered_names(base), 3):
        assert not is_temp_name(candidate)


def test_temp_name_pattern_is_exact() -> None:
    # The names of issue 12 item 14: sender ".uvf-x", file "y.part".
    assert saved_name(".uvf-x", "y.part") == ".uvf-x_y.part"
    for name in (".uvf-x_y.part", ".uvf-0123456789ABCDEF.part", ".uvf-0123456789abcde.part",
                 ".uvf-0123456789abcdef.part.txt", "x.uvf-0123456789abcdef.part"):
        assert not is_temp_name(name), name
    assert is_temp_name(".uvf-0123456789abcdef.part")


def test_stale_sweep_removes_old_temp_files_only(tmp_path: Path) -> None:
    from edgenet.rudp.files import remove_stale_parts

    old = time.time() - 3600
    stale, fresh = tmp_path / temp_name(1), tmp_path / temp_name(2)
    received = tmp_path / ".uvf-x_y.part"
    for path in (stale, fresh, received):
        path.write_bytes(b"x")
    os.utime(stale, (old, old))
    os.utime(received, (old, old))
    assert remove_stale_parts(tmp_path, 120.0) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fresh.name, received.name])


# -- progress --------------------------------------------------------------------------------------


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_render() -> None:
    line = render("video.mp4", 50, 100, 10.0, width=10)
    assert line.startswith("video.mp4 [#####.....]  50%")
    assert "10 B/s" in line and "ETA 0:05" in line
    assert format_eta(3725) == "1:02:05" and format_eta(None) == "--:--"


def test_progress_only_on_tty_after_one_second() -> None:
    plain = io.StringIO()
    bar = ProgressBar(plain, "f", 1000, start=0.0)
    for t in range(30):
        bar.update(t * 10, t * 0.1)
    bar.finish(1000, 3.0)
    assert plain.getvalue() == ""

    tty = _Tty()
    bar = ProgressBar(tty, "f", 1000, start=0.0)
    bar.update(100, 0.5)
    assert tty.getvalue() == ""  # under a second: nothing yet
    bar.update(500, 1.5)
    assert "50%" in tty.getvalue() and tty.getvalue().startswith("\r")
    bar.finish(1000, 2.0)
    assert tty.getvalue().endswith("\n") and "100%" in tty.getvalue()

    quick = _Tty()
    bar = ProgressBar(quick, "f", 1000, start=0.0)
    bar.update(1000, 0.3)
    bar.finish(1000, 0.3)
    assert quick.getvalue() == ""


def test_random_ack_ranges_round_trip() -> None:
    rng = random.Random(3)
    for _ in range(50):
        cum = rng.randrange(0, 1000)
        ranges = []
        at = cum
        for _ in range(rng.randrange(0, 30)):
            start = at + rng.randrange(1, 50)
            end = start + rng.randrange(1, 50)
            ranges.append((start, end))
            at = end
        ack = pk.Ack(9, cum, cum + 100, 1, 2, tuple(ranges))
        assert pk.decode(pk.encode_ack(ack)) == ack


# -- send buffer (the sender's file bytes) ---------------------------------------------------------


def test_send_buffer_reads_ahead_in_blocks_and_holds_what_is_unacknowledged() -> None:
    from edgenet.rudp.sendbuffer import SendBuffer

    buf = SendBuffer(10_000, 100, block_bytes=1000, read_ahead=2, buffer_bytes=4000)
    assert buf.max_blocks == 4
    assert buf.wanted(0) == [(0, 3000)]  # the block of chunk 0 and two ahead, in one read
    assert buf.wanted(0) == []  # asked once
    assert buf.chunk(0) is None and buf.blocked(0)
    assert buf.supply(0, bytes(range(256)) * 11 + bytes(184))
    assert bytes(buf.chunk(12) or b"") == (bytes(range(256)) * 11)[1200:1300]
    assert buf.wanted(25) == [(3000, 1000)]  # block 3: the bound of 4 blocks is reached
    assert buf.wanted(35) == []  # block 4 would make 5 held: new chunks wait
    buf.release_below(10)  # block 0 acknowledged
    assert buf.chunk(5) is None and buf.wanted(35) == [(4000, 1000)]
    assert not buf.supply(4000, bytes(999))  # short: the file shrank
    assert buf.supply(3000, bytes(1000)) and buf.held_bytes == 3000


def test_sender_sends_no_data_before_its_bytes_are_supplied() -> None:
    import hashlib

    from edgenet.rudp.sender import Sender, SenderConfig

    data = bytes(range(256)) * 40
    s = Sender(transfer_id=1, peer=("p", 1), sender_name="a", filename="f", size=len(data),
               sha256=hashlib.sha256(data).digest(), now=0.0,
               config=SenderConfig(chunk_size=1000, read_block=4000, read_ahead_blocks=0))
    assert s.wanted_reads() == [(0, 4000)]
    assert len(s.datagrams_to_send(0.0)) == 1  # the OFFER needs no file bytes
    s.receive_datagram(pk.encode_accept(pk.Accept(1, 100, 0)), ("p", 1), 0.01)
    assert s.datagrams_to_send(0.01) == [] and s.get_timer() == pytest.approx(10.01)  # idle only
    s.supply(0, data[:4000])
    out = [pk.decode(d) for d in s.datagrams_to_send(0.01)]
    assert [p.index for p in out if isinstance(p, pk.Data)] == [0, 1, 2, 3]
    assert s.wanted_reads() == [(4000, 4000)]
    s.supply(4000, data[4000:6000])  # short read: the file changed
    assert s.state.value == "failed"
    assert isinstance(pk.decode(s.datagrams_to_send(0.02)[0]), pk.Abort)


def test_importing_the_cores_loads_no_asyncio_socket_or_structlog() -> None:
    """In a fresh interpreter: the sans-I/O modules stay free of I/O frameworks."""
    import subprocess
    import sys

    cores = ["packet", "rangeset", "recovery", "congestion", "sendbuffer", "sender", "receiver",
             "names", "admission", "fileops", "records", "reports", "transfers", "events",
             "options", "natpacket", "registration", "paths"]
    code = (
        "import sys\n"
        + "".join(f"import edgenet.rudp.{m}\n" for m in cores)
        + "print(sorted(m for m in ('asyncio', 'socket', 'selectors', 'structlog') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "[]"
    # ...and the adapter, which does import them, is where the check would see them.
    adapter = ("import sys, edgenet.rudp.endpoint; "
               "print('asyncio' in sys.modules, 'structlog' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", adapter], capture_output=True, text=True,
                         check=True, timeout=60)
    assert out.stdout.strip() == "True True"


def test_sender_held_back_by_the_limit_probes_for_a_lost_window_update() -> None:
    """All sent chunks acknowledged, the receiver's limit holds the rest back: if the ACK
    that raises the limit is lost, a resent last chunk (TCP's persist probe) asks again."""
    import hashlib

    from edgenet.rudp.sender import Sender, SenderConfig

    data = bytes(100 * 100)
    s = Sender(transfer_id=3, peer=("p", 1), sender_name="a", filename="f", size=len(data),
               sha256=hashlib.sha256(data).digest(), now=0.0,
               config=SenderConfig(chunk_size=100, idle_timeout=100.0))
    for offset, length in s.wanted_reads():
        s.supply(offset, data[offset : offset + length])
    s.datagrams_to_send(0.0)  # OFFER
    s.receive_datagram(pk.encode_accept(pk.Accept(3, 16, 0)), ("p", 1), 0.01)
    sent = [pk.decode(d) for d in s.datagrams_to_send(0.01)]
    assert [p.index for p in sent if isinstance(p, pk.Data)] == list(range(16))
    s.receive_datagram(pk.encode_ack(pk.Ack(3, 16, 16, 0, 0, ())), ("p", 1), 0.02)
    assert s.datagrams_to_send(0.02) == []
    deadline = s.get_timer()
    assert deadline is not None and deadline < 1.0  # the probe, not the idle timeout
    s.handle_timer(deadline)
    (probe,) = [pk.decode(d) for d in s.datagrams_to_send(deadline)]
    assert isinstance(probe, pk.Data) and probe.index == 15 and probe.payload == data[1500:1600]
    assert s.retransmissions == 0  # not counted as a loss
    s.receive_datagram(pk.encode_ack(pk.Ack(3, 16, 40, 0, 0, ())), ("p", 1), deadline + 0.01)
    more = [pk.decode(d) for d in s.datagrams_to_send(deadline + 0.01)]
    indexes = [p.index for p in more if isinstance(p, pk.Data)]
    assert indexes and indexes == list(range(16, 16 + len(indexes)))  # new data flows again
