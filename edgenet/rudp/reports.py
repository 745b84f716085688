"""What a UVF endpoint tells the outside: ``TransferEvent``s for the client and log records.

One place for the wording of both, so the asyncio adapter only passes them on (the events to
its ``on_event`` callback, the records to structlog) and tests read them as values.
"""

from __future__ import annotations

from pathlib import Path

from . import fileops as fo
from . import packet as pk
from .events import TransferFailed
from .options import EndpointStats, TransferEvent, TransferOptions
from .records import LogRecord, PeerKey, Transfer
from .sender import Sender


class Reporter:
    def __init__(self, stats: EndpointStats, data_dir: Path, progress_interval: float) -> None:
        self._stats = stats
        self._data_dir = data_dir
        self._interval = progress_interval
        self._events: list[TransferEvent] = []
        self._logs: list[LogRecord] = []

    def pop_events(self) -> list[TransferEvent]:
        events, self._events = self._events, []
        return events

    def pop_logs(self) -> list[LogRecord]:
        logs, self._logs = self._logs, []
        return logs

    def log(self, transfer: Transfer, event: str, level: str = "info", **fields: object) -> None:
        self._logs.append(LogRecord(level, event, {**transfer.context, **fields}))

    def general(self, event: str, level: str = "info", **fields: object) -> None:
        """An event of no one transfer."""
        self._logs.append(LogRecord(level, event, dict(fields)))

    def emit(
        self,
        transfer: Transfer,
        kind: str,
        *,
        message: str = "",
        code: str = "",
        path: Path | None = None,
    ) -> None:
        core = transfer.core
        done = core.acked_bytes if isinstance(core, Sender) else core.received_bytes
        if path is None and transfer.saved_name is not None:
            path = self._data_dir / transfer.saved_name
        self._events.append(
            TransferEvent(
                kind=kind,
                peer_name=transfer.peer_name,
                filename=transfer.filename,
                path=path,
                size=transfer.size,
                message=message,
                transfer_id=f"{transfer.tid:016x}",
                peer=transfer.key,
                done_bytes=done,
                code=code,
                direction="out" if transfer.outgoing else "in",
                resumed_at=core.resumed_bytes,
            )
        )

    # -- the moments of a transfer ---------------------------------------------------------------

    def refused(self, offer: pk.Offer, key: PeerKey, code: str, message: str) -> None:
        fields: dict[str, object] = {
            "peer": f"{key[0]}:{key[1]}",
            "code": code,
            "reason": message,
            "file": offer.filename[:80],
        }
        self._logs.append(LogRecord("info", "uvf.offer_refused", fields))

    def accepted(self, transfer: Transfer) -> None:
        self.log(transfer, "uvf.accepted")
        self.emit(transfer, "outgoing_started")

    def sent(self, transfer: Transfer, saved_name: str, now: float) -> None:
        """Outgoing: the receiver confirmed it verified and saved the file."""
        self._stats.transfers_completed += 1
        self.log(
            transfer,
            "uvf.transfer",
            outcome="ok",
            saved_as=saved_name,
            duration_ms=_ms(now - transfer.started),
            retransmissions=transfer.reported_retx,
            resumed_at=transfer.core.resumed_bytes,
            data_bytes_sent=getattr(transfer.core, "data_bytes_sent", 0),
        )
        self.emit(transfer, "outgoing_done", message=f"saved by the peer as {saved_name}")

    def saved(self, transfer: Transfer, now: float) -> None:
        """Incoming: the file is verified and in place under ``transfer.saved_name``."""
        self._stats.transfers_completed += 1
        self.log(
            transfer,
            "uvf.transfer",
            outcome="ok",
            saved_as=transfer.saved_name,
            duration_ms=_ms(now - transfer.started),
            resumed_at=transfer.core.resumed_bytes,
        )
        self.emit(transfer, "incoming_done")

    def parked(self, transfer: Transfer, result: fo.PartialParked,
               options: TransferOptions) -> None:
        """Incoming: what was received of a stopped transfer is kept (or could not be)."""
        self.partials_removed(result.removed)
        if result.kept:
            self._stats.partials_kept += 1
            self.log(transfer, "uvf.partial_kept", held=transfer.held,
                     hours=round(options.resume_seconds / 3600, 3))
        else:
            self.log(transfer, "uvf.partial_not_kept", "warning", held=transfer.held,
                     reason=result.note)

    def partials_removed(self, removed: tuple[tuple[str, str], ...]) -> None:
        for name, reason in removed:
            self._stats.partials_removed += 1
            self.general("uvf.partial_removed", partial=name, reason=reason)

    def failed(self, transfer: Transfer, event: TransferFailed, now: float) -> None:
        self._stats.transfers_failed += 1
        message = f"{'peer: ' if event.by_peer else ''}{event.message}"
        self.log(
            transfer,
            "uvf.transfer",
            outcome="failed",
            code=event.code,
            reason=event.message,
            by_peer=event.by_peer,
            duration_ms=_ms(now - transfer.started),
        )
        if transfer.accepted:  # an offer that failed before it was taken is no news
            kind = "outgoing_failed" if transfer.outgoing else "incoming_failed"
            self.emit(transfer, kind, message=message, code=event.code)

    def count_retransmissions(self, transfer: Transfer) -> None:
        core = transfer.core
        if isinstance(core, Sender) and core.retransmissions != transfer.reported_retx:
            self._stats.retransmissions += core.retransmissions - transfer.reported_retx
            transfer.reported_retx = core.retransmissions

    def progress(self, transfer: Transfer, now: float) -> None:
        """A "progress" event at most every ``progress_interval`` of a running transfer."""
        if now - transfer.last_progress >= self._interval and transfer.running:
            transfer.last_progress = now
            self.emit(transfer, "progress")


def _ms(seconds: float) -> int:
    return int(seconds * 1000)
