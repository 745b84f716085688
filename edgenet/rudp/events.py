"""Events the sans-I/O sender and receiver hand to their adapter through ``next_event()``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class OfferAccepted:
    """Sender side: the receiver accepted the offer; data starts flowing."""

    transfer_id: int


@dataclass(frozen=True, slots=True)
class DataComplete:
    """Receiver side: every byte is written and the SHA-256 matches.

    The adapter now fsyncs and renames the file, then calls ``Receiver.confirm_saved``."""

    transfer_id: int
    size: int


@dataclass(frozen=True, slots=True)
class TransferCompleted:
    """Sender side: the receiver confirmed it verified and saved the file as ``saved_name``.
    Receiver side: the sender acknowledged that confirmation (or it was sent often enough)."""

    transfer_id: int
    saved_name: str


@dataclass(frozen=True, slots=True)
class TransferFailed:
    """Either side: the transfer is over without success. ``by_peer`` is True when the peer
    sent the ABORT (its ``code`` and ``message`` are then the peer's)."""

    transfer_id: int
    code: str
    message: str
    by_peer: bool


@dataclass(frozen=True, slots=True)
class HeldRangesIgnored:
    """Sender side: the receiver's list of chunks it holds does not fit the file; the
    transfer goes on from chunk 0 (``reason`` is one line for the log)."""

    transfer_id: int
    reason: str


TransferEventCore = (
    OfferAccepted | DataComplete | TransferCompleted | TransferFailed | HeldRangesIgnored
)
