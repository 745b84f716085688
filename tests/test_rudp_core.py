"""Sender and receiver state machines joined by a simulated channel with a fake clock."""

from __future__ import annotations

import hashlib
import heapq
import io
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from edgenet.rudp import packet as pk
from edgenet.rudp.events import DataComplete, TransferCompleted, TransferFailed
from edgenet.rudp.receiver import Receiver, ReceiverConfig, ReceiverState
from edgenet.rudp.sender import Sender, SenderConfig, SenderState

SENDER_ADDR = ("192.0.2.1", 1000)
RECEIVER_ADDR = ("192.0.2.2", 2000)


@dataclass
class Channel:
    """One-way delay, random loss, duplication and reordering, all from a seeded RNG."""

    rng: random.Random
    delay: float = 0.005
    loss: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    rate: float = 20_000.0  # datagrams per second each way (a bottleneck queue)
    queue_limit: int = 2000
    queue: list[tuple[float, int, str, bytes]] = field(default_factory=list)
    next_free: dict[str, float] = field(default_factory=dict)
    seq: int = 0
    sent: int = 0
    dropped: int = 0

    def send(self, now: float, dest: str, datagram: bytes) -> None:
        self.sent += 1
        start = max(now, self.next_free.get(dest, now))
        if (start - now) * self.rate > self.queue_limit:
            self.dropped += 1  # tail drop at the bottleneck
            return
        self.next_free[dest] = start + 1 / self.rate
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        for _ in range(copies):
            extra = self.rng.uniform(0, 2 * self.delay) if self.rng.random() < self.reorder else 0.0
            self.seq += 1
            heapq.heappush(self.queue, (start + self.delay + extra, self.seq, dest, datagram))


