"""What one read costs the server, both ways asyncio can read a socket: a new
256 KiB ``bytes`` for each read (``recv``, asyncio's plain protocols) against a
read into one buffer and a copy of what came (``recv_into``, the device
connection's ``BufferedProtocol``). A socket pair, message sizes of a login, a
command and an upload's pieces; each figure is one send plus its reads, median of
``--runs``; JSON in ``build/bench/recv_cost.json``.

glibc serves an allocation of 256 KiB with mmap until the free of such a block
raises its threshold; asyncio shrinks each read's bytes with realloc, which does not,
so in a process that has freed no block that large every read maps and unmaps
256 KiB. The last column is ``recv`` again after one such free (what a process
that has freed one sees). Run in a fresh process: nothing else here allocates.

    python bench/recv_cost.py [--runs 5]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import sys
import time

from common import save

READ = 256 * 1024
SIZES = (120, 4096, 65536, 200_000)
#: One socket pair and one read buffer for the whole run (made once, never freed).
_A, _B = socket.socketpair()
_A.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
_B.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
_BUF = bytearray(READ)
_VIEW = memoryview(_BUF)


def one(size: int, into: bool, rounds: int) -> float:
    msg = b"x" * size
    t = time.perf_counter()
    for _ in range(rounds):
        _A.sendall(msg)
        got = 0
        while got < size:
            if into:
                k = _B.recv_into(_BUF)
                _VIEW[:k].tobytes()
                got += k
            else:
                got += len(_B.recv(READ))
    return (time.perf_counter() - t) / rounds * 1e6


def measure(runs: int) -> list[dict[str, float]]:
    return [{"bytes": size,
             **{name: statistics.median(one(size, into, 2_000 if size > 10_000 else 20_000)
                                        for _ in range(runs))
                for name, into in (("recv_us", False), ("recv_into_us", True))}}
            for size in SIZES]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    fresh = measure(args.runs)
    del_me = bytearray(READ)  # one free of a 256 KiB block: glibc's threshold rises
    del del_me
    after = measure(args.runs)
    rows = []
    for f, a in zip(fresh, after):
        rows.append({**f, "ratio": f["recv_into_us"] / f["recv_us"],
                     "recv_after_free_us": a["recv_us"]})
        print(f"{f['bytes']:>7} bytes: recv(256 KiB) {f['recv_us']:7.2f} us, recv_into + copy "
              f"{f['recv_into_us']:7.2f} us = {rows[-1]['ratio']:.2f} of it; recv after a "
              f"256 KiB free {a['recv_us']:7.2f} us", flush=True)
    save("recv_cost", {"runs": args.runs, "sizes": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
