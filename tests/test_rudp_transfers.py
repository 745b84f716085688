"""The endpoint's sans-I/O core (TransferSet): two of them joined by an in-memory network with
a fake clock, their file operations carried out on an in-memory disk that can be slow or fail.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edgenet.rudp import TransferError, TransferEvent, TransferOptions, names
from edgenet.rudp import fileops as fo
from edgenet.rudp import packet as pk
from edgenet.rudp.receiver import Receiver, ReceiverConfig
from edgenet.rudp.records import MAX_RECENT_IDS, LogRecord
from edgenet.rudp.transfers import TransferSet

ALPHA = ("192.0.2.1", 1000)
BETA = ("192.0.2.2", 2000)
DATA_DIR = Path("/nonexistent/data")  # never touched: the disk below is in memory


@dataclass
class MemoryDisk:
    """Carries out file operations in memory; ``fail`` makes an operation type fail."""

    free: int | None = 10**12
    delay: float = 0.0005
    files: dict[str, bytearray] = field(default_factory=dict)
    sources: dict[int, bytes] = field(default_factory=dict)
    fail: dict[type, str] = field(default_factory=dict)
    done: list[fo.FileOp] = field(default_factory=list)
    #: Kept partials: (sender, file name) -> (SHA-256, size, bytes held).
    partials: dict[tuple[str, str], tuple[bytes, int, bytes]] = field(default_factory=dict)

    def run(self, op: fo.FileOp) -> fo.FileOpResult:
        self.done.append(op)
        if type(op) in self.fail:
            return fo.FileOpFailed(self.fail[type(op)], f"[Errno 5] {self.fail[type(op)]}")
        temp = names.temp_name(op.transfer_id)
        if isinstance(op, fo.MeasureSpace):
            return self.free
        if isinstance(op, fo.CreateTemp):
            assert op.name == temp and op.name not in self.files
            self.files[op.name] = bytearray()
        elif isinstance(op, fo.WriteBlocks):
            f = self.files[temp]
            for offset, data in op.blocks:
                assert offset == len(f)  # in order, nothing skipped
                f += data
        elif isinstance(op, fo.SaveFile):
            for candidate in names.numbered_names(op.name):
                if candidate not in self.files:
                    self.files[candidate] = self.files.pop(temp)
                    return candidate
        elif isinstance(op, fo.ReadRanges):
            src = self.sources[op.transfer_id]
            return [src[o : o + n] for o, n in op.ranges]
        elif isinstance(op, fo.Release) and op.remove_temp:
            self.files.pop(temp, None)
        elif isinstance(op, fo.ClaimPartial):
            kept = self.partials.pop((op.sender, op.filename), None)
            if kept is None or kept[:2] != (op.sha256, op.size):
                return fo.PartialClaim(0, None, "" if kept is None else "the file changed")
            held = len(kept[2]) - len(kept[2]) % op.chunk_size
            self.files[temp] = bytearray(kept[2][:held])
            return fo.PartialClaim(held, hashlib.sha256(kept[2][:held]))
        elif isinstance(op, fo.ParkPartial):
            data = bytes(self.files.pop(temp)[: op.held])
            self.partials[(op.sender, op.filename)] = (op.sha256, op.size, data)
            return fo.PartialParked(True)
        elif isinstance(op, fo.SweepPartials):
            return fo.PartialsSwept(())
        return None


@dataclass
class Side:
    core: TransferSet
    key: tuple[str, int]
    disk: MemoryDisk
    events: list[TransferEvent] = field(default_factory=list)
    logs: list[LogRecord] = field(default_factory=list)
    busy: set[int] = field(default_factory=set)  # transfer ids with an operation in flight


class World:
    """Two endpoints, one-way delay and seeded loss, and a disk per side."""

    def __init__(self, loss: float = 0.0, options: TransferOptions | None = None,
                 disk_delay: float = 0.0005, seed: int = 1) -> None:
        opts = options or TransferOptions(chunk_size=1000, window_bytes=200_000)
        self.alpha = Side(TransferSet(opts, DATA_DIR), ALPHA, MemoryDisk(delay=disk_delay))
        self.beta = Side(TransferSet(opts, DATA_DIR), BETA, MemoryDisk(delay=disk_delay))
        self.now = 0.0
        self.loss = loss
        self.rng = random.Random(seed)
        self.queue: list[tuple[float, int, Callable[[], None]]] = []
        self.seq = 0
        self.sent: dict[str, list[bytes]] = {"alpha": [], "beta": []}

    def at(self, when: float, action: Callable[[], None]) -> None:
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, action))

    def other(self, side: Side) -> Side:
        return self.beta if side is self.alpha else self.alpha

    def send(self, side: Side, name: str, data: bytes) -> int:
        tid = side.core.start_send(self.other(side).key, self.other(side).key, sender_name=name,
                                   filename="f.bin", size=len(data),
                                   sha256=hashlib.sha256(data).digest(), now=self.now)
        side.disk.sources[tid] = data
        self.transmit(side)
        return tid

    def transmit(self, side: Side) -> None:
        dest = self.other(side)
        for addr, datagrams in side.core.datagrams_to_send(self.now):
            assert addr == dest.key
            for d in datagrams:
                self.sent["alpha" if side is self.alpha else "beta"].append(d)
                if self.rng.random() >= self.loss:
                    self.at(self.now + 0.001, functools.partial(self.deliver, dest, side.key, d))
        side.events += side.core.pop_events()
        side.logs += side.core.pop_logs()
        for op in side.core.file_ops():
            assert op.transfer_id not in side.busy, "two file operations at once"
            side.busy.add(op.transfer_id)
            self.at(self.now + side.disk.delay, functools.partial(self.finish, side, op))

    def deliver(self, side: Side, source: tuple[str, int], data: bytes) -> None:
        if side is not self.alpha and side is not self.beta:
            return  # a side that was killed (restart_alpha)
        side.core.receive_datagram(data, source, source, self.now)
        self.transmit(side)

    def finish(self, side: Side, op: fo.FileOp) -> None:
        if side is not self.alpha and side is not self.beta:
            return
        side.busy.discard(op.transfer_id)
        side.core.file_op_done(op, side.disk.run(op), self.now)
        self.transmit(side)

    def run(self, until: Callable[[], bool], limit: float = 60.0) -> None:
        for _ in range(2_000_000):
            if until():
                return
            timers = [t for t in (self.alpha.core.get_timer(), self.beta.core.get_timer())
                      if t is not None]
            candidates = timers + ([self.queue[0][0]] if self.queue else [])
            if not candidates or min(candidates) > limit:
                return
            self.now = max(self.now, min(candidates))
            while self.queue and self.queue[0][0] <= self.now:
                heapq.heappop(self.queue)[2]()
            for side in (self.alpha, self.beta):
                timer = side.core.get_timer()
                if timer is not None and timer <= self.now:
                    side.core.handle_timer(self.now)
                    self.transmit(side)

    def kinds(self, side: Side) -> list[str]:
        return [e.kind for e in side.events if e.kind != "progress"]

    def settled(self) -> bool:
        """Both sides idle, every ended transfer's file released."""
        return all(not s.core.busy and s.core.running() == 0 and not s.busy
                   and (not s.disk.done
                        or isinstance(s.disk.done[-1], (fo.Release, fo.ParkPartial)))
                   for s in (self.alpha, self.beta))


