"""What the two ends of one UVF transfer share (``Sender`` and ``Receiver`` build on it):
the transfer id and peer, the peer check and decoding of a datagram, giving up with an
ABORT, and the queues of core events and control datagrams for the adapter."""

from __future__ import annotations

from collections import deque

from . import packet as pk
from .events import TransferEventCore, TransferFailed

Address = tuple[object, ...]


class TransferSide:
    def __init__(self, transfer_id: int, peer: Address) -> None:
        self.transfer_id = transfer_id
        self.peer = peer
        self.dropped_wrong_peer = 0
        self.dropped_malformed = 0
        self._events: deque[TransferEventCore] = deque()
        self._outbox: list[bytes] = []  # ABORT and the like, for the next datagrams_to_send

    def next_event(self) -> TransferEventCore | None:
        return self._events.popleft() if self._events else None

    def abort(self, code: str, message: str) -> None:
        """Give up locally (cancelled, closing, a file error); the peer is told."""
        if self._over():
            return
        self._outbox.append(pk.encode_abort(pk.Abort(self.transfer_id, code, message)))
        self._fail(code, message, by_peer=False)

    def _over(self) -> bool:
        """Done or failed: nothing more can fail."""
        raise NotImplementedError

    def _enter_failed(self) -> None:
        """Move to the FAILED state and drop what is held."""
        raise NotImplementedError

    def _fail(self, code: str, message: str, *, by_peer: bool) -> None:
        self._enter_failed()
        self._events.append(TransferFailed(self.transfer_id, code, message, by_peer))

    def _decode(self, data: bytes, addr: Address) -> pk.Packet | None:
        """The datagram, if it comes from the peer and decodes (else counted, None)."""
        if addr != self.peer:
            self.dropped_wrong_peer += 1
            return None
        try:
            return pk.decode(data)
        except pk.PacketError:
            self.dropped_malformed += 1
            return None
