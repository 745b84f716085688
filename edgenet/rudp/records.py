"""What an endpoint keeps per UVF transfer, made in one place (``new_record``)."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from . import fileops as fo
from .receiver import Receiver, ReceiverState
from .sender import Sender

#: A peer as the endpoint knows it: canonical (host, port).
PeerKey = tuple[str, int]
#: A socket address as the adapter uses it (opaque here).
SockAddr = tuple[object, ...]
#: Ids of recently ended transfers remembered (until their expiry) so that a late duplicate
#: OFFER does not start the same transfer again.
MAX_RECENT_IDS = 1024


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One log event for the adapter to write: ``level`` is "info" or "warning"."""

    level: str
    event: str
    fields: dict[str, object]


@dataclass(eq=False)
class Transfer:
    core: Sender | Receiver
    key: PeerKey
    #: Where its datagrams go: the socket address, as the adapter gave it.
    addr: SockAddr
    peer_name: str
    filename: str
    size: int
    started: float
    outgoing: bool
    #: Fields every log event of this transfer carries.
    context: dict[str, object] = field(default_factory=dict)
    #: Receiver: its temp file exists, so ACCEPT and data may flow (a sender: always).
    accepted: bool = True
    temp_name: str | None = None
    saved_name: str | None = None
    #: The file operation in flight (at most one per transfer, in order).
    op: fo.FileOp | None = None
    #: Receiver: every byte is written and verified; the file is to be saved.
    save_due: bool = False
    reported_retx: int = 0
    #: Receiver: bytes of the temp file known written, from its start (what a park keeps).
    held: int = 0
    #: Receiver: take over a partial of this file when the offer is taken (see resumepolicy).
    claim: bool = True
    #: The code the transfer failed with ("" while it has not failed).
    fail_code: str = ""
    last_progress: float = 0.0
    #: Over: datagrams no longer reach it; its file is released next.
    ended: bool = False
    released: bool = False

    @property
    def tid(self) -> int:
        return self.core.transfer_id

    @property
    def running(self) -> bool:
        if self.ended:
            return False
        if isinstance(self.core, Receiver):
            return self.core.state not in (ReceiverState.DONE, ReceiverState.FAILED)
        return not self.core.finished


def new_record(
    core: Sender | Receiver,
    key: PeerKey,
    addr: SockAddr,
    peer_name: str,
    filename: str,
    size: int,
    now: float,
    *,
    incoming: bool = False,
) -> Transfer:
    """The record of a new transfer, with the log context of its direction."""
    context: dict[str, object] = {
        "transfer": f"{core.transfer_id:016x}",
        "peer": key_name(key),
        "direction": "in" if incoming else "out",
    }
    if incoming:
        context["sender"] = peer_name
    context["file"] = filename
    context["size"] = size
    return Transfer(
        core=core,
        key=key,
        addr=addr,
        peer_name=peer_name,
        filename=filename,
        size=size,
        started=now,
        outgoing=not incoming,
        context=context,
        last_progress=now,
    )


def key_name(key: PeerKey) -> str:
    if key[0].startswith("relay:"):  # a transfer through the server's relay (paths.relay_key)
        return key[0]
    return f"{key[0]}:{key[1]}"


class RecentIds:
    """Ended transfer ids, each until its expiry, at most ``MAX_RECENT_IDS`` (oldest go)."""

    def __init__(self) -> None:
        self._expiry: OrderedDict[int, float] = OrderedDict()

    def add(self, transfer_id: int, expiry: float) -> None:
        self._expiry[transfer_id] = expiry

    def live(self, now: float) -> OrderedDict[int, float]:
        """The ids still remembered at ``now`` (expired ones are forgotten)."""
        recent = self._expiry
        while recent:
            oldest, expiry = next(iter(recent.items()))
            if expiry > now and len(recent) <= MAX_RECENT_IDS:
                break
            del recent[oldest]
        return recent
