"""Resumable UVF in the sans-I/O cores: a receiver that holds the start of the file, a sender
that skips it, the version-2 ACCEPT on the wire, and peers that know no resume."""

from __future__ import annotations

import hashlib
import random

import pytest

from edgenet.rudp import packet as pk
from edgenet.rudp.events import HeldRangesIgnored, TransferCompleted
from edgenet.rudp.receiver import MAX_HELD_REPEATS, Receiver, ReceiverState
from edgenet.rudp.sender import SenderState
from tests.test_rudp_core import SENDER_ADDR, Channel, make_data, run_transfer

CHUNK = 1000


def only_version_1(datagram: bytes) -> bytes | None:
    """What a version-1 sender's endpoint lets through: version-2 datagrams are dropped."""
    return None if datagram[2] != pk.VERSION else datagram


@pytest.mark.parametrize(("loss", "seed"), [(0.0, 1), (0.05, 2)])
def test_a_resumed_transfer_sends_only_what_the_receiver_lacks(loss: float, seed: int) -> None:
    data = make_data(1_000_000 + 77, seed)
    held = 600 * CHUNK
    sender, receiver, sink, events, _ = run_transfer(
        data, Channel(random.Random(seed), loss=loss), held=held)
    assert sender.state is SenderState.DONE, events
    assert receiver is not None and receiver.state is ReceiverState.DONE
    assert sink.getvalue() == data
    assert sender.resumed_bytes == held == receiver.resumed_bytes
    assert sender.held_chunks == 600
    # Only the missing 400,077 bytes went out (plus resends under loss): nothing below held.
    assert len(data) - held <= sender.data_bytes_sent < len(data) - held + 0.3 * len(data)
    assert any(isinstance(e, TransferCompleted) for e in events)


def test_a_version_1_sender_sends_everything_and_the_file_is_still_right() -> None:
    data = make_data(300_000, 3)
    held = 120 * CHUNK
    sender, receiver, sink, events, _ = run_transfer(
        data, Channel(random.Random(3)), held=held, to_sender=only_version_1)
    assert sender.state is SenderState.DONE, events
    assert receiver is not None and receiver.state is ReceiverState.DONE
    assert sink.getvalue() == data
    assert sender.resumed_bytes == 0
    assert sender.data_bytes_sent >= len(data)  # from chunk 0, as before resume existed
    assert receiver.duplicates >= 120  # the held chunks, taken as duplicates


def test_a_lost_version_2_accept_is_repeated_when_held_chunks_arrive() -> None:
    data = make_data(300_000, 4)
    dropped: list[bytes] = []

    def lose_the_first(datagram: bytes) -> bytes | None:
        if datagram[2] == pk.RESUME_VERSION and not dropped:
            dropped.append(datagram)
            return None
        return datagram

    sender, _receiver, sink, _, _ = run_transfer(
        data, Channel(random.Random(4)), held=200 * CHUNK, to_sender=lose_the_first)
    assert dropped and sender.state is SenderState.DONE
    assert sink.getvalue() == data
    # The repeat came after the first window of chunks: most of the held part was skipped.
    assert sender.held_chunks > 0
    assert sender.data_bytes_sent < len(data)


def test_held_ranges_beyond_the_file_are_ignored_and_the_transfer_starts_over() -> None:
    data = make_data(50_000, 5)

    def absurd(datagram: bytes) -> bytes | None:
        p = pk.decode(datagram)
        if isinstance(p, pk.Accept) and p.held:
            return pk.encode_accept(pk.Accept(p.transfer_id, p.limit, p.timestamp_echo,
                                              ((0, 10), (40, 10**9))))
        return datagram

    sender, _receiver, sink, events, _ = run_transfer(
        data, Channel(random.Random(5)), held=10 * CHUNK, to_sender=absurd)
    assert sender.state is SenderState.DONE
    ignored = [e for e in events if isinstance(e, HeldRangesIgnored)]
    assert len(ignored) == 1 and "chunks up to 1000000000 of a file of 50" in ignored[0].reason
    assert sender.resumed_bytes == 0 and sender.data_bytes_sent >= len(data)
    assert sink.getvalue() == data


