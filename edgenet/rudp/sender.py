"""The sending side of one UVF transfer, as a sans-I/O state machine.

States: OFFERING -> SENDING -> FINISHING -> DONE, or FAILED from any of them.

* OFFERING: the OFFER is repeated on the retransmission timer until ACCEPT (or ABORT) arrives.
* SENDING: chunks go out within min(congestion window, receiver's limit), paced; each ACK
  (cumulative point + SACK ranges) retires chunks, feeds the RTT estimator and loss detection;
  lost chunks are resent first. When the RTO timer fires, every unacknowledged chunk is
  resent (oldest first, within the window) and the RTO backs off.
* FINISHING: every chunk is acknowledged; FIN is repeated on the timer until DONE arrives
  (the receiver sends DONE only after verifying the SHA-256 and renaming the file).
* DONE: a CLOSE goes out once; the transfer is finished.

Resume: a version-2 ACCEPT lists chunks the receiver already holds from an earlier transfer of
the same file (it arrives with the version-1 ACCEPT, just before it, or later as a repeat).
Those chunks count as acknowledged and are never sent; ranges that do not fit the file are
ignored as a whole (``HeldRangesIgnored``: the transfer starts over from chunk 0), so a
receiver cannot make the sender skip what it does not have without failing its own SHA-256
check at the end.

A peer silent for ``idle_timeout`` seconds fails the transfer with code "timeout". The sender
does no file I/O: its ``SendBuffer`` says which byte ranges it wants (``wanted_reads``), the
adapter reads them (off the event loop) and hands them back (``supply``); until they arrive,
new chunks wait. It keeps the unacknowledged bytes (bounded by the buffer) and per-chunk
bookkeeping for the window.
"""

from __future__ import annotations

import dataclasses
import enum
import struct
from collections import deque
from dataclasses import dataclass, field

from . import packet as pk
from .congestion import CongestionConfig, CongestionController
from .events import HeldRangesIgnored, OfferAccepted, TransferCompleted
from .rangeset import RangeSet
from .recovery import RtoConfig, RttEstimator, SentChunks
from .sendbuffer import BLOCK_BYTES, BUFFER_BYTES, READ_AHEAD_BLOCKS, SendBuffer
from .side import Address, TransferSide


@dataclass(frozen=True)
class SenderConfig:
    chunk_size: int = 1400
    idle_timeout: float = 10.0
    rto: RtoConfig = field(default_factory=RtoConfig)
    congestion: CongestionConfig = field(default_factory=CongestionConfig)
    #: At most this many datagrams per datagrams_to_send() call (bounds one burst).
    max_datagrams_per_call: int = 256
    #: The file is read in blocks of this many bytes (rounded down to whole chunks) ...
    read_block: int = BLOCK_BYTES
    #: ... this many blocks ahead of the next new chunk ...
    read_ahead_blocks: int = READ_AHEAD_BLOCKS
    #: ... holding at most this many bytes (unacknowledged chunks plus read-ahead).
    buffer_bytes: int = BUFFER_BYTES


class SenderState(enum.Enum):
    OFFERING = "offering"
    SENDING = "sending"
    FINISHING = "finishing"
    DONE = "done"
    FAILED = "failed"


