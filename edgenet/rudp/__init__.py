"""UVF: reliable peer-to-peer file transfer over UDP.

The protocol cores (``packet``, ``rangeset``, ``recovery``, ``congestion``, ``sender``,
``receiver``, ``names``) are sans-I/O; ``endpoint`` is the asyncio adapter the client uses.
See docs/PROTOCOL.md, part 2.
"""

from __future__ import annotations

from .endpoint import EndpointStats, TransferEndpoint, TransferError, TransferEvent, TransferOptions

__all__ = ["EndpointStats", "TransferEndpoint", "TransferError", "TransferEvent", "TransferOptions"]
