"""The receiving side of one UVF transfer, as a sans-I/O state machine.

States: RECEIVING -> VERIFYING -> DONE, or FAILED from any of them.

* RECEIVING: created from an accepted OFFER (ACCEPT is queued at once and repeated whenever the
  OFFER is). DATA chunks within the advertised window are kept in a reorder buffer until the
  in-order prefix can be written; in-order bytes are hashed and handed to the adapter in blocks
  (``take_writes``: offset and bytes), which writes them off the event loop and reports back
  (``writes_done``, or ``write_failed``). Chunks beyond the window are dropped (flow control);
  duplicates are counted. One ACK (cumulative point, limit, SACK ranges, timestamp echo) is
  produced per ``datagrams_to_send`` call, i.e. once per batch of datagrams, not per datagram.
* VERIFYING: every byte is written and the SHA-256 matched; ``DataComplete`` asks the adapter to
  fsync and rename, after which it calls ``confirm_saved``. A mismatch fails with
  "hash_mismatch" instead.
* DONE: DONE is sent, and re-sent whenever a FIN or a duplicate chunk shows it was lost, until a
  CLOSE arrives or ``linger`` seconds pass.

A resumed transfer (``resume_from``, before any datagram) starts with the prefix of the file
an earlier transfer left on disk: its chunks count as received and written, the digest goes
on from the hash of that prefix (so the SHA-256 checked at the end is that of the assembled
file), and the ACCEPT is sent twice, first as version 2 listing the held chunks, then as
version 1 for a sender that knows no resume (it sends every chunk, and those held are taken as
duplicates). A held chunk that arrives anyway repeats the version-2 ACCEPT, at most
``MAX_HELD_REPEATS`` times, in case the first was lost.

A sender silent for ``idle_timeout`` seconds (before DONE) fails the transfer with "timeout".
Memory is bounded by the window: the advertised limit is the first chunk not yet written plus
``window``, so chunks buffered for reordering and bytes waiting to be written are at most
``window`` chunks together. ``written_bytes`` is the prefix of the file that is on disk.
"""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass

from . import packet as pk
from .events import DataComplete, TransferCompleted
from .rangeset import RangeSet
from .side import Address, TransferSide


@dataclass(frozen=True)
class ReceiverConfig:
    #: Reorder buffer / advertised window in bytes (converted to chunks, 16..65536 of them).
    window_bytes: int = 8 * 2**20
    idle_timeout: float = 10.0
    #: How long DONE is kept answerable without a CLOSE (default: the idle timeout).
    linger: float | None = None
    #: In-order bytes are written once this many are pending (and at every batch end).
    write_block: int = 256 * 1024


#: Times a resumed receiver repeats its version-2 ACCEPT for held chunks sent anyway.
MAX_HELD_REPEATS = 8


class ReceiverState(enum.Enum):
    RECEIVING = "receiving"
    VERIFYING = "verifying"
    DONE = "done"
    FAILED = "failed"