def make_data(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def run_transfer(
    data: bytes,
    channel: Channel,
    *,
    chunk: int = 1000,
    max_time: float = 120.0,
    sender_config: SenderConfig | None = None,
    receiver_config: ReceiverConfig | None = None,
    kill_receiver_at: float | None = None,
    held: int = 0,
    to_sender: Callable[[bytes], bytes | None] | None = None,
) -> tuple[Sender, Receiver | None, io.BytesIO, list[object], float]:
    """``held``: the receiver resumes with the first ``held`` bytes already in its file.
    ``to_sender`` may change or drop (None) each datagram on its way to the sender."""
    now = 0.0
    sink = io.BytesIO(data[:held])
    sender = Sender(
        transfer_id=42,
        peer=RECEIVER_ADDR,
        sender_name="alpha",
        filename="f.bin",
        size=len(data),
        sha256=hashlib.sha256(data).digest(),
        now=now,
        config=sender_config or SenderConfig(chunk_size=chunk),
    )
    receiver: Receiver | None = None
    events: list[object] = []
    steps = 0

    def serve_io() -> None:
        """The adapter's part: read what the sender wants, write what the receiver hands out."""
        for offset, length in sender.wanted_reads():
            sender.supply(offset, data[offset : offset + length])
        if receiver is None:
            return
        for offset, block in receiver.take_writes():
            sink.seek(offset)
            sink.write(block)
            receiver.writes_done(len(block))
        while (ev := receiver.next_event()) is not None:
            events.append(ev)
            if isinstance(ev, DataComplete):
                receiver.confirm_saved("alpha_f.bin", now)

    def flush() -> None:
        serve_io()
        for d in sender.datagrams_to_send(now):
            channel.send(now, "r", d)
        if receiver is not None and not (kill_receiver_at is not None and now >= kill_receiver_at):
            for d in receiver.datagrams_to_send(now):
                channel.send(now, "s", d)

    flush()
    while steps < 2_000_000 and now < max_time:
        steps += 1
        if sender.finished and (receiver is None or receiver.finished):
            break
        timers = [
            t
            for t in (sender.get_timer(), receiver.get_timer() if receiver else None)
            if t is not None
        ]
        candidates = timers + ([channel.queue[0][0]] if channel.queue else [])
        if not candidates:
            break
        now = max(now, min(candidates))
        while channel.queue and channel.queue[0][0] <= now:
            _, _, dest, d = heapq.heappop(channel.queue)
            if dest == "s":
                changed = d if to_sender is None else to_sender(d)
                if changed is not None:
                    sender.receive_datagram(changed, RECEIVER_ADDR, now)
            elif kill_receiver_at is not None and now >= kill_receiver_at:
                pass  # the receiver is gone: datagrams vanish
            elif receiver is None:
                offer = pk.decode(d)
                assert isinstance(offer, pk.Offer)
                receiver = Receiver(
                    offer,
                    peer=SENDER_ADDR,
                    now=now,
                    config=receiver_config or ReceiverConfig(window_bytes=512 * chunk),
                )
                if held:
                    receiver.resume_from(held, hashlib.sha256(data[:held]))
            else:
                receiver.receive_datagram(d, SENDER_ADDR, now)
        for core in (sender, receiver):
            if core is not None:
                t = core.get_timer()
                if t is not None and t <= now:
                    core.handle_timer(now)
        while (ev := sender.next_event()) is not None:
            events.append(ev)
        flush()
    return sender, receiver, sink, events, now


@pytest.mark.parametrize(
    ("loss", "dup", "reorder", "seed"),
    [
        (0.0, 0.0, 0.0, 1),
        (0.05, 0.0, 0.0, 2),
        (0.20, 0.0, 0.0, 3),
        (0.05, 0.05, 0.2, 4),
        (0.0, 0.1, 0.3, 5),
    ],
)
def test_transfer_arrives_intact(loss: float, dup: float, reorder: float, seed: int) -> None:
    data = make_data(1_500_000 + 123, seed)
    channel = Channel(random.Random(seed), loss=loss, duplicate=dup, reorder=reorder)
    sender, receiver, sink, events, now = run_transfer(data, channel)
    assert receiver is not None
    assert sender.state is SenderState.DONE, events
    assert receiver.state is ReceiverState.DONE
    assert sink.getvalue() == data
    assert any(isinstance(e, TransferCompleted) for e in events)
    chunks = sender.total_chunks
    # Loss applies to both directions; lost chunks plus a margin for ACK loss and timeouts.
    implied = chunks * loss / (1 - loss)
    assert sender.retransmissions <= 3 * implied + 0.05 * chunks + 20, sender.retransmissions
    assert now < 60


def test_empty_file() -> None:
    sender, receiver, sink, _, _ = run_transfer(b"", Channel(random.Random(1)))
    assert sender.state is SenderState.DONE
    assert receiver is not None and receiver.state is ReceiverState.DONE
    assert sink.getvalue() == b""


def test_receiver_window_bounds_buffer() -> None:
    data = make_data(400_000)
    channel = Channel(random.Random(7), loss=0.1, reorder=0.3)
    _, receiver, sink, _, _ = run_transfer(
        data, channel, receiver_config=ReceiverConfig(window_bytes=16 * 1000)
    )
    assert receiver is not None and receiver.window == 16
    assert receiver.dropped_window == 0  # the sender never sent past the advertised limit
    assert sink.getvalue() == data


def test_silent_receiver_fails_sender_within_idle_timeout() -> None:
    data = make_data(2_000_000)
    channel = Channel(random.Random(3))
    sender, receiver, _, events, now = run_transfer(
        data,
        channel,
        kill_receiver_at=0.03,
        sender_config=SenderConfig(chunk_size=1000, idle_timeout=3.0),
        receiver_config=ReceiverConfig(window_bytes=512_000, idle_timeout=3.0),
    )
    failures = [e for e in events if isinstance(e, TransferFailed)]
    assert sender.state is SenderState.FAILED
    assert failures and failures[0].code == "timeout"
    assert now <= 0.03 + 3.0 + 0.01
    assert receiver is not None and receiver.state is not ReceiverState.DONE


def test_silent_sender_fails_receiver() -> None:
    data = make_data(100_000)
    receiver = Receiver(
        pk.Offer(9, len(data), 1000, hashlib.sha256(data).digest(), "a", "b", 0),
        peer=SENDER_ADDR,
        now=0.0,
        config=ReceiverConfig(idle_timeout=2.0),
    )
    assert receiver.get_timer() == 2.0
    receiver.handle_timer(1.999)
    assert receiver.state is ReceiverState.RECEIVING
    receiver.handle_timer(2.0)
    state: ReceiverState = receiver.state  # (mypy would keep the narrowing from above)
    assert state is ReceiverState.FAILED
    event = receiver.next_event()
    assert isinstance(event, TransferFailed) and event.code == "timeout" and not event.by_peer
    out = receiver.datagrams_to_send(2.0)
    assert isinstance(pk.decode(out[0]), pk.Abort)


def test_hash_mismatch_fails_receiver() -> None:
    data = make_data(5000)
    receiver = Receiver(
        pk.Offer(9, len(data), 1000, b"\0" * 32, "a", "b", 0),
        peer=SENDER_ADDR,
        now=0.0,
    )
    for i in range(5):
        d = pk.encode_data(pk.Data(9, i, 0, data[i * 1000 : (i + 1) * 1000]))
        receiver.receive_datagram(d, SENDER_ADDR, 0.1)
    assert receiver.state is ReceiverState.FAILED
    event = receiver.next_event()
    assert isinstance(event, TransferFailed) and event.code == "hash_mismatch"


def test_wrong_peer_and_garbage_are_counted() -> None:
    data = make_data(3000)
    receiver = Receiver(
        pk.Offer(9, len(data), 1000, hashlib.sha256(data).digest(), "a", "b", 0),
        peer=SENDER_ADDR,
        now=0.0,
    )
    receiver.receive_datagram(pk.encode_data(pk.Data(9, 0, 0, data[:1000])), ("6.6.6.6", 1), 0.1)
    receiver.receive_datagram(b"UV\x01\x03garbage", SENDER_ADDR, 0.1)
    receiver.receive_datagram(pk.encode_data(pk.Data(9, 0, 0, b"short")), SENDER_ADDR, 0.1)
    assert receiver.dropped_wrong_peer == 1
    assert receiver.dropped_malformed == 2
    assert receiver.received_bytes == 0
