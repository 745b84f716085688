"""The UDP socket under a UVF endpoint: creation and batched, non-blocking send and receive.

Python pays per call, not per byte, so the hot paths move many datagrams per system call:

* receive: the socket is drained in a loop until EAGAIN (at most ``MAX_RECV_CALLS`` calls per
  wake-up); with UDP GRO (Linux ``UDP_GRO``) one call returns up to 64 coalesced datagrams of
  one size, split here by the segment size the kernel reports in a control message.
* send: runs of equal-size datagrams to one address go out as one ``sendmsg`` with UDP GSO
  (``UDP_SEGMENT``), at most ``MAX_GSO_SEGMENTS`` datagrams and 65000 bytes per call.

Either offload silently falls back to one datagram per call where the kernel refuses it.
While the socket's send buffer is full, ``QueuedSender`` keeps datagrams in a bounded queue.
No asyncio here; the endpoint calls these from its reader/writer callbacks.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections import deque
from collections.abc import Callable, Sequence

SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = 103  # linux/udp.h
UDP_GRO = 104
#: Kernel limit on segments in one GSO send (UDP_MAX_SEGMENTS).
MAX_GSO_SEGMENTS = 64
MAX_GSO_BYTES = 65000
#: recvmsg calls per wake-up: bounds the time one wake-up spends before ACKs and timers run.
MAX_RECV_CALLS = 256
RECV_BUFFER = 65535
#: Datagrams waiting while the socket's send buffer is full; beyond this they are dropped
#: (counted) and the protocol recovers them as loss.
MAX_SEND_QUEUE = 8192
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4) if hasattr(socket, "CMSG_SPACE") else 0
_INT = struct.Struct("=i")
_U16 = struct.Struct("=H")

PeerKey = tuple[str, int]
SockAddr = tuple[object, ...]


def open_socket(host: str, port: int, buffer_bytes: int) -> socket.socket:
    """A bound, non-blocking UDP socket; "::" also accepts IPv4 (mapped) where the OS allows."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            try:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            except (OSError, AttributeError):
                pass
        tune_socket(sock, buffer_bytes)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def tune_socket(sock: socket.socket, buffer_bytes: int) -> None:
    """Ask for large socket buffers (best effort) and make the socket non-blocking."""
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, option, buffer_bytes)
        except OSError:
            pass
    sock.setblocking(False)


def enable_gro(sock: socket.socket) -> bool:
    if not _GRO_CMSG_SPACE or not hasattr(sock, "recvmsg"):
        return False
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError:
        return False
    return True


def peer_key(addr: SockAddr) -> PeerKey:
    """Canonical (host, port) of a socket address; IPv4-mapped IPv6 becomes plain IPv4."""
    host = str(addr[0])
    port = int(addr[1])  # type: ignore[call-overload]
    if ":" in host:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped), port
        return str(ip) + (host[host.index("%") :] if "%" in host else ""), port
    return host, port