def test_the_receiver_lists_its_held_prefix_in_a_version_2_accept() -> None:
    data = make_data(10_500, 6)
    receiver = Receiver(pk.Offer(7, len(data), CHUNK, hashlib.sha256(data).digest(), "a", "b", 5),
                        peer=SENDER_ADDR, now=0.0)
    receiver.resume_from(4 * CHUNK, hashlib.sha256(data[: 4 * CHUNK]))
    v2, v1 = receiver.datagrams_to_send(0.0)
    assert (v2[2], v1[2]) == (pk.RESUME_VERSION, pk.VERSION)
    first = pk.decode(v2)
    assert isinstance(first, pk.Accept) and first.held == ((0, 4),)
    assert pk.decode(v1) == pk.Accept(7, first.limit, 5)
    # Held chunks sent anyway are duplicates; each repeats the list, a bounded number of times.
    repeats = 0
    for _ in range(3 * MAX_HELD_REPEATS):
        chunk = pk.encode_data(pk.Data(7, 1, 9, data[CHUNK : 2 * CHUNK]))
        receiver.receive_datagram(chunk, SENDER_ADDR, 0.1)
        repeats += sum(d[2] == pk.RESUME_VERSION for d in receiver.datagrams_to_send(0.1))
    assert repeats == MAX_HELD_REPEATS
    assert receiver.written_bytes == 4 * CHUNK and receiver.resumed_bytes == 4 * CHUNK


def test_a_resumed_file_whose_digest_does_not_add_up_fails_with_hash_mismatch() -> None:
    data = make_data(5_000, 7)
    receiver = Receiver(pk.Offer(8, len(data), CHUNK, hashlib.sha256(data).digest(), "a", "b", 0),
                        peer=SENDER_ADDR, now=0.0)
    receiver.resume_from(3 * CHUNK, hashlib.sha256(b"x" * 3 * CHUNK))  # a changed partial
    for i in (3, 4):
        d = pk.encode_data(pk.Data(8, i, 0, data[i * CHUNK : (i + 1) * CHUNK]))
        receiver.receive_datagram(d, SENDER_ADDR, 0.1)
    for offset, block in receiver.take_writes():
        receiver.writes_done(len(block))
    assert receiver.state is ReceiverState.FAILED
    event = receiver.next_event()
    assert event is not None and getattr(event, "code", "") == "hash_mismatch"


def test_resume_from_checks_its_arguments() -> None:
    data = make_data(5_500, 8)
    offer = pk.Offer(9, len(data), CHUNK, hashlib.sha256(data).digest(), "a", "b", 0)
    for bad in (0, 1500, 6000):
        with pytest.raises(ValueError):
            Receiver(offer, peer=SENDER_ADDR, now=0.0).resume_from(bad, hashlib.sha256())
    whole = Receiver(offer, peer=SENDER_ADDR, now=0.0)
    whole.resume_from(len(data), hashlib.sha256(data))  # all of it: verified at once
    assert whole.state is ReceiverState.VERIFYING


@pytest.mark.parametrize("held", [((0, 3),), ((0, 3), (5, 9), (100, 4000))])
def test_version_2_accept_round_trips(held: tuple[tuple[int, int], ...]) -> None:
    p = pk.Accept(1, 77, 12345, held)
    data = pk.encode_accept(p)
    assert data[2] == pk.RESUME_VERSION and len(data) < pk.MAX_CONTROL_SIZE
    assert pk.decode(data) == p
    assert pk.peek(data) == (pk.PacketType.ACCEPT, 1)


def test_malformed_version_2_accepts_are_refused() -> None:
    good = pk.encode_accept(pk.Accept(1, 77, 0, ((0, 3),)))
    too_many = bytearray(good[:20]) + (pk.MAX_HELD_RANGES + 1).to_bytes(2, "big")
    too_many += b"\x00\x01" * (pk.MAX_HELD_RANGES + 1)
    empty_range = good[:22] + b"\x00\x00"
    for data in (good + b"!", good[:-1], bytes(too_many), empty_range, good[:21]):
        with pytest.raises(pk.PacketError):
            pk.decode(data)
    other_type = b"UV\x02\x01" + bytes(60)  # only ACCEPT has a version 2
    with pytest.raises(pk.PacketError) as exc:
        pk.peek(other_type)
    assert exc.value.reason == "version"
