"""TFTP (RFC 1350, lock-step) baseline processes for bench_p2p.py, using tftpy.

    python bench/tftp_peer.py server DIR [TIMEOUT]  # prints its port, serves DIR
    python bench/tftp_peer.py get HOST PORT NAME OUT BLKSIZE TIMEOUT   # prints seconds
    python bench/tftp_peer.py relay HOST PORT LOSS SEED MAX_SECONDS   # prints its port

The relay drops each datagram with probability LOSS in both directions and
follows the server's transfer port (TFTP answers from a new port per transfer).
"""

from __future__ import annotations

import logging
import random
import selectors
import socket
import sys
import time


def _lift_dup_cap() -> None:
    """tftpy aborts a transfer after 20 duplicate packets in all (MAX_DUPS), so on a
    lossy path it cannot finish a file of more than a few hundred blocks. Lift the
    cap: the baseline is RFC 1350 lock-step, not that limit."""
    import tftpy.TftpContexts
    import tftpy.TftpShared

    tftpy.TftpShared.MAX_DUPS = 10**9
    tftpy.TftpContexts.MAX_DUPS = 10**9  # type: ignore[attr-defined]


def serve(folder: str, timeout: float) -> None:
    import tftpy

    _lift_dup_cap()
    logging.getLogger("tftpy").setLevel(logging.ERROR)
    # Find a free port first: tftpy's listen() binds and blocks without telling us.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    print(port, flush=True)
    tftpy.TftpServer(folder).listen("127.0.0.1", port, timeout=timeout)


def get(host: str, port: int, name: str, out: str, blksize: int, timeout: float) -> None:
    import tftpy

    _lift_dup_cap()
    logging.getLogger("tftpy").setLevel(logging.CRITICAL)
    options = {"blksize": blksize} if blksize != 512 else {}
    client = tftpy.TftpClient(host, port, options)
    t0 = time.perf_counter()
    client.download(name, out, timeout=timeout, retries=50)
    print(time.perf_counter() - t0, flush=True)


def relay(host: str, port: int, loss: float, seed: int, max_seconds: float) -> None:
    rng = random.Random(seed)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind(("127.0.0.1", 0))
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back.bind(("127.0.0.1", 0))
    print(front.getsockname()[1], flush=True)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, "front")
    sel.register(back, selectors.EVENT_READ, "back")
    client: tuple[str, int] | None = None
    target = (host, port)
    deadline = time.monotonic() + max_seconds
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            sock = key.fileobj
            assert isinstance(sock, socket.socket)
            data, addr = sock.recvfrom(65536)
            if key.data == "front":
                client = addr
                if rng.random() >= loss:
                    back.sendto(data, target)
            else:
                target = addr  # the server's transfer port (its TID)
                if client is not None and rng.random() >= loss:
                    front.sendto(data, client)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "server":
        serve(sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 5.0)
    elif cmd == "get":
        get(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]),
            float(sys.argv[7]))
    else:
        relay(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5]),
              float(sys.argv[6]))