def offer(tid: int, size: int = 5000, sender: str = "alpha", filename: str = "f.bin",
          chunk: int = 1000) -> bytes:
    return pk.encode_offer(pk.Offer(tid, size, chunk, bytes(32), sender, filename, 0))


def aborts(world: World, side: str) -> list[pk.Abort]:
    decoded = [pk.decode(d) for d in world.sent[side]]
    return [p for p in decoded if isinstance(p, pk.Abort)]


@pytest.mark.parametrize(("loss", "disk_delay"), [(0.0, 0.0005), (0.05, 0.0005), (0.0, 0.02)])
def test_a_file_goes_through_both_cores_and_an_in_memory_disk(loss: float,
                                                             disk_delay: float) -> None:
    world = World(loss=loss, disk_delay=disk_delay)
    data = random.Random(2).randbytes(1_234_567)
    world.send(world.alpha, "alpha", data)
    world.run(world.settled)
    assert world.beta.disk.files == {"alpha_f.bin": bytearray(data)}  # the temp file is gone
    assert world.kinds(world.alpha) == ["outgoing_started", "outgoing_done"]
    assert world.kinds(world.beta) == ["incoming_started", "incoming_done"]
    done = world.beta.events[-1]
    assert done.path == DATA_DIR / "alpha_f.bin" and done.size == len(data)
    assert [r.event for r in world.alpha.logs] == ["uvf.offer", "uvf.accepted", "uvf.transfer"]
    assert world.alpha.logs[-1].fields["outcome"] == "ok"
    assert world.alpha.logs[-1].fields["direction"] == "out"
    assert [r.event for r in world.beta.logs] == ["uvf.incoming", "uvf.transfer"]
    assert world.beta.logs[-1].fields["saved_as"] == "alpha_f.bin"
    # The disk saw: space, a look for a partial to resume, create, writes, save, release;
    # nothing else and nothing twice.
    kinds = [type(op).__name__ for op in world.beta.disk.done]
    assert kinds[:3] == ["MeasureSpace", "ClaimPartial", "CreateTemp"]
    assert kinds[-2:] == ["SaveFile", "Release"]
    assert set(kinds[3:-2]) == {"WriteBlocks"}
    assert world.alpha.core.stats.transfers_completed == world.beta.core.stats.transfers_completed
    if loss:
        assert world.alpha.core.stats.retransmissions > 0