def sockaddr_for(family: int, host: str, port: int) -> SockAddr:
    """The address to pass to sendto on a socket of ``family`` (maps IPv4 on IPv6 sockets)."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if family == socket.AF_INET6 and ip.version == 4:
        return f"::ffff:{ip}", port, 0, 0
    if family == socket.AF_INET and ip.version == 6:
        raise OSError(errno.EAFNOSUPPORT, "IPv6 peer on an IPv4 socket")
    return host, port


def receive_batch(
    sock: socket.socket,
    gro: bool,
    deliver: Callable[[bytes, SockAddr], None],
    max_calls: int = MAX_RECV_CALLS,
) -> int:
    """Drain up to ``max_calls`` receive calls; ``deliver(datagram, addr)`` each datagram.
    Returns the number of datagrams delivered."""
    count = 0
    for _ in range(max_calls):
        try:
            if gro:
                data, ancdata, _flags, addr = sock.recvmsg(RECV_BUFFER, _GRO_CMSG_SPACE)
            else:
                data, addr = sock.recvfrom(RECV_BUFFER)
                ancdata = []
        except (BlockingIOError, InterruptedError):
            break
        except OSError:
            # e.g. ICMP port unreachable reported on the socket; nothing to deliver.
            continue
        segment = 0
        for level, kind, payload in ancdata:
            if level == SOL_UDP and kind == UDP_GRO and len(payload) >= 4:
                segment = _INT.unpack_from(payload)[0]
        if segment and len(data) > segment:
            for start in range(0, len(data), segment):
                deliver(data[start : start + segment], addr)
                count += 1
        else:
            deliver(data, addr)
            count += 1
    return count


class SendBlocked(Exception):
    """The socket buffer is full; ``sent`` datagrams of the batch went out."""

    def __init__(self, sent: int) -> None:
        super().__init__(sent)
        self.sent = sent


class BatchSender:
    """Sends lists of datagrams to one address, with GSO while the kernel accepts it."""

    def __init__(self, sock: socket.socket, gso: bool) -> None:
        self._sock = sock
        self.gso = gso and hasattr(sock, "sendmsg")
        self.calls = 0
        self.errors = 0

    def send(self, addr: SockAddr, datagrams: Sequence[bytes]) -> None:
        """Send all; raises SendBlocked when the socket would block. Other errors (e.g. no
        route) drop the datagram and are counted: to the protocol they are plain loss."""
        sock = self._sock
        i = 0
        n = len(datagrams)
        while i < n:
            first = datagrams[i]
            size = len(first)
            j = i + 1
            if self.gso:
                limit = min(n, i + MAX_GSO_SEGMENTS, i + max(1, MAX_GSO_BYTES // max(size, 1)))
                while j < limit and len(datagrams[j]) == size:
                    j += 1
                if j < limit and len(datagrams[j]) < size:
                    j += 1  # a shorter datagram may end a GSO batch
            try:
                if j - i > 1:
                    sock.sendmsg(
                        [b"".join(datagrams[i:j])],
                        [(SOL_UDP, UDP_SEGMENT, _U16.pack(size))],
                        0,
                        addr,
                    )
                else:
                    sock.sendto(first, addr)
                    j = i + 1
            except (BlockingIOError, InterruptedError):
                raise SendBlocked(i) from None
            except OSError as exc:
                if j - i > 1 and exc.errno in (
                    errno.EIO,
                    errno.EINVAL,
                    errno.ENOPROTOOPT,
                    errno.EOPNOTSUPP,
                ):
                    self.gso = False  # the kernel or the route does not do GSO: retry plainly
                    continue
                self.errors += 1
                i = j
                continue
            self.calls += 1
            i = j


class QueuedSender:
    """``BatchSender`` with a queue (at most ``max_queue`` datagrams, the rest dropped and
    counted) for the time the socket's send buffer is full."""

    def __init__(self, sock: socket.socket, gso: bool, max_queue: int = MAX_SEND_QUEUE) -> None:
        self.batch = BatchSender(sock, gso)
        self.dropped = 0
        self._max = max_queue
        self._queue: deque[tuple[SockAddr, bytes]] = deque()

    def send(self, addr: SockAddr, datagrams: list[bytes]) -> bool:
        """Send or queue; True when the socket just filled up: call ``flush`` once it is
        writable again."""
        if self._queue:
            self._enqueue(addr, datagrams)
            return False
        try:
            self.batch.send(addr, datagrams)
        except SendBlocked as blocked:
            self._enqueue(addr, datagrams[blocked.sent :])
            return True
        return False

    def flush(self) -> bool:
        """Send what is queued; True once the queue is empty."""
        queue = self._queue
        while queue:
            addr = queue[0][0]
            batch: list[bytes] = []
            while queue and queue[0][0] == addr and len(batch) < MAX_GSO_SEGMENTS:
                batch.append(queue.popleft()[1])
            try:
                self.batch.send(addr, batch)
            except SendBlocked as blocked:
                for d in reversed(batch[blocked.sent :]):
                    queue.appendleft((addr, d))
                return False
        return True

    def clear(self) -> None:
        self._queue.clear()

    def _enqueue(self, addr: SockAddr, datagrams: list[bytes]) -> None:
        room = max(self._max - len(self._queue), 0)
        if len(datagrams) > room:
            self.dropped += len(datagrams) - room
            datagrams = datagrams[:room]
        self._queue.extend((addr, d) for d in datagrams)