class Sender(TransferSide):
    def __init__(
        self,
        *,
        transfer_id: int,
        peer: Address,
        sender_name: str,
        filename: str,
        size: int,
        sha256: bytes,
        now: float,
        config: SenderConfig = SenderConfig(),
    ) -> None:
        if not pk.MIN_CHUNK_SIZE <= config.chunk_size <= pk.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk size must be in [{pk.MIN_CHUNK_SIZE}, {pk.MAX_CHUNK_SIZE}]")
        super().__init__(transfer_id, peer)
        self.size = size
        self.state = SenderState.OFFERING
        self.retransmissions = 0
        self.datagrams_sent = 0
        #: Bytes of file data sent in DATA datagrams (first sends and resends).
        self.data_bytes_sent = 0
        #: Chunks the receiver held from an earlier transfer (a version-2 ACCEPT).
        self.held_chunks = 0
        self._held_seen = False
        self._config = config
        self._chunk = config.chunk_size
        self._total = (size + self._chunk - 1) // self._chunk
        self._buffer = SendBuffer(
            size,
            self._chunk,
            block_bytes=config.read_block,
            read_ahead=config.read_ahead_blocks,
            buffer_bytes=config.buffer_bytes,
        )
        self._epoch = now
        self._offer = pk.Offer(transfer_id, size, self._chunk, sha256, sender_name, filename, 0)
        self.rtt = RttEstimator(config.rto)
        self.cc = CongestionController(config.congestion)
        self._sent = SentChunks()
        self._acked = RangeSet()  # acknowledged chunks at or above the cumulative point
        self._cum = 0  # every chunk below this is acknowledged
        self._acked_count = 0
        #: Retransmission timer expiries (probes and full timeouts).
        self.timeouts = 0
        self._lost: deque[int] = deque()
        self._lost_set: set[int] = set()
        self._resent_at: dict[int, float] = {}  # chunk -> last resend time, until acknowledged
        self._next_new = 0
        self._pn = 0
        self._peer_limit = 0
        self._last_echo = -1
        self._last_heard = now
        self._deadline: float | None = now  # offer / FIN retransmission; None while SENDING
        self._due = True  # an OFFER or FIN is due now
        self._rto_deadline: float | None = None
        self._window_probe = False  # resend the last chunk to learn the receiver's limit
        self._loss_time: float | None = None
        self._pace_time: float | None = None
        self._header_prefix = pk.HEADER.pack(pk.MAGIC, pk.VERSION, pk.PacketType.DATA, transfer_id)

    # -- public surface ---------------------------------------------------------------------

    @property
    def total_chunks(self) -> int:
        return self._total

    @property
    def acked_bytes(self) -> int:
        if self._acked_count >= self._total:
            return self.size
        return self._acked_count * self._chunk

    @property
    def finished(self) -> bool:
        return self.state in (SenderState.DONE, SenderState.FAILED) and not self._outbox

    @property
    def resumed_bytes(self) -> int:
        """How much of the file the receiver already held (0: not resumed)."""
        return min(self.held_chunks * self._chunk, self.size)

    def wanted_reads(self) -> list[tuple[int, int]]:
        """Byte ranges ``(offset, length)`` of the file to read and ``supply``; each range
        is asked for once."""
        if self.state in (SenderState.DONE, SenderState.FAILED):
            return []
        return self._buffer.wanted(self._next_new)

    def supply(self, offset: int, data: bytes) -> None:
        """The bytes of a range ``wanted_reads`` asked for."""
        if not self._buffer.supply(offset, data):
            self.abort("unreadable", "the file got shorter while being sent")

    def _over(self) -> bool:
        return self.state in (SenderState.DONE, SenderState.FAILED)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        p = self._decode(data, addr)
        if p is None:
            return
        if p.transfer_id != self.transfer_id:
            self.dropped_malformed += 1
            return
        if self.state in (SenderState.DONE, SenderState.FAILED):
            return
        self._last_heard = now
        if isinstance(p, pk.Ack):
            if self.state is not SenderState.OFFERING:
                self._on_ack(p, now)
        elif isinstance(p, pk.Accept):
            if p.held and self.state in (SenderState.OFFERING, SenderState.SENDING):
                self._on_held(p.held, now)
            if self.state is SenderState.OFFERING:
                self._rtt_sample(p.timestamp_echo, 0, now)
                self._peer_limit = min(p.limit, self._total)
                self.state = SenderState.SENDING
                self._deadline = None
                self._due = False
                self._events.append(OfferAccepted(self.transfer_id))
                self._maybe_finishing(now)
        elif isinstance(p, pk.Done):
            self.state = SenderState.DONE
            self._outbox.append(pk.encode_close(pk.Close(self.transfer_id)))
            self._events.append(TransferCompleted(self.transfer_id, p.saved_name))
        elif isinstance(p, pk.Abort):
            self._fail(p.code, p.message, by_peer=True)
        else:
            self.dropped_malformed += 1  # OFFER / DATA / FIN / CLOSE go the other way

    def datagrams_to_send(self, now: float) -> list[bytes]:
        out = self._outbox
        self._outbox = []
        state = self.state
        if state is SenderState.SENDING:
            self._send_data(now, out)
        elif state in (SenderState.OFFERING, SenderState.FINISHING) and self._due:
            self._due = False
            ts = self._timestamp(now)
            if state is SenderState.OFFERING:
                out.append(pk.encode_offer(dataclasses.replace(self._offer, timestamp=ts)))
            else:
                out.append(pk.encode_fin(pk.Fin(self.transfer_id, ts)))
            self._deadline = now + self.rtt.rto
        self.datagrams_sent += len(out)
        return out

    def get_timer(self) -> float | None:
        if self.state in (SenderState.DONE, SenderState.FAILED):
            return None
        deadlines = [self._last_heard + self._config.idle_timeout]
        for t in (self._deadline, self._rto_deadline, self._loss_time, self._pace_time):
            if t is not None:
                deadlines.append(t)
        return min(deadlines)

    def handle_timer(self, now: float) -> None:
        if self.state in (SenderState.DONE, SenderState.FAILED):
            return
        if now >= self._last_heard + self._config.idle_timeout:
            idle = self._config.idle_timeout
            what = (
                "did not answer the offer" if self.state is SenderState.OFFERING else "went silent"
            )
            self.abort("timeout", f"peer {what} for {idle:g} s")
            return
        if self._deadline is not None and now >= self._deadline:
            self._due = True
            self.rtt.on_timeout()
            self._deadline = None
        if self._pace_time is not None and now >= self._pace_time:
            self._pace_time = None
        if self._loss_time is not None and now >= self._loss_time:
            self._loss_time = None
            self._detect_lost(now)
        if self._rto_deadline is not None and now >= self._rto_deadline:
            self.timeouts += 1
            if not len(self._sent) and not self._lost:
                # Nothing in flight, the receiver's limit holds the rest back, and the ACK
                # that raises it may have been lost: probe (TCP's persist timer).
                self._window_probe = True
            elif self.rtt.backoff == 1:
                # First expiry since the last progress: probe, as QUIC's PTO does (RFC 9002
                # 6.2.4): resend the oldest chunks in flight. Their acknowledgement restarts
                # loss detection for the rest (a lost tail), and a late ACK or a stalled
                # peer costs two chunks, not a resent window.
                self._mark_lost(self._sent.pop_oldest(PROBE_CHUNKS))
            else:
                # Nothing acknowledged through a probe either: like TCP after a timeout,
                # treat every unacknowledged chunk as lost and halve the window.
                self._mark_lost(self._sent.pop_all())
                self.cc.on_timeout()
            self.rtt.on_timeout()
            self._rto_deadline = now + self.rtt.rto if len(self._sent) or self._lost else None

    # -- internals ------------------------------------------------------------------------------

    def _timestamp(self, now: float) -> int:
        return int((now - self._epoch) * 1e6) & pk.U32

    def _enter_failed(self) -> None:
        self.state = SenderState.FAILED

    def _rtt_sample(self, echo: int, delay_us: int, now: float) -> None:
        if echo == self._last_echo:
            return
        self._last_echo = echo
        elapsed = (self._timestamp(now) - echo) & pk.U32
        if elapsed < 60_000_000:  # anything larger is a stale or forged echo
            self.rtt.on_sample(max(elapsed - min(delay_us, elapsed), 1) / 1e6)

    def _on_ack(self, ack: pk.Ack, now: float) -> None:
        top = self._next_new  # nothing at or above this was ever sent
        newly: list[tuple[int, int]] = []
        cumulative = min(ack.cumulative, top)
        if cumulative > self._cum:
            newly += self._acked.add(self._cum, cumulative)
            self._acked.remove_below(cumulative)
            self._cum = cumulative
            # (the last chunk sent stays held: it is what a window probe resends)
            self._buffer.release_below(min(cumulative, self._next_new - 1))
        for start, end in ack.ranges:
            if start >= top:
                break
            newly += self._acked.add(max(start, self._cum), min(end, top))
        if ack.limit > self._peer_limit:
            self._peer_limit = min(ack.limit, self._total)
        count = 0
        sent, lost_set = self._sent, self._lost_set
        spurious = False
        resent_at = self._resent_at
        for start, end in newly:
            for index in range(start, end):
                resent = resent_at.pop(index, None) if resent_at else None
                if sent.on_acked(index) is None and index in lost_set:
                    lost_set.discard(index)  # declared lost, not yet resent, yet it arrived
                    spurious = True
                elif resent is not None and now - resent < 0.5 * (self.rtt.min_rtt or 0.0):
                    # Acknowledged sooner after the resend than any round trip: the original
                    # copy arrived, so the "loss" was reordering.
                    spurious = True
            count += end - start
        if spurious:
            sent.on_spurious_loss()
        if count:
            self._acked_count += count
            self._rtt_sample(ack.timestamp_echo, ack.ack_delay_us, now)
            self.rtt.on_progress()
            self._detect_lost(now)
            self.cc.on_acked(count, sent.largest_acked_pn, self._pn)
            self._rto_deadline = now + self.rtt.rto if len(sent) else None
        self._maybe_finishing(now)

    def _on_held(self, held: tuple[tuple[int, int], ...], now: float) -> None:
        if self._held_seen:
            return  # one list per transfer: a repeat says nothing new
        self._held_seen = True
        total = self._total
        if any(end > total for _start, end in held):
            reason = (f"the receiver claims chunks up to {held[-1][1]} of a file of {total}; "
                      "sending the whole file")
            self._events.append(HeldRangesIgnored(self.transfer_id, reason))
            return
        newly: list[tuple[int, int]] = []
        for start, end in held:
            newly += self._acked.add(max(start, self._cum), end)
        sent, lost_set, resent_at = self._sent, self._lost_set, self._resent_at
        count = 0
        for start, end in newly:
            for index in range(start, min(end, self._next_new)):  # sent before the list came
                sent.on_acked(index)
                lost_set.discard(index)
                resent_at.pop(index, None)
            count += end - start
        self._acked_count += count
        self.held_chunks += count
        prefix = self._acked.first()
        if prefix is not None and prefix[0] <= self._cum:
            self._cum = prefix[1]
            self._acked.remove_below(self._cum)
            self._buffer.release_below(self._cum)
        self._skip_acked()
        if not len(sent) and not self._lost:
            self._rto_deadline = None
        self._maybe_finishing(now)

    def _skip_acked(self) -> None:
        """Move the next new chunk past chunks already acknowledged (held by the receiver)."""
        self._next_new = max(self._next_new, self._cum)
        while True:
            for start, end in self._acked:
                if start <= self._next_new < end:
                    self._next_new = end
                    break
            else:
                return

    def _maybe_finishing(self, now: float) -> None:
        if self.state is SenderState.SENDING and self._acked_count >= self._total:
            self.state = SenderState.FINISHING
            self._rto_deadline = self._loss_time = self._pace_time = None
            self._due = True
            self._deadline = now

    def _detect_lost(self, now: float) -> None:
        lost, self._loss_time = self._sent.detect_lost(now, self.rtt)
        if lost:
            self._mark_lost(lost)

    def _mark_lost(self, indexes: list[int]) -> None:
        for index in indexes:
            if index not in self._lost_set:
                self._lost_set.add(index)
                self._lost.append(index)
        self.cc.on_lost(len(indexes))

    def _send_data(self, now: float, out: list[bytes]) -> None:
        srtt = self.rtt.smoothed(0.1)
        budget = min(self.cc.send_budget(now, srtt), self._config.max_datagrams_per_call)
        room = self.cc.window - len(self._sent)
        n = min(budget, room)
        sent = self._sent
        prefix = self._header_prefix
        pack = _SEQ_TS.pack
        ts = self._timestamp(now)
        count = 0
        lost, lost_set = self._lost, self._lost_set
        chunk_bytes = self._buffer.chunk
        if self._window_probe:
            self._window_probe = False
            probe = chunk_bytes(self._next_new - 1)  # acknowledged: the receiver will ACK it
            if probe is not None:
                out.append(prefix + pack(self._next_new - 1, ts) + probe)
        while count < n and lost:
            index = lost.popleft()
            if index not in lost_set:
                continue  # acknowledged after all
            data = chunk_bytes(index)
            if data is None:  # cannot happen: unacknowledged blocks stay held
                lost.appendleft(index)
                break
            lost_set.discard(index)
            self._resent_at[index] = now
            out.append(prefix + pack(index, ts) + data)
            self.data_bytes_sent += len(data)
            sent.on_sent(index, self._pn, now)
            self._pn += 1
            count += 1
            self.retransmissions += 1
        limit = min(self._total, self._peer_limit)
        starved = False  # the next new chunk's bytes are still being read
        while count < n and self._next_new < limit:
            index = self._next_new
            if self.held_chunks and (index < self._cum or index in self._acked):  # the receiver holds it already
                self._skip_acked()
                continue
            data = chunk_bytes(index)
            if data is None:
                starved = True
                break
            out.append(prefix + pack(index, ts) + data)
            self.data_bytes_sent += len(data)
            self._next_new = index + 1
            sent.on_sent(index, self._pn, now)
            self._pn += 1
            count += 1
        more = bool(lost) or (self._next_new < limit and not starved)
        if count:
            self.cc.on_sent(count)
            if self._rto_deadline is None:
                self._rto_deadline = now + self.rtt.rto
        elif self._rto_deadline is None and not (len(sent) or lost) and limit <= self._next_new:
            # Everything sent is acknowledged and the receiver's limit holds the rest back:
            # arm the window probe (handle_timer), in case the ACK that raises it is lost.
            self._rto_deadline = now + self.rtt.rto if self._next_new < self._total else None
        if more and count >= room:
            self.cc.on_window_limited()
            self._pace_time = None  # the next ACK opens the window
        elif more:
            self._pace_time = max(self.cc.next_send_time(now), now + 1e-4)
        else:
            self._pace_time = None


_SEQ_TS = struct.Struct("!II")
#: Chunks resent as a probe on the first retransmission timeout.
PROBE_CHUNKS = 2  # the part of the DATA header after the fixed prefix
