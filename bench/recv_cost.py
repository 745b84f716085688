"""What one read costs the server, both ways asyncio can read a socket: a new
256 KiB ``bytes`` for each read (``recv``, asyncio's plain protocols) against a
read into one buffer and a copy of what came (``recv_into``, the device
connection's ``BufferedProtocol``). A socket pair, message sizes of a login, a
command and an upload's pieces; each figure is one send plus its reads, median of
``--runs``.

    python bench/recv_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

READ = 256 * 1024
SIZES = (120, 4096, 65536, 200_000)


def one(size: int, into: bool, rounds: int) -> float:
    a, b = socket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    buf = bytearray(READ)
    view = memoryview(buf)
    msg = b"x" * size
    try:
        t = time.perf_counter()
        for _ in range(rounds):
            a.sendall(msg)
            got = 0
            while got < size:
                if into:
                    k = b.recv_into(buf)
                    view[:k].tobytes()
                    got += k
                else:
                    got += len(b.recv(READ))
        return (time.perf_counter() - t) / rounds * 1e6
    finally:
        a.close()
        b.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    for size in SIZES:
        rounds = 2_000 if size > 10_000 else 20_000
        new = statistics.median(one(size, False, rounds) for _ in range(args.runs))
        shared = statistics.median(one(size, True, rounds) for _ in range(args.runs))
        print(f"{size:>7} bytes: recv(256 KiB) {new:7.2f} us, recv_into + copy {shared:7.2f} us "
              f"= {shared / new:.2f} of it", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
