"""UVF: reliable peer-to-peer file transfer over UDP.

The protocol cores are sans-I/O (no sockets, no clock, no asyncio, no disk): ``packet``,
``rangeset``, ``recovery``, ``congestion``, ``sendbuffer``, ``sender``, ``receiver``,
``names``, ``admission`` and ``transfers`` (every transfer of one endpoint). The asyncio
adapter is ``edgenet.rudp.endpoint.TransferEndpoint``; it is not imported here, so importing
a core loads neither asyncio nor structlog. See docs/PROTOCOL.md, part 2.
"""

from __future__ import annotations

from .options import EndpointStats, TransferError, TransferEvent, TransferOptions

__all__ = ["EndpointStats", "TransferError", "TransferEvent", "TransferOptions"]
