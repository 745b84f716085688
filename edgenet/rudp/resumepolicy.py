"""When a UVF receiver keeps a stopped transfer's file, and what a new offer of the same file
from the same sender does to a transfer of it still running: pure decisions for
``TransferSet`` (the disk work is ``partials.py``)."""

from __future__ import annotations

import enum

from .options import TransferOptions
from .receiver import Receiver
from .records import PeerKey, Transfer

#: Failures after which the part received is kept: the sender went silent (killed, link
#: down), was replaced by its own restart, cancelled, or either endpoint closed. A hash
#: mismatch, a disk error or a refusal keeps nothing.
PARKABLE = frozenset({"timeout", "superseded", "cancelled", "closed"})
#: A running transfer whose sender has been silent this long gives way to a new offer of the
#: same file from the same sender (a restarted sender would otherwise wait for the idle
#: timeout, and start over).
SUPERSEDE_SILENCE = 1.0
#: Partials are swept at most this far apart (and four times per resume period, at least 1 s).
SWEEP_INTERVAL = 600.0


class Overlap(enum.Enum):
    CLAIM = "claim"  # no transfer of this file runs: take over its partial, if any
    SUPERSEDE = "supersede"  # end the silent one (its part is kept), answer the retry
    DEFER = "defer"  # leave the offer unanswered: its retransmission is judged again
    FRESH = "fresh"  # the same address sends the same file twice at once: as before resume


def sweep_interval(options: TransferOptions) -> float:
    if options.resume_seconds <= 0:
        return SWEEP_INTERVAL
    return min(SWEEP_INTERVAL, max(1.0, options.resume_seconds / 4))


def judge_overlap(existing: Transfer | None, key: PeerKey, now: float) -> Overlap:
    """``existing``: an incoming transfer of the same file from the same sender name, running
    or with its file still being released (``ended``)."""
    if existing is None:
        return Overlap.CLAIM
    if existing.ended:
        return Overlap.DEFER
    core = existing.core
    assert isinstance(core, Receiver)
    if now - core.last_heard >= SUPERSEDE_SILENCE:
        return Overlap.SUPERSEDE
    return Overlap.DEFER if existing.key != key else Overlap.FRESH


def should_park(transfer: Transfer, options: TransferOptions) -> bool:
    return (options.resume_seconds > 0 and not transfer.outgoing
            and transfer.saved_name is None and transfer.temp_name is not None
            and transfer.held > 0 and transfer.fail_code in PARKABLE)