def test_a_slow_disk_slows_the_sender_instead_of_filling_memory() -> None:
    """Bytes not yet written (beyond two write blocks) count against the window; when the
    disk catches up the receiver says so (a window update), so the sender never waits for
    the idle timeout."""
    opts = TransferOptions(chunk_size=1000, window_bytes=50_000)
    world = World(options=opts, disk_delay=0.05)
    data = random.Random(3).randbytes(5_000_000)
    world.send(world.alpha, "alpha", data)
    peak = 0

    def watch() -> bool:
        nonlocal peak
        for t in world.beta.core._transfers.values():  # the bound under test
            core = t.core
            assert isinstance(core, Receiver)
            reorder = sum(len(c) for c in core._buffer.values())
            peak = max(peak, core.received_bytes - core.written_bytes + reorder)
        return "outgoing_done" in world.kinds(world.alpha)

    world.run(watch)
    sent_data = sum(isinstance(pk.decode(d), pk.Data) for d in world.sent["alpha"])
    assert world.beta.disk.files["alpha_f.bin"] == bytearray(data)
    block = ReceiverConfig().write_block
    assert peak <= 50_000 + 3 * block  # the window, two blocks being written, one filling
    assert world.now < 5.0  # nothing waited for a timeout (the disk takes ~0.5 s)
    # Flow control, not loss: no chunk was resent as lost; the only repeats are window
    # probes (one per retransmission timeout while the disk is behind).
    assert world.alpha.core.stats.retransmissions == 0
    assert 5000 <= sent_data <= 5050


@pytest.mark.parametrize(
    ("packet", "free", "code"),
    [
        (offer(7, sender="a/b"), 10**9, "bad_name"),
        (offer(7, size=10**12), 10**15, "too_large"),
        (offer(7, chunk=10), 10**9, "bad_offer"),
        (offer(7, size=5000), 4999, "no_space"),
    ],
)
def test_offers_are_refused_with_the_documented_code(packet: bytes, free: int, code: str) -> None:
    world = World()
    world.beta.disk.free = free
    world.deliver(world.beta, ALPHA, packet)
    world.run(lambda: bool(aborts(world, "beta")))
    (abort,) = aborts(world, "beta")
    assert abort.code == code and abort.transfer_id == 7
    assert world.beta.core.stats.offers_refused == 1
    assert world.beta.logs[-1].event == "uvf.offer_refused"
    assert world.beta.logs[-1].fields["code"] == code
    assert world.beta.disk.files == {} and world.beta.events == []
    world.run(lambda: False, limit=1.0)
    assert world.beta.core.running() == 0 and not world.beta.core.busy


