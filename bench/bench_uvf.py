"""UVF throughput benchmark over loopback, with an optional loss-injecting relay.

    python bench/bench_uvf.py                        # 200 MB, 0 / 1 / 5 % loss, 3 runs each
    python bench/bench_uvf.py --size-mb 50 --runs 5 --loss 0,0.05 --chunk 1400
    python bench/bench_uvf.py relay --target 127.0.0.1:PORT --loss 0.05   # used by tests too

Each run starts a receiving endpoint in its own process (as a second device would be), the
relay in a third process when loss > 0, and sends from this process. It reports the median
goodput of ``send_file`` (hashing, handshake, transfer, receiver's verify + fsync + rename) and
a raw TCP copy of the same file over loopback measured in the same session as the baseline.
Every loop here is bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
MAX_SECONDS = 600.0


# -- the loss-injecting relay --------------------------------------------------------------------


def run_relay(
    target: tuple[str, int], loss: float, seed: int, max_seconds: float, port: int = 0
) -> None:
    """Forward datagrams between the first client and ``target``, dropping each with
    probability ``loss`` in both directions. Prints ``PORT <n>`` once bound. Uses GRO/GSO
    so that it is not the bottleneck; stops after ``max_seconds`` or on SIGTERM/stdin EOF."""
    rng = random.Random(seed)
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (front, back):
        for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
            s.setsockopt(socket.SOL_SOCKET, opt, 4 << 20)
        try:
            s.setsockopt(SOL_UDP, UDP_GRO, 1)
        except OSError:
            pass
        s.setblocking(False)
    front.bind(("127.0.0.1", port))
    back.bind(("127.0.0.1", 0))
    print(f"PORT {front.getsockname()[1]}", flush=True)
    client: tuple[str, int] | None = None
    stop = False

    def on_term(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_term)
    sel = selectors.DefaultSelector()
    sel.register(front, selectors.EVENT_READ, "front")
    sel.register(back, selectors.EVENT_READ, "back")
    if not sys.stdin.isatty():
        try:
            sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
        except (ValueError, OSError):
            pass
    counts = {"in": 0, "dropped": 0}
    deadline = time.monotonic() + max_seconds
    cmsg = socket.CMSG_SPACE(4)

    def forward(
        src: socket.socket, dst: socket.socket, to: tuple[str, int] | None
    ) -> tuple[str, int] | None:
        sender_addr = None
        for _ in range(64):
            try:
                data, anc, _flags, addr = src.recvmsg(65535, cmsg)
            except BlockingIOError:
                break
            except OSError:
                continue
            sender_addr = addr
            seg = len(data)
            for level, kind, payload in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    seg = struct.unpack("=i", payload[:4])[0]
            keep = []
            for i in range(0, len(data), seg):
                counts["in"] += 1
                if rng.random() < loss:
                    counts["dropped"] += 1
                else:
                    keep.append(data[i : i + seg])
            dest = to if to is not None else addr
            if dest is None:
                continue
            i = 0
            while i < len(keep):
                size = len(keep[i])
                j = i + 1
                while (
                    j < len(keep)
                    and j - i < 64
                    and len(keep[j]) == size
                    and (j - i + 1) * size <= 65000
                ):
                    j += 1
                if (
                    j < len(keep)
                    and len(keep[j]) < size
                    and j - i < 64
                    and (j - i + 1) * size <= 65000
                ):
                    j += 1
                try:
                    if j - i > 1:
                        dst.sendmsg(
                            [b"".join(keep[i:j])],
                            [(SOL_UDP, UDP_SEGMENT, struct.pack("=H", size))],
                            0,
                            dest,
                        )
                    else:
                        dst.sendto(keep[i], dest)
                except OSError:
                    counts["dropped"] += j - i
                i = j
        return sender_addr

    while not stop and time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            if key.data == "front":
                addr = forward(front, back, target)
                if addr is not None:
                    client = addr
            elif key.data == "back":
                forward(back, front, client)
            elif key.data == "stdin" and not os.read(sys.stdin.fileno(), 4096):
                stop = True
    print(f"RELAYED {counts['in']} DROPPED {counts['dropped']}", flush=True)


def start_relay(target_port: int, loss: float, seed: int = 1,
                max_seconds: float = MAX_SECONDS) -> tuple[subprocess.Popen[str], int]:
    """The loss-injecting relay in its own process, forwarding to ``target_port``."""
    return _start(["relay", "--target", f"127.0.0.1:{target_port}", "--loss", str(loss),
                   "--seed", str(seed), "--max-seconds", str(max_seconds)])


def stop_process(proc: subprocess.Popen[str]) -> None:
    try:
        if proc.stdin is not None:
            proc.stdin.close()
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


# -- receiving device (subprocess) ---------------------------------------------------------------


async def _receive_main(data_dir: Path, chunk: int) -> None:
    from edgenet.rudp import TransferOptions
    from edgenet.rudp.endpoint import TransferEndpoint

    ep = await TransferEndpoint.bind(
        "127.0.0.1", 0, data_dir, options=TransferOptions(chunk_size=chunk)
    )
    print(f"PORT {ep.port}", flush=True)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()
    loop.add_reader(
        sys.stdin.fileno(), lambda: done.set() if not os.read(sys.stdin.fileno(), 4096) else None
    )
    try:
        await asyncio.wait_for(done.wait(), MAX_SECONDS)
    except asyncio.TimeoutError:
        pass
    await ep.close()


def _tcp_receive_main(data_dir: Path) -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    print(f"PORT {srv.getsockname()[1]}", flush=True)
    srv.settimeout(MAX_SECONDS)
    conn, _ = srv.accept()
    buf = bytearray(1 << 20)
    view = memoryview(buf)
    with open(data_dir / "tcp.bin", "wb") as f:
        while n := conn.recv_into(buf):
            f.write(view[:n])
        f.flush()
        os.fsync(f.fileno())
    conn.sendall(b"ok")
    conn.close()


def _start(args: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("PORT "):
        proc.kill()
        raise RuntimeError(f"helper did not start: {line!r}")
    return proc, int(line.split()[1])


# -- measurements --------------------------------------------------------------------------------


def measure_tcp(src: Path, work: Path) -> float:
    rdir = work / "tcp"
    rdir.mkdir(exist_ok=True)
    proc, port = _start(["tcp-receive", "--data-dir", str(rdir)])
    try:
        start = time.perf_counter()
        with (
            socket.create_connection(("127.0.0.1", port), timeout=MAX_SECONDS) as s,
            open(src, "rb") as f,
        ):
            s.sendfile(f)
            s.shutdown(socket.SHUT_WR)
            s.recv(2)
        elapsed = time.perf_counter() - start
    finally:
        stop_process(proc)
    (rdir / "tcp.bin").unlink(missing_ok=True)
    return src.stat().st_size / elapsed


async def _send_once(src: Path, port: int, chunk: int) -> tuple[float, float, dict[str, int]]:
    from edgenet.rudp import TransferEvent, TransferOptions
    from edgenet.rudp.endpoint import TransferEndpoint

    accepted: list[float] = []

    def on_event(ev: TransferEvent) -> None:
        if ev.kind == "outgoing_started":
            accepted.append(time.perf_counter())

    with tempfile.TemporaryDirectory() as tmp:
        ep = await TransferEndpoint.bind(
            "127.0.0.1", 0, Path(tmp), options=TransferOptions(chunk_size=chunk), on_event=on_event
        )
        try:
            start = time.perf_counter()
            size = await asyncio.wait_for(
                ep.send_file(("127.0.0.1", port), src, "bench"), MAX_SECONDS
            )
            end = time.perf_counter()
        finally:
            await ep.close()
    wire = end - (accepted[0] if accepted else start)
    return size / (end - start), size / wire, {"retransmissions": ep.stats.retransmissions}


def measure_uvf(
    src: Path, work: Path, loss: float, chunk: int, seed: int
) -> tuple[float, float, int]:
    rdir = work / f"uvf-{loss}-{seed}"
    rdir.mkdir()
    proc, port = _start(["receive", "--data-dir", str(rdir), "--chunk", str(chunk)])
    relay = None
    try:
        if loss > 0:
            relay, port = start_relay(port, loss, seed)
        total, wire, stats = asyncio.run(_send_once(src, port, chunk))
    finally:
        if relay is not None:
            stop_process(relay)
        stop_process(proc)
    for f in rdir.iterdir():
        f.unlink()
    rdir.rmdir()
    return total, wire, stats["retransmissions"]


def bench(args: argparse.Namespace) -> None:
    losses = [float(x) for x in args.loss.split(",")]
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        work = Path(tmp)
        src = work / "source.bin"
        with open(src, "wb") as f:
            rng = random.Random(7)
            f.writelines(rng.randbytes(1_000_000) for _ in range(args.size_mb))
        print(
            f"file {args.size_mb} MB, chunk {args.chunk} B, {args.runs} runs per setting",
            flush=True,
        )
        tcp = [measure_tcp(src, work) for _ in range(args.runs)]
        result: dict[str, object] = {"file_mb": args.size_mb, "chunk": args.chunk,
                                     "runs": args.runs,
                                     "raw_tcp_mb_s": statistics.median(tcp) / 1e6, "loss": {}}
        print(
            f"raw TCP over loopback: median {statistics.median(tcp) / 1e6:.1f} MB/s "
            f"(runs: {', '.join(f'{x / 1e6:.0f}' for x in tcp)})",
            flush=True,
        )
        for loss in losses:
            totals, wires, retx = [], [], []
            for run in range(args.runs):
                total, wire, r = measure_uvf(src, work, loss, args.chunk, seed=run + 1)
                totals.append(total)
                wires.append(wire)
                retx.append(r)
            print(
                f"UVF loss {loss * 100:4.1f}%: median {statistics.median(totals) / 1e6:6.1f} MB/s end to end "
                f"({statistics.median(wires) / 1e6:6.1f} MB/s from accept to confirmation); runs: "
                f"{', '.join(f'{x / 1e6:.0f}' for x in totals)}; retransmissions {retx}",
                flush=True,
            )
            result["loss"][str(loss)] = {  # type: ignore[index]
                "uvf_mb_s": statistics.median(totals) / 1e6, "runs_mb_s": [x / 1e6 for x in totals],
                "retransmissions": retx}
        out = ROOT / "build" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        (out / "uvf.json").write_text(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd")
    relay = sub.add_parser("relay")
    relay.add_argument("--target", required=True)
    relay.add_argument("--loss", type=float, default=0.05)
    relay.add_argument("--seed", type=int, default=1)
    relay.add_argument("--port", type=int, default=0)
    relay.add_argument("--max-seconds", type=float, default=MAX_SECONDS)
    receive = sub.add_parser("receive")
    receive.add_argument("--data-dir", type=Path, required=True)
    receive.add_argument("--chunk", type=int, default=1400)
    tcp = sub.add_parser("tcp-receive")
    tcp.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--loss", default="0,0.01,0.05")
    parser.add_argument("--chunk", type=int, default=1400)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()
    if args.cmd == "relay":
        host, port = args.target.rsplit(":", 1)
        run_relay((host, int(port)), args.loss, args.seed, args.max_seconds, args.port)
    elif args.cmd == "receive":
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
        asyncio.run(_receive_main(args.data_dir, args.chunk))
    elif args.cmd == "tcp-receive":
        _tcp_receive_main(args.data_dir)
    else:
        import structlog

        structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
        bench(args)


if __name__ == "__main__":
    main()
