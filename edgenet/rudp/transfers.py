"""Every UVF transfer of one endpoint (one UDP socket), as a sans-I/O state machine.

The asyncio adapter (``endpoint.py``) is glue around this class: it feeds datagrams in with
``receive_datagram(data, addr, key, now)``, sends what ``datagrams_to_send(now)`` returns,
runs the file operations of ``file_ops()`` (off the event loop) and hands their results to
``file_op_done``, re-arms one timer for ``get_timer()`` and calls ``handle_timer(now)`` at
it, and passes on what ``pop_events()`` (for the client) and ``pop_logs()`` (for the log)
return. No sockets, no clock, no disk: tests drive it with a fake clock and in-memory files.

It owns what one transfer's ``Sender`` or ``Receiver`` cannot know alone: which transfer a
datagram belongs to (and that it comes from that transfer's peer and goes the right way),
whether an offer is taken (``admission``: names, size, busy, free space), the temp file's
life (measure space, claim a partial or create, write, save, release or park), the sweeps of
kept partials (``resumepolicy`` decides, ``partials`` does the disk work), the ids of recently
ended transfers, and the translation of core events into ``TransferEvent``s and log records.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from . import admission, names
from . import fileops as fo
from . import packet as pk
from . import resumepolicy as rp
from .congestion import CongestionConfig
from .events import (
    DataComplete,
    HeldRangesIgnored,
    OfferAccepted,
    TransferCompleted,
    TransferFailed,
)
from .options import EndpointStats, TransferError, TransferEvent, TransferOptions
from .receiver import Receiver, ReceiverConfig, ReceiverState
from .records import LogRecord, PeerKey, RecentIds, SockAddr, Transfer, key_name, new_record
from .recovery import RtoConfig
from .reports import Reporter
from .sender import Sender, SenderConfig

_SENDER_TYPES = frozenset(
    {pk.PacketType.ACCEPT, pk.PacketType.ACK, pk.PacketType.DONE, pk.PacketType.ABORT}
)
_RECEIVER_TYPES = frozenset(
    {
        pk.PacketType.OFFER,
        pk.PacketType.DATA,
        pk.PacketType.FIN,
        pk.PacketType.CLOSE,
        pk.PacketType.ABORT,
    }
)


class TransferSet:
    def __init__(self, options: TransferOptions, data_dir: Path) -> None:
        self.options = options
        self.stats = EndpointStats()
        self.closing = False
        self._data_dir = Path(data_dir)
        self._transfers: dict[int, Transfer] = {}  # running (datagrams reach them)
        self._ending: dict[int, Transfer] = {}  # over, their file not yet released
        self._recent = RecentIds()
        self._touched: dict[int, Transfer] = {}  # to service in datagrams_to_send
        self._out: list[tuple[SockAddr, list[bytes]]] = []
        self._ops: list[fo.FileOp] = []
        self._report = Reporter(self.stats, self._data_dir, options.progress_interval)
        self._receiver_config = ReceiverConfig(
            window_bytes=options.window_bytes, idle_timeout=options.idle_timeout
        )
        self._sender_config = SenderConfig(
            chunk_size=options.chunk_size,
            idle_timeout=options.idle_timeout,
            rto=RtoConfig(options.initial_rto, options.min_rto, options.max_rto),
            congestion=CongestionConfig(),
        )
        self._next_sweep: float | None = None  # None: no sweeps (schedule_sweeps)
        self._sweeping = False

    # -- what the adapter reads ------------------------------------------------------------------

    def running(self) -> int:
        """Incoming plus outgoing transfers still running."""
        return sum(1 for t in self._transfers.values() if t.running)

    @property
    def busy(self) -> bool:
        """A transfer runs, a verified file is being saved, or an ended transfer's file is
        not released (closed, its temp file removed) yet."""
        return bool(self._ending) or any(
            t.running or t.save_due or isinstance(t.op, fo.SaveFile)
            for t in self._transfers.values()
        )

    def pop_events(self) -> list[TransferEvent]:
        return self._report.pop_events()

    def pop_logs(self) -> list[LogRecord]:
        return self._report.pop_logs()

    def file_ops(self) -> list[fo.FileOp]:
        ops, self._ops = self._ops, []
        return ops

    def schedule_sweeps(self, now: float) -> None:
        """Sweep kept partials now (start-up) and then every ``rp.sweep_interval``."""
        self._next_sweep = now

    def get_timer(self) -> float | None:
        deadline: float | None = None if self._sweeping else self._next_sweep
        for transfer in self._transfers.values():
            t = transfer.core.get_timer()
            if t is not None and (deadline is None or t < deadline):
                deadline = t
        return deadline

    # -- inputs ----------------------------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: SockAddr, key: PeerKey, now: float) -> None:
        stats = self.stats
        try:
            ptype, tid = pk.peek(data)
        except pk.PacketError as exc:
            if exc.reason == "version":
                stats.dropped_bad_version += 1
            else:
                stats.dropped_malformed += 1
            return
        transfer = self._transfers.get(tid)
        if transfer is None:
            if ptype != pk.PacketType.OFFER or tid in self._recent.live(now):
                stats.dropped_unknown += 1
            else:
                self._on_offer(data, addr, key, now)
            return
        if transfer.key != key:
            stats.dropped_wrong_peer += 1
            return
        if ptype not in (_SENDER_TYPES if transfer.outgoing else _RECEIVER_TYPES):
            stats.dropped_malformed += 1
            return
        core = transfer.core
        before = core.dropped_malformed
        core.receive_datagram(data, key, now)
        if core.dropped_malformed != before:
            stats.dropped_malformed += core.dropped_malformed - before
        self._touched[tid] = transfer

    def check_send(self, sender_name: str, filename: str) -> None:
        """Raises TransferError when a send cannot start (before the file is read)."""
        outgoing = sum(1 for t in self._transfers.values() if t.outgoing)
        refusal = admission.refuse_send(
            sender_name, filename, self.options, outgoing=outgoing, closing=self.closing
        )
        if refusal is not None:
            raise TransferError(*refusal)

    def start_send(
        self,
        addr: SockAddr,
        key: PeerKey,
        *,
        sender_name: str,
        filename: str,
        size: int,
        sha256: bytes,
        now: float,
    ) -> int:
        """A new outgoing transfer; returns its id (its file is known by it from now on)."""
        self.check_send(sender_name, filename)
        tid = self._new_transfer_id()
        core = Sender(
            transfer_id=tid,
            peer=key,
            sender_name=sender_name,
            filename=filename,
            size=size,
            sha256=sha256,
            now=now,
            config=self._sender_config,
        )
        transfer = new_record(core, key, addr, key_name(key), filename, size, now)
        self._transfers[tid] = transfer
        self._report.log(transfer, "uvf.offer")
        self._touched[tid] = transfer
        return tid

    def cancel(self, transfer_id: int) -> None:
        """The sender's caller gave up (the peer is told)."""
        transfer = self._transfers.get(transfer_id)
        if transfer is not None:
            transfer.core.abort("cancelled", "the sender cancelled the transfer")
            self._touched[transfer_id] = transfer

    def handle_timer(self, now: float) -> None:
        if not self._sweeping and self._next_sweep is not None and now >= self._next_sweep:
            self._sweeping = True
            self._next_sweep = now + rp.sweep_interval(self.options)
            self._ops.append(fo.SweepPartials(self.options.resume_seconds,
                                              self.options.resume_budget))
        for tid, transfer in self._transfers.items():
            t = transfer.core.get_timer()
            if t is not None and t <= now:
                transfer.core.handle_timer(now)
                self._touched[tid] = transfer

    def close(self) -> None:
        """Abort every running transfer (``datagrams_to_send`` then holds the ABORTs)."""
        self.closing = True
        for tid, transfer in self._transfers.items():
            transfer.core.abort("closed", "the peer's transfer endpoint closed")
            self._touched[tid] = transfer

    def file_op_done(self, op: fo.FileOp, result: fo.FileOpResult, now: float) -> None:
        if isinstance(op, fo.SweepPartials):
            self._sweeping = False
            if isinstance(result, fo.PartialsSwept):
                self._report.partials_removed(result.removed)
            elif isinstance(result, fo.FileOpFailed):
                self._report.general("uvf.partial_sweep_failed", "warning", error=result.detail)
            return
        tid = op.transfer_id
        transfer = self._transfers.get(tid) or self._ending.get(tid)
        if transfer is None or transfer.op is not op:
            return
        transfer.op = None
        failed = result if isinstance(result, fo.FileOpFailed) else None
        core = transfer.core
        if isinstance(op, fo.WriteBlocks) and failed is None and op.blocks:
            last_offset, last = op.blocks[-1]
            transfer.held = max(transfer.held, last_offset + len(last))  # written in order
        if isinstance(op, (fo.Release, fo.ParkPartial)):
            self._ending.pop(tid, None)
            if failed is not None:
                self._report.log(transfer, "uvf.temp_not_removed", "warning", error=failed.detail)
            elif isinstance(result, fo.PartialParked):
                self._report.parked(transfer, result, self.options)
            return
        if transfer.ended:  # ended while the operation ran: keep track of the file, release it
            if isinstance(op, fo.CreateTemp) and failed is None:
                transfer.temp_name = op.name
            elif isinstance(op, fo.ClaimPartial) and isinstance(result, fo.PartialClaim):
                if result.held:
                    transfer.temp_name = names.temp_name(tid)
                    transfer.held = result.held
            elif isinstance(op, fo.SaveFile) and isinstance(result, str):
                transfer.saved_name = result  # verified and in place: kept, and said so
                self._report.saved(transfer, now)
            self._schedule_io(transfer)
            return
        if isinstance(op, fo.ReadRanges) and isinstance(core, Sender):
            if failed is not None:
                core.abort("unreadable", f"cannot read {transfer.filename}: {failed.reason}")
            elif isinstance(result, list):
                for (offset, _length), data in zip(op.ranges, result):
                    core.supply(offset, data)
        elif isinstance(core, Receiver):
            self._receiver_op_done(transfer, core, op, result, failed, now)
        self._touched[tid] = transfer

    def datagrams_to_send(self, now: float) -> list[tuple[SockAddr, list[bytes]]]:
        """Service every transfer that got input; returns ``(addr, datagrams)`` in order."""
        touched, self._touched = self._touched, {}
        for transfer in touched.values():
            self._service(transfer, now)
        out, self._out = self._out, []
        return out

    # -- incoming offers and their files ---------------------------------------------------------

    def _on_offer(self, data: bytes, addr: SockAddr, key: PeerKey, now: float) -> None:
        try:
            offer = pk.decode(data)
        except pk.PacketError:
            self.stats.dropped_malformed += 1
            return
        assert isinstance(offer, pk.Offer)
        if offer.transfer_id in self._ending:
            self.stats.dropped_unknown += 1  # its file is still being released
            return
        incoming = sum(1 for t in self._transfers.values() if not t.outgoing and t.running)
        refusal = admission.refuse_offer(
            offer, self.options, incoming=incoming, closing=self.closing
        )
        if refusal is not None:
            self._refuse(offer, addr, key, refusal)
            return
        overlap = rp.Overlap.FRESH
        if self.options.resume_seconds > 0:
            overlap = rp.judge_overlap(self._same_file(offer), key, now)
            if overlap in (rp.Overlap.SUPERSEDE, rp.Overlap.DEFER):
                self.stats.offers_deferred += 1
                if overlap is rp.Overlap.SUPERSEDE:
                    self._supersede(offer)
                return
        core = Receiver(offer, peer=key, now=now, config=self._receiver_config)
        transfer = new_record(
            core, key, addr, offer.sender_name, offer.filename, offer.size, now, incoming=True
        )
        transfer.accepted = False  # not before its temp file exists
        transfer.claim = overlap is rp.Overlap.CLAIM
        self._transfers[offer.transfer_id] = transfer
        self._start_op(transfer, fo.MeasureSpace(offer.transfer_id))

    def _refuse(
        self, offer: pk.Offer, addr: SockAddr, key: PeerKey, refusal: tuple[str, str]
    ) -> None:
        code, message = refusal
        self.stats.offers_refused += 1
        self._report.refused(offer, key, code, message)
        self._out.append((addr, [pk.encode_abort(pk.Abort(offer.transfer_id, code, message))]))

    def _receiver_op_done(
        self,
        transfer: Transfer,
        core: Receiver,
        op: fo.FileOp,
        result: fo.FileOpResult,
        failed: fo.FileOpFailed | None,
        now: float,
    ) -> None:
        tid = transfer.tid
        if isinstance(op, fo.MeasureSpace):
            free = result if isinstance(result, int) else None
            refusal = admission.refuse_space(core.offer.size, free) or self._closing_refusal()
            if refusal is not None:
                self._drop_pending(transfer, refusal)
            elif transfer.claim:
                offer = core.offer
                self._start_op(transfer, fo.ClaimPartial(
                    tid, offer.sender_name, offer.filename, offer.sha256, offer.size,
                    offer.chunk_size, self.options.resume_seconds))
            else:
                self._start_op(transfer, fo.CreateTemp(tid, names.temp_name(tid)))
        elif isinstance(op, fo.ClaimPartial):
            self._claim_done(transfer, core, result, failed)
        elif isinstance(op, fo.CreateTemp):
            if failed is not None:
                message = f"the receiver cannot create a file: {failed.reason}"
                self._drop_pending(transfer, ("io_error", message))
            elif (refusal := self._closing_refusal()) is not None:
                self._drop_pending(transfer, refusal)
                transfer.temp_name = op.name  # made, but not to be used: release it
                self._ending[tid] = transfer
                self._schedule_io(transfer)
            else:
                transfer.temp_name = op.name
                transfer.accepted = True
                self._report.log(transfer, "uvf.incoming")
                self._report.emit(transfer, "incoming_started")
        elif isinstance(op, fo.WriteBlocks):
            if failed is not None:
                core.write_failed(failed.reason)
            else:
                core.writes_done(op.size)
        elif isinstance(op, fo.SaveFile):
            if failed is not None:
                self._report.log(transfer, "uvf.save_failed", "warning", error=failed.detail)
                core.abort("io_error", f"the receiver could not save the file: {failed.reason}")
            elif isinstance(result, str):
                transfer.saved_name = result
                core.confirm_saved(result, now)
                self._report.saved(transfer, now)

    def _claim_done(self, transfer: Transfer, core: Receiver, result: fo.FileOpResult,
                    failed: fo.FileOpFailed | None) -> None:
        tid = transfer.tid
        if failed is not None:  # the claim may have left the temp name behind: release it
            self._report.log(transfer, "uvf.partial_unusable", "warning", reason=failed.detail)
            self._drop_pending(transfer, ("io_error", ("the receiver cannot read its partial "
                                                      f"file: {failed.reason}")))
            transfer.temp_name = names.temp_name(tid)
            self._ending[tid] = transfer
            self._schedule_io(transfer)
            return
        assert isinstance(result, fo.PartialClaim)
        if result.note:
            self._report.log(transfer, "uvf.partial_unusable", reason=result.note)
        if not result.held or result.digest is None:
            self._start_op(transfer, fo.CreateTemp(tid, names.temp_name(tid)))
            return
        transfer.temp_name = names.temp_name(tid)
        transfer.held = result.held
        if (refusal := self._closing_refusal()) is not None:
            self._drop_pending(transfer, refusal)
            transfer.fail_code = "closed"  # claimed, so kept again
            self._ending[tid] = transfer
            self._schedule_io(transfer)
            return
        core.resume_from(result.held, result.digest)
        self.stats.transfers_resumed += 1
        transfer.accepted = True
        self._report.log(transfer, "uvf.incoming", resumed_at=result.held)
        self._report.emit(transfer, "incoming_started")

    def _same_file(self, offer: pk.Offer) -> Transfer | None:
        """An incoming transfer of the same file from the same sender, running or ending."""
        for pool in (self._transfers, self._ending):
            for t in pool.values():
                if (not t.outgoing and t.peer_name == offer.sender_name
                        and t.filename == offer.filename and (t.running or t.ended)):
                    return t
        return None

    def _supersede(self, offer: pk.Offer) -> None:
        old = self._same_file(offer)
        if old is not None and not old.ended:
            old.core.abort("superseded", "a newer offer of the same file from the same sender "
                                         "took over")
            self._touched[old.tid] = old

    def _drop_pending(self, transfer: Transfer, refusal: tuple[str, str]) -> None:
        """An offer refused after a file operation (no space, no temp file): as if never
        taken, so a retransmitted OFFER is judged again."""
        core = transfer.core
        assert isinstance(core, Receiver)
        self._transfers.pop(transfer.tid, None)
        self._touched.pop(transfer.tid, None)
        transfer.ended = True
        self._refuse(core.offer, transfer.addr, transfer.key, refusal)

    def _closing_refusal(self) -> tuple[str, str] | None:
        return ("closed", "the receiver is shutting down") if self.closing else None

    # -- servicing -------------------------------------------------------------------------------

    def _service(self, transfer: Transfer, now: float) -> None:
        if transfer.ended:
            return
        core = transfer.core
        report = self._report
        # A receiver whose temp file is not there yet says nothing (no ACCEPT) unless it failed.
        if transfer.accepted or (isinstance(core, Receiver) and core.state is ReceiverState.FAILED):
            datagrams = core.datagrams_to_send(now)
            if datagrams:
                self._out.append((transfer.addr, datagrams))
        report.count_retransmissions(transfer)
        while (event := core.next_event()) is not None:
            if isinstance(event, OfferAccepted):
                report.accepted(transfer)
            elif isinstance(event, DataComplete):
                transfer.save_due = True
            elif isinstance(event, TransferCompleted):
                if transfer.outgoing:
                    report.sent(transfer, event.saved_name, now)
            elif isinstance(event, TransferFailed):
                transfer.fail_code = event.code
                report.failed(transfer, event, now)
            elif isinstance(event, HeldRangesIgnored):
                report.log(transfer, "uvf.resume_ignored", "warning", reason=event.reason)
        report.progress(transfer, now)
        if core.finished:
            self._end(transfer, now)
        self._schedule_io(transfer)

    def _end(self, transfer: Transfer, now: float) -> None:
        tid = transfer.tid
        transfer.ended = True
        self._transfers.pop(tid, None)
        self._recent.add(tid, now + 2 * self.options.idle_timeout)
        self._ending[tid] = transfer

    def _schedule_io(self, transfer: Transfer) -> None:
        if transfer.op is not None or transfer.released:
            return
        tid = transfer.tid
        core = transfer.core
        if transfer.ended:
            transfer.released = True
            if rp.should_park(transfer, self.options):
                assert isinstance(core, Receiver)
                offer = core.offer
                self._start_op(transfer, fo.ParkPartial(
                    tid, offer.sender_name, offer.filename, offer.sha256, offer.size,
                    transfer.held, self.options.resume_seconds, self.options.resume_budget))
                return
            remove = transfer.temp_name is not None and transfer.saved_name is None
            self._start_op(transfer, fo.Release(tid, remove_temp=remove))
        elif isinstance(core, Sender):
            ranges = core.wanted_reads()
            if ranges:
                self._start_op(transfer, fo.ReadRanges(tid, tuple(ranges)))
        elif transfer.accepted:
            writes = core.take_writes()
            if writes:
                self._start_op(transfer, fo.WriteBlocks(tid, tuple(writes)))
            elif transfer.save_due:
                transfer.save_due = False
                base = names.saved_name(transfer.peer_name, transfer.filename)
                self._start_op(transfer, fo.SaveFile(tid, base))

    def _start_op(self, transfer: Transfer, op: fo.FileOp) -> None:
        transfer.op = op
        self._ops.append(op)

    # -- helpers ---------------------------------------------------------------------------------

    def _new_transfer_id(self) -> int:
        while True:
            tid = secrets.randbits(64)
            if tid and tid not in self._transfers and tid not in self._ending:
                return tid