def test_free_space_is_measured_only_for_offers_that_pass_the_other_checks() -> None:
    world = World()
    world.deliver(world.beta, ALPHA, offer(8, sender=".."))
    world.run(lambda: False, limit=0.1)
    assert world.beta.disk.done == []  # refused without touching the disk


def test_busy_counts_offers_whose_file_is_still_being_created() -> None:
    world = World(options=TransferOptions(chunk_size=1000, max_incoming=2), disk_delay=0.5)
    for tid in (1, 2, 3):
        world.deliver(world.beta, ALPHA, offer(tid))
    assert [(a.transfer_id, a.code) for a in aborts(world, "beta")] == [(3, "busy")]


def test_a_temp_file_that_cannot_be_created_refuses_the_offer() -> None:
    world = World()
    world.beta.disk.fail[fo.CreateTemp] = "Read-only file system"
    world.deliver(world.beta, ALPHA, offer(9))
    world.run(lambda: bool(aborts(world, "beta")))
    (abort,) = aborts(world, "beta")
    assert abort.code == "io_error" and abort.message.endswith("Read-only file system")
    assert not any(isinstance(op, fo.Release) for op in world.beta.disk.done)  # nothing made
    # Not remembered as ended: the sender's next OFFER is judged again (and taken).
    del world.beta.disk.fail[fo.CreateTemp]
    world.deliver(world.beta, ALPHA, offer(9))
    world.run(lambda: any(isinstance(pk.decode(d), pk.Accept) for d in world.sent["beta"]))
    assert world.kinds(world.beta) == ["incoming_started"]


def test_a_failed_write_aborts_and_removes_the_temp_file() -> None:
    world = World()
    world.beta.disk.fail[fo.WriteBlocks] = "No space left on device"
    world.send(world.alpha, "alpha", random.Random(4).randbytes(300_000))
    world.run(world.settled)
    failed = world.alpha.events[-1]
    assert failed.code == "io_error" and failed.message == (
        "peer: receiver cannot write: No space left on device")
    assert world.kinds(world.beta) == ["incoming_started", "incoming_failed"]
    assert world.beta.disk.files == {}
    assert isinstance(world.beta.disk.done[-1], fo.Release) and world.beta.disk.done[-1].remove_temp


def test_a_failed_save_is_logged_and_reported() -> None:
    world = World()
    world.beta.disk.fail[fo.SaveFile] = "Input/output error"
    world.send(world.alpha, "alpha", b"x" * 10_000)
    world.run(world.settled)
    assert world.alpha.events[-1].code == "io_error"
    assert "could not save the file: Input/output error" in world.alpha.events[-1].message
    assert [r.event for r in world.beta.logs if r.level == "warning"] == ["uvf.save_failed"]
    assert world.beta.disk.files == {}


def test_an_unreadable_source_fails_the_sender() -> None:
    world = World()
    world.send(world.alpha, "alpha", b"y" * 3_000_000)
    world.run(lambda: "outgoing_started" in world.kinds(world.alpha))
    world.alpha.disk.fail[fo.ReadRanges] = "Input/output error"  # later reads fail
    world.run(world.settled)
    event = world.alpha.events[-1]
    assert event.code == "unreadable" and event.message == "cannot read f.bin: Input/output error"
    assert [a.code for a in aborts(world, "alpha")] == ["unreadable"]
    assert world.kinds(world.beta) == ["incoming_started", "incoming_failed"]
    assert world.beta.disk.files == {}


