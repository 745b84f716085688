"""A UDP relay on loopback that forwards a device's datagrams to a receiver's port at a
bounded rate (a slow link), and the receiver's answers back to the device they answer. A
receiver that advertises the relay's port (``--advertise-udp-port``) gets its UVF
transfers through it, slowly enough for a test to act in the middle of one."""

from __future__ import annotations

import selectors
import socket
import threading
import time


class SlowUdpRelay:
    def __init__(self, target_port: int, rate: float, max_seconds: float = 300.0) -> None:
        """``rate``: bytes per second towards ``target_port`` (datagrams over it wait,
        and the kernel drops what does not fit meanwhile, as on a slow link)."""
        self.target = ("127.0.0.1", target_port)
        self.rate = rate
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        # One upstream socket per device address, as a NAT keeps one mapping per flow:
        # the receiver sees each sender (and each run of one) from a port of its own.
        upstream: dict[tuple[str, int], socket.socket] = {}
        back: dict[socket.socket, tuple[str, int]] = {}
        next_free = time.monotonic()  # when the link is free for the next datagram
        # A selector, not select(): the test process may hold descriptors past 1,024.
        sel = selectors.DefaultSelector()
        sel.register(self.sock, selectors.EVENT_READ)
        try:
            while not self._stop.is_set() and time.monotonic() < self._deadline:
                for key, _ in sel.select(0.1):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    data, addr = sock.recvfrom(65536)
                    if sock is not self.sock:
                        self.sock.sendto(data, back[sock])
                        continue
                    up = upstream.get(addr)
                    if up is None and len(upstream) < 64:
                        up = upstream[addr] = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        up.bind(("127.0.0.1", 0))
                        back[up] = addr
                        sel.register(up, selectors.EVENT_READ)
                    if up is None:
                        continue
                    now = time.monotonic()
                    if next_free > now:
                        time.sleep(next_free - now)
                    next_free = max(now, next_free) + len(data) / self.rate
                    up.sendto(data, self.target)
        except OSError:
            return
        finally:
            sel.close()
            for up in back:
                up.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()
