"""UVF between two real clients (processes of the zipapp, logged in to a real
server) against a raw TCP copy of the same file and against TFTP (tftpy, RFC 1350
lock-step, at 512- and 1428-byte blocks), at 0%, 1% and 5% random loss through
a loss-injecting UDP relay on loopback, all in the same run.

    python bench/bench_p2p.py [--size-mb 100] [--runs 3] [--loss 0,0.01,0.05]

The receiving client advertises the relay's port to the server
(--advertise-udp-port), so the sender's lookup sends its datagrams through the
relay. Every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from common import PYZ, Server, median, save

HERE = Path(__file__).resolve().parent
TIMEOUT = 300.0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Client:
    """A scripted client process of the zipapp whose output lines are timestamped."""

    def __init__(self, port: int, data: Path, udp: int, name: str, extra: list[str]) -> None:
        data.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(PYZ), "client", "127.0.0.1", str(port), str(udp),
             "--data-dir", str(data), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True, bufsize=1)
        self.lines: queue.Queue[tuple[float, str] | None] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        self.send(name)
        self.send(f"pw{name[3:]}")
        self.wait_for("Welcome")

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put((time.perf_counter(), line.rstrip("\n")))
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> float:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                item = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is None:
                raise RuntimeError(f"client exited before {text!r}")
            if text in item[1]:
                return item[0]
            if "failed" in item[1]:
                raise RuntimeError(item[1])
        raise RuntimeError(f"no {text!r} within {timeout} s")

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def start_relay(target_port: int, loss: float, seed: int) -> tuple[subprocess.Popen[str], int]:
    from bench_uvf import start_relay as relay

    return relay(target_port, loss, seed, max_seconds=TIMEOUT)


def uvf_run(server: Server, work: Path, src: Path, loss: float, seed: int) -> float:
    """Seconds from the sender's UVF to its 'has been uploaded' line."""
    recv_udp = free_udp_port()
    relay, relay_port = start_relay(recv_udp, loss, seed)
    recv_dir = work / f"recv-{seed}-{loss}"
    receiver = Client(server.port, recv_dir, recv_udp, "dev1",
                      ["--advertise-udp-port", str(relay_port)])
    send_dir = work / "send"
    sender = Client(server.port, send_dir, 0, "dev0", [])
    try:
        shutil.copyfile(src, send_dir / src.name) if not (send_dir / src.name).exists() else None
        sender.send(f"UVF dev1 {src.name}")
        t0 = sender.wait_for("sending")
        t1 = sender.wait_for("has been uploaded")
        got = recv_dir / f"dev0_{src.name}"
        if got.stat().st_size != src.stat().st_size:
            raise RuntimeError("received file has the wrong size")
    finally:
        sender.close()
        receiver.close()
        relay.terminate()
        relay.wait(10)
        shutil.rmtree(recv_dir, ignore_errors=True)
    return t1 - t0