def test_datagrams_that_do_not_belong_are_counted_and_dropped() -> None:
    world = World()
    tid = world.send(world.alpha, "alpha", b"z" * 50_000)
    world.run(lambda: "outgoing_started" in world.kinds(world.alpha))
    beta = world.beta.core
    stranger = ("198.51.100.9", 9)
    beta.receive_datagram(pk.encode_data(pk.Data(tid, 0, 0, b"e" * 1000)), stranger, stranger, 1)
    beta.receive_datagram(pk.encode_ack(pk.Ack(tid, 0, 1, 0, 0, ())), ALPHA, ALPHA, 1)  # wrong way
    beta.receive_datagram(pk.encode_fin(pk.Fin(tid ^ 1, 0)), ALPHA, ALPHA, 1)  # unknown
    beta.receive_datagram(b"UV\x07\x03" + bytes(20), ALPHA, ALPHA, 1)  # version 7
    beta.receive_datagram(b"UV\x01\x09" + bytes(20), ALPHA, ALPHA, 1)  # type 9
    beta.receive_datagram(b"UV", ALPHA, ALPHA, 1)
    s = beta.stats
    assert (s.dropped_wrong_peer, s.dropped_unknown, s.dropped_bad_version) == (1, 1, 1)
    assert s.dropped_malformed == 3


def test_a_late_offer_of_an_ended_transfer_does_not_start_it_again() -> None:
    world = World()
    tid = world.send(world.alpha, "alpha", b"q" * 3000)
    world.run(world.settled)
    world.deliver(world.beta, ALPHA, offer(tid, size=3000))
    assert world.beta.core.running() == 0 and world.beta.core.stats.dropped_unknown == 1
    assert list(world.beta.disk.files) == ["alpha_f.bin"]
    # After 2 x idle timeout the id is forgotten (at most MAX_RECENT_IDS are kept).
    world.now += 2 * 10.0 + 0.1
    world.deliver(world.beta, ALPHA, offer(tid, size=3000))
    assert world.beta.core.running() == 1
    assert MAX_RECENT_IDS == 1024


def test_send_checks_and_close() -> None:
    world = World(options=TransferOptions(chunk_size=1000, max_outgoing=1))
    with pytest.raises(TransferError) as info:
        world.alpha.core.check_send("a/b", "f.bin")
    assert info.value.code == "bad_name"
    world.send(world.alpha, "alpha", b"w" * 400_000)
    with pytest.raises(TransferError) as info:
        world.alpha.core.check_send("alpha", "g.bin")
    assert info.value.code == "busy"
    world.run(lambda: world.beta.core.running() == 1 and world.beta.disk.files.get(
        names.temp_name(next(iter(world.alpha.disk.sources)))) not in (None, bytearray()))
    world.beta.core.close()
    world.transmit(world.beta)
    world.run(world.settled)
    assert world.alpha.events[-1].code == "closed"
    assert world.alpha.events[-1].message == "peer: the peer's transfer endpoint closed"
    assert world.beta.disk.files == {}  # the temp file was removed
    world.deliver(world.beta, ALPHA, offer(77))
    assert aborts(world, "beta")[-1].code == "closed"


# -- resumable transfers (issue 16) ---------------------------------------------------------------

def restart_alpha(world: World) -> None:
    """The sender's process dies (kill -9): its core is gone, its datagrams stop."""
    opts = world.alpha.core.options
    world.alpha = Side(TransferSet(opts, DATA_DIR), ALPHA, MemoryDisk())


def cut_after(world: World, nbytes: int) -> None:
    """Run until beta has written ``nbytes`` of the file, then kill the sender."""
    def written() -> bool:
        return any(len(f) >= nbytes for name, f in world.beta.disk.files.items()
                   if names.is_temp_name(name))
    world.run(written)
    assert written(), world.beta.disk.files.keys()
    restart_alpha(world)


def wait(world: World, seconds: float) -> None:
    until = world.now + seconds
    world.run(lambda: False, limit=until)
    world.now = max(world.now, until)


def resumed_at(world: World) -> int:
    started = [e for e in world.beta.events if e.kind == "incoming_started"]
    return started[-1].resumed_at


