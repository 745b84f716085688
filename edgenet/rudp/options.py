"""The public value types of the UVF adapter: options, events, errors, counters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import packet as pk


@dataclass(frozen=True)
class TransferOptions:
    #: Bytes of file data per datagram; 1400 keeps datagrams (20-byte header) inside a
    #: 1500-byte IPv4 MTU. Up to 65487 on fast local links that carry large datagrams.
    chunk_size: int = 1400
    #: Largest incoming file accepted (4 GiB).
    max_file_size: int = 4 * 2**30
    #: Concurrent incoming transfers; further offers are refused with "busy".
    max_incoming: int = 8
    #: Concurrent outgoing transfers from this endpoint.
    max_outgoing: int = 32
    #: A peer silent this long ends the transfer on this side with "timeout".
    idle_timeout: float = 10.0
    #: Receive window (reorder buffer) per incoming transfer, in bytes.
    window_bytes: int = 8 * 2**20
    #: SO_RCVBUF / SO_SNDBUF requested (the OS may cap it, e.g. net.core.rmem_max).
    socket_buffer: int = 4 * 2**20
    initial_rto: float = 1.0
    min_rto: float = 0.02
    max_rto: float = 4.0
    use_gso: bool = True
    use_gro: bool = True
    #: How often a running transfer offers a "progress" event to ``on_event`` (seconds);
    #: a client drawing its own progress bars asks for more than once a second.
    progress_interval: float = 1.0
    #: How long a sender probes the receiver's candidates before it takes the server's
    #: relay (UVF across NATs; see paths.py).
    probe_timeout: float = 2.0
    #: How long a receiver keeps the part of a file whose transfer stopped (the sender went
    #: silent, restarted, cancelled; this endpoint closed), for the same sender's next offer
    #: of the same file to resume (seconds; 0 keeps none).
    resume_seconds: float = 24 * 3600.0
    #: The bytes of such partial files kept at most (the oldest go first).
    resume_budget: int = 4 * 2**30

    def __post_init__(self) -> None:
        if not pk.MIN_CHUNK_SIZE <= self.chunk_size <= pk.MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be in [{pk.MIN_CHUNK_SIZE}, {pk.MAX_CHUNK_SIZE}]")
        if self.idle_timeout <= 0 or self.max_incoming < 0 or self.max_file_size < 0:
            raise ValueError("idle_timeout must be > 0; limits must be >= 0")
        if not self.progress_interval > 0 or not self.probe_timeout > 0:
            raise ValueError("progress_interval and probe_timeout must be > 0")
        if not self.resume_seconds >= 0 or self.resume_budget < 0:
            raise ValueError("resume_seconds and resume_budget must be >= 0")


@dataclass(frozen=True)
class TransferEvent:
    """What happened to a transfer, for the client shell. ``kind`` is one of
    incoming_started, incoming_done, incoming_failed, outgoing_started, outgoing_done,
    outgoing_failed, progress."""

    kind: str
    peer_name: str
    filename: str
    path: Path | None
    size: int
    message: str = ""
    transfer_id: str = ""
    peer: tuple[str, int] | None = None
    done_bytes: int = 0
    code: str = ""
    direction: str = ""
    #: Bytes of the file the receiver held from an earlier transfer (0: not resumed).
    resumed_at: int = 0


@dataclass(frozen=True)
class SentFile:
    """A file the receiver confirmed: its ``size``, and the bytes it already held from an
    earlier transfer (``resumed_at``; 0 when the whole file was sent)."""

    size: int
    resumed_at: int = 0


class TransferError(Exception):
    """A transfer that did not succeed; ``message`` is one line for a user."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class EndpointStats:
    datagrams_received: int = 0
    datagrams_sent: int = 0
    dropped_unknown: int = 0
    dropped_malformed: int = 0
    dropped_bad_version: int = 0
    dropped_wrong_peer: int = 0
    offers_refused: int = 0
    retransmissions: int = 0
    send_errors: int = 0
    send_queue_dropped: int = 0
    transfers_completed: int = 0
    transfers_failed: int = 0
    #: Offers left unanswered while an earlier transfer of the same file gives way to them.
    offers_deferred: int = 0
    transfers_resumed: int = 0
    partials_kept: int = 0
    partials_removed: int = 0