def raw_tcp_run(work: Path, src: Path) -> float:
    out = work / "raw"
    out.mkdir(exist_ok=True)
    recv = subprocess.Popen([sys.executable, str(HERE / "upload_peer.py"), "raw-recv", str(out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        port = recv.stdout.readline().strip()
        p = subprocess.run([sys.executable, str(HERE / "upload_peer.py"), "raw-send", "127.0.0.1",
                            port, str(src)], capture_output=True, text=True, timeout=TIMEOUT, check=False)
        return float(p.stdout.strip())
    finally:
        recv.wait(60)
        shutil.rmtree(out, ignore_errors=True)


def tftp_run(work: Path, src: Path, blksize: int, loss: float, seed: int) -> float | None:
    """Seconds for tftpy to fetch ``src`` through the relay, or None if it gave up."""
    server = subprocess.Popen([sys.executable, str(HERE / "tftp_peer.py"), "server",
                               str(src.parent), "0.25"], stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True)
    relay = None
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        time.sleep(0.2)
        relay = subprocess.Popen([sys.executable, str(HERE / "tftp_peer.py"), "relay",
                                  "127.0.0.1", str(port), str(loss), str(seed), str(TIMEOUT)],
                                 stdout=subprocess.PIPE, text=True)
        assert relay.stdout is not None
        rport = int(relay.stdout.readline())
        out = work / "tftp-out.bin"
        p = subprocess.run([sys.executable, str(HERE / "tftp_peer.py"), "get", "127.0.0.1",
                            str(rport), src.name, str(out), str(blksize), "1"],
                           capture_output=True, text=True, timeout=TIMEOUT, check=False)
        if p.returncode != 0 or not out.exists() or out.stat().st_size != src.stat().st_size:
            return None
        return float(p.stdout.strip().splitlines()[-1])
    except subprocess.TimeoutExpired:
        return None
    finally:
        for proc in (relay, server):
            if proc is not None:
                proc.terminate()
                proc.wait(10)


def make_file(path: Path, size: int) -> None:
    block = os.urandom(1 << 20)
    with path.open("wb") as fh:
        while fh.tell() < size:
            fh.write(block[: size - fh.tell()])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=int, default=100)
    ap.add_argument("--tftp-mb", type=float, default=10, help="file size for lossless TFTP")
    ap.add_argument("--tftp-lossy-kb", type=int, default=500, help="file size for lossy TFTP")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--loss", default="0,0.01,0.05")
    ap.add_argument("--no-lossy-tftp", action="store_true")
    args = ap.parse_args()
    losses = [float(x) for x in args.loss.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-p2p-") as t:
        work = Path(t)
        src = work / "video.bin"
        make_file(src, args.size_mb * 10**6)
        tftp_dir = work / "tftp"
        tftp_dir.mkdir()
        tftp_big = tftp_dir / "big.bin"
        make_file(tftp_big, int(args.tftp_mb * 10**6))
        tftp_small = tftp_dir / "small.bin"
        make_file(tftp_small, args.tftp_lossy_kb * 1000)
        server = Server(work / "server", 2)
        try:
            for loss in losses:
                uvf, raw, tftp512, tftp1428 = [], [], [], []
                tfile = tftp_big if loss == 0 else tftp_small
                for run in range(args.runs):
                    uvf.append(src.stat().st_size / uvf_run(server, work, src, loss, run + 1) / 1e6)
                    raw.append(src.stat().st_size / raw_tcp_run(work, src) / 1e6)
                    if loss == 0 or not args.no_lossy_tftp:
                        for blk, bucket in ((512, tftp512), (1428, tftp1428)):
                            secs = tftp_run(work, tfile, blk, loss, run + 1)
                            bucket.append(tfile.stat().st_size / secs / 1e6 if secs else 0.0)
                row = {
                    "loss": loss, "file_mb": args.size_mb,
                    "uvf_mb_s": median(uvf), "raw_tcp_mb_s": median(raw),
                    "tftp512_mb_s": median(tftp512) if tftp512 else None,
                    "tftp1428_mb_s": median(tftp1428) if tftp1428 else None,
                    "tftp_file_mb": tfile.stat().st_size / 1e6,
                    "runs": args.runs,
                    "raw": {"uvf": uvf, "raw_tcp": raw, "tftp512": tftp512, "tftp1428": tftp1428},
                }
                row["uvf_vs_raw"] = row["uvf_mb_s"] / row["raw_tcp_mb_s"]
                if row["tftp512_mb_s"]:
                    row["uvf_vs_tftp512"] = row["uvf_mb_s"] / row["tftp512_mb_s"]
                rows.append(row)
                t512 = f"{row['tftp512_mb_s']:.2f}" if row["tftp512_mb_s"] is not None else "-"
                t1428 = f"{row['tftp1428_mb_s']:.2f}" if row["tftp1428_mb_s"] is not None else "-"
                print(f"loss {loss * 100:4.1f}%: UVF {row['uvf_mb_s']:7.1f} MB/s  raw TCP "
                      f"{row['raw_tcp_mb_s']:7.1f} MB/s  TFTP-512 {t512} MB/s  TFTP-1428 {t1428} "
                      f"MB/s  (UVF runs: {', '.join(f'{x:.0f}' for x in uvf)})", flush=True)
        finally:
            server.stop()
    lossless = next((r for r in rows if r["loss"] == 0), None)
    for r in rows:
        if lossless:
            r["uvf_vs_own_lossless"] = r["uvf_mb_s"] / lossless["uvf_mb_s"]
    save("p2p", {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