@pytest.mark.parametrize("seconds", [11.0, 2.0])
def test_a_restarted_sender_resumes_where_the_receiver_stopped(seconds: float) -> None:
    """``seconds`` 11: the receiver timed out and kept the part; 2 s: it was still waiting,
    and the new offer superseded the silent transfer."""
    world = World()
    data = random.Random(4).randbytes(3_000_000)
    world.send(world.alpha, "alpha", data)
    cut_after(world, 1_000_000)
    wait(world, seconds)
    if seconds > 10:
        assert [r.event for r in world.beta.logs][-2:] == ["uvf.transfer", "uvf.partial_kept"]
        assert ("alpha", "f.bin") in world.beta.disk.partials
    tid = world.send(world.alpha, "alpha", data)
    world.run(world.settled)
    assert world.beta.disk.files == {"alpha_f.bin": bytearray(data)}
    assert world.kinds(world.alpha) == ["outgoing_started", "outgoing_done"]
    held = resumed_at(world)
    assert 1_000_000 <= held < len(data) and held % 1000 == 0
    done = world.alpha.logs[-1].fields
    assert done["outcome"] == "ok" and done["resumed_at"] == held
    sent = done["data_bytes_sent"]
    assert isinstance(sent, int) and len(data) - held <= sent < len(data) - held + 100_000
    assert next(e for e in world.alpha.events if e.kind == "outgoing_done").resumed_at == held
    assert world.beta.events[-1].kind == "incoming_done" and world.beta.events[-1].resumed_at == held
    assert world.beta.core.stats.transfers_resumed == 1
    if seconds < 10:
        failed = [r for r in world.beta.logs if r.fields.get("code") == "superseded"]
        assert len(failed) == 1
        assert world.beta.core.stats.offers_deferred >= 1
    assert tid in world.alpha.disk.sources


def test_a_changed_file_starts_over_and_is_stored_right() -> None:
    world = World()
    old = random.Random(5).randbytes(2_000_000)
    world.send(world.alpha, "alpha", old)
    cut_after(world, 500_000)
    wait(world, 11)
    new = old[:1_000_000] + b"changed" + old[1_000_007:]
    world.send(world.alpha, "alpha", new)
    world.run(world.settled)
    assert world.beta.disk.files == {"alpha_f.bin": bytearray(new)}
    assert resumed_at(world) == 0
    unusable = [r for r in world.beta.logs if r.event == "uvf.partial_unusable"]
    assert unusable and unusable[0].fields["reason"] == "the file changed"
    assert world.alpha.logs[-1].fields["data_bytes_sent"] >= len(new)


def test_another_sender_name_starts_over() -> None:
    world = World()
    data = random.Random(6).randbytes(1_500_000)
    world.send(world.alpha, "alpha", data)
    cut_after(world, 400_000)
    wait(world, 11)
    world.send(world.alpha, "gamma", data)
    world.run(world.settled)
    assert set(world.beta.disk.files) == {"gamma_f.bin"}
    assert resumed_at(world) == 0
    assert ("alpha", "f.bin") in world.beta.disk.partials  # alpha's part waits for alpha


def test_a_transfer_that_fails_otherwise_keeps_nothing_and_resume_can_be_off() -> None:
    world = World(options=TransferOptions(chunk_size=1000, window_bytes=200_000,
                                          resume_seconds=0))
    data = random.Random(7).randbytes(1_000_000)
    world.send(world.alpha, "alpha", data)
    cut_after(world, 300_000)
    world.run(world.settled)
    assert world.beta.disk.files == {} and world.beta.disk.partials == {}
    kinds = {type(op).__name__ for op in world.beta.disk.done}
    assert "ClaimPartial" not in kinds and "ParkPartial" not in kinds


def test_sweeps_run_at_start_and_on_a_timer() -> None:
    opts = TransferOptions(resume_seconds=40.0)
    core = TransferSet(opts, DATA_DIR)
    assert core.get_timer() is None  # no sweeps until the adapter asks for them
    core.schedule_sweeps(100.0)
    assert core.get_timer() == 100.0
    core.handle_timer(100.0)
    (op,) = core.file_ops()
    assert op == fo.SweepPartials(40.0, opts.resume_budget)
    assert core.get_timer() is None  # not while one runs
    core.file_op_done(op, fo.PartialsSwept(((".uvf-" + "0" * 32 + ".partial", "expired"),)),
                      100.5)
    assert core.get_timer() == 110.0  # a quarter of the resume period
    assert [(r.event, r.fields["reason"]) for r in core.pop_logs()] == [
        ("uvf.partial_removed", "expired")]
    assert core.stats.partials_removed == 1