class Receiver(TransferSide):
    def __init__(
        self,
        offer: pk.Offer,
        *,
        peer: Address,
        now: float,
        config: ReceiverConfig = ReceiverConfig(),
    ) -> None:
        if not pk.MIN_CHUNK_SIZE <= offer.chunk_size <= pk.MAX_CHUNK_SIZE:
            raise ValueError("chunk size out of range")
        super().__init__(offer.transfer_id, peer)
        self.offer = offer
        self.state = ReceiverState.RECEIVING
        self.duplicates = 0
        self.dropped_window = 0
        self.acks_sent = 0
        self._config = config
        self._chunk = offer.chunk_size
        self._size = offer.size
        self._total = (offer.size + self._chunk - 1) // self._chunk
        self._last_len = offer.size - (self._total - 1) * self._chunk if self._total else 0
        self.window = min(max(config.window_bytes // self._chunk, 16), 65536)
        self._sha = hashlib.sha256()
        self._buffer: dict[int, bytes] = {}
        self._above = RangeSet()
        self._cum = 0
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._writes: list[tuple[int, bytes]] = []  # hashed, waiting for take_writes
        self._handed = 0  # bytes handed out to be written (hashed)
        self._written = 0  # bytes the adapter reported written
        self._limit = self.window  # advertised limit (never lowered)
        self._last_heard = now
        self._echo = offer.timestamp
        self._echo_time = now
        self._accept_due = True
        self._ack_due = False
        self._done_due = False
        self._saved_name = ""
        self._linger_deadline: float | None = None
        self._held_chunks = 0  # chunks an earlier transfer left on disk (resume_from)
        self._held_repeats = 0
        self._check_complete()

    # -- public surface ---------------------------------------------------------------------

    def resume_from(self, held_bytes: int, digest: hashlib._Hash) -> None:
        """The file's first ``held_bytes`` (whole chunks, or the whole file) are already on
        disk, and ``digest`` is their SHA-256 so far. Only before anything was received."""
        if self.state is not ReceiverState.RECEIVING or self._handed or self._buffer:
            raise ValueError("a transfer resumes before it receives anything")
        if held_bytes <= 0 or held_bytes > self._size or (
                held_bytes % self._chunk and held_bytes != self._size):
            raise ValueError("held bytes must be whole chunks of the file")
        self._held_chunks = self._cum = (held_bytes + self._chunk - 1) // self._chunk
        self._handed = self._written = held_bytes
        self._sha = digest
        self._limit = self._limit_target()
        self._check_complete()

    @property
    def last_heard(self) -> float:
        return self._last_heard

    @property
    def resumed_bytes(self) -> int:
        """How much of the file an earlier transfer had left (0: not resumed)."""
        return min(self._held_chunks * self._chunk, self._size)

    @property
    def received_bytes(self) -> int:
        return self._handed + self._pending_bytes

    @property
    def written_bytes(self) -> int:
        """The prefix of the file the adapter reported written."""
        return self._written

    def take_writes(self) -> list[tuple[int, bytes]]:
        """In-order blocks ``(offset, bytes)`` to write to the file, each handed out once;
        report them with ``writes_done``. Call before ``datagrams_to_send`` so the limit in
        its ACK counts what was written."""
        if self._pending:
            self._flush()
        writes, self._writes = self._writes, []
        return writes

    def writes_done(self, nbytes: int) -> None:
        """``nbytes`` more of the handed-out bytes are on disk (in order)."""
        if self.state is ReceiverState.FAILED:
            return
        self._written = min(self._written + nbytes, self._handed)
        if self._limit_target() > self._limit:
            self._ack_due = True  # a window update: the sender may be waiting for room
        self._check_complete()

    def write_failed(self, reason: str) -> None:
        self.abort("io_error", f"receiver cannot write: {reason}")

    @property
    def finished(self) -> bool:
        if self.state is ReceiverState.FAILED:
            return not self._outbox
        return self.state is ReceiverState.DONE and self._linger_deadline is None

    def confirm_saved(self, saved_name: str, now: float) -> None:
        """The adapter fsynced and renamed the file: tell the sender."""
        if self.state is not ReceiverState.VERIFYING:
            return
        self.state = ReceiverState.DONE
        self._saved_name = saved_name
        self._done_due = True
        linger = (
            self._config.linger if self._config.linger is not None else self._config.idle_timeout
        )
        self._linger_deadline = now + linger

    def _over(self) -> bool:
        return self.state in (ReceiverState.DONE, ReceiverState.FAILED)

    def receive_datagram(self, data: bytes, addr: Address, now: float) -> None:
        p = self._decode(data, addr)
        if p is None:
            return
        if p.transfer_id != self.transfer_id or self.state is ReceiverState.FAILED:
            return
        if isinstance(p, pk.Data):
            self._on_data(p, now)
            return
        self._last_heard = now
        state = self.state
        if isinstance(p, pk.Fin):
            self._echo, self._echo_time = p.timestamp, now
            if state is ReceiverState.DONE:
                self._done_due = True
            else:
                self._ack_due = True
        elif isinstance(p, pk.Offer):
            if state is ReceiverState.RECEIVING:
                self._echo, self._echo_time = p.timestamp, now
                self._accept_due = True
        elif isinstance(p, pk.Close):
            if state is ReceiverState.DONE and self._linger_deadline is not None:
                self._linger_deadline = None
                self._events.append(TransferCompleted(self.transfer_id, self._saved_name))
        elif isinstance(p, pk.Abort):
            if state is not ReceiverState.DONE:
                self._fail(p.code, p.message, by_peer=True)
        else:
            self.dropped_malformed += 1  # ACCEPT / ACK / DONE go the other way

    def datagrams_to_send(self, now: float) -> list[bytes]:
        if self._pending:
            self._flush()
        out = self._outbox
        self._outbox = []
        if self.state is ReceiverState.FAILED:
            return out
        tid = self.transfer_id
        limit = self._advertised_limit()
        if self._accept_due:
            self._accept_due = False
            if self._held_chunks and self.state is ReceiverState.RECEIVING:
                held = ((0, self._held_chunks),)
                out.append(pk.encode_accept(pk.Accept(tid, limit, self._echo, held)))
            out.append(pk.encode_accept(pk.Accept(tid, limit, self._echo)))
        if self._ack_due and self.state is not ReceiverState.DONE:
            self._ack_due = False
            delay = int((now - self._echo_time) * 1e6)
            ack = pk.Ack(
                tid,
                self._cum,
                limit,
                self._echo,
                max(delay, 0),
                tuple(self._above),
            )
            out.append(pk.encode_ack(ack))
            self.acks_sent += 1
        if self._done_due and self.state is ReceiverState.DONE:
            self._done_due = False
            out.append(pk.encode_done(pk.Done(tid, self._saved_name)))
        return out

    def get_timer(self) -> float | None:
        if self.state is ReceiverState.FAILED:
            return None
        if self.state is ReceiverState.DONE:
            return self._linger_deadline
        if self.state is ReceiverState.VERIFYING:
            return None  # the data is complete and verified: saving it no longer needs the peer
        return self._last_heard + self._config.idle_timeout

    def handle_timer(self, now: float) -> None:
        if self.state is ReceiverState.DONE:
            if self._linger_deadline is not None and now >= self._linger_deadline:
                # The sender never confirmed DONE; the file is saved, so this is still success.
                self._linger_deadline = None
                self._events.append(TransferCompleted(self.transfer_id, self._saved_name))
            return
        if (
            self.state is ReceiverState.RECEIVING
            and now >= self._last_heard + self._config.idle_timeout
        ):
            self.abort("timeout", f"sender went silent for {self._config.idle_timeout:g} s")

    # -- internals ------------------------------------------------------------------------------

    def _limit_target(self) -> int:
        # Bytes not yet on disk beyond two write blocks (a disk slower than the network) count
        # against the window, so a slow disk slows the sender instead of filling memory.
        if self._handed - self._written <= 2 * self._config.write_block:
            return self._cum + self.window
        return self._written // self._chunk + self.window

    def _advertised_limit(self) -> int:
        # Never lowered: the sender may use what it was given.
        self._limit = max(self._limit, self._limit_target())
        return self._limit

    def _enter_failed(self) -> None:
        self.state = ReceiverState.FAILED
        self._buffer.clear()
        self._pending.clear()
        self._writes.clear()

    def _on_data(self, p: pk.Data, now: float) -> None:
        index = p.index
        payload = p.payload
        if index >= self._total or len(payload) != (
            self._chunk if index < self._total - 1 else self._last_len
        ):
            self.dropped_malformed += 1
            return
        self._last_heard = now
        self._echo, self._echo_time = p.timestamp, now
        cum = self._cum
        if index < cum or index in self._buffer:
            self.duplicates += 1
            if index < self._held_chunks and self._held_repeats < MAX_HELD_REPEATS and (
                    self.state is ReceiverState.RECEIVING):
                self._held_repeats += 1
                self._accept_due = True  # the sender may have missed the version-2 ACCEPT
            if self.state is ReceiverState.DONE:
                self._done_due = True
            else:
                self._ack_due = True
            return
        self._ack_due = True
        if index >= self._limit:
            self.dropped_window += 1
            return
        if index == cum:
            self._pending.append(payload)
            self._pending_bytes += len(payload)
            cum += 1
            end = self._above.pop_prefix(cum)
            if end > cum:
                buffer = self._buffer
                for j in range(cum, end):
                    chunk = buffer.pop(j)
                    self._pending.append(chunk)
                    self._pending_bytes += len(chunk)
                cum = end
            self._cum = cum
            if self._pending_bytes >= self._config.write_block or cum == self._total:
                self._flush()
        else:
            self._buffer[index] = payload
            self._above.add(index, index + 1)

    def _flush(self) -> None:
        block = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        self._sha.update(block)
        self._writes.append((self._handed, block))
        self._handed += len(block)
        if self._cum == self._total and self._sha.digest() != self.offer.sha256:
            self.abort("hash_mismatch", "SHA-256 of the received file does not match the offer")

    def _check_complete(self) -> None:
        if (
            self.state is not ReceiverState.RECEIVING
            or self._cum < self._total
            or self._written < self._size
        ):
            return
        if self._sha.digest() != self.offer.sha256:  # an empty file is complete at once
            self.abort("hash_mismatch", "SHA-256 of the received file does not match the offer")
            return
        self.state = ReceiverState.VERIFYING
        self._ack_due = True
        self._events.append(DataComplete(self.transfer_id, self._written))
