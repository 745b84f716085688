"""UED upload throughput against a raw TCP copy of the same bytes to a file (fsynced),
over loopback, in the same run; and the server's peak memory during the upload.

    python bench/bench_upload.py [--sizes 1,100] [--runs 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import ROOT, Server, median, rss_kib, save

HERE = Path(__file__).resolve().parent
ENV = {"PYTHONPATH": str(ROOT)}


def make_file(path: Path, mib: int) -> None:
    block = b"".join(b"%d\n" % (i * 7919 % 100000) for i in range(200_000))
    with path.open("wb") as fh:
        while fh.tell() < mib * 2**20:
            fh.write(block[: mib * 2**20 - fh.tell()])
    # end on a whole line
    with path.open("rb+") as fh:
        fh.seek(-1, 2)
        if fh.read(1) != b"\n":
            fh.seek(-1, 2)
            fh.write(b"\n")


def peer(*args: str) -> float:
    p = subprocess.run([sys.executable, str(HERE / "upload_peer.py"), *args], capture_output=True,
                       text=True, timeout=900, env={**ENV, "PATH": "/usr/bin:/bin"}, check=False)
    if p.returncode != 0:
        raise RuntimeError(p.stderr[-2000:])
    return float(p.stdout.strip().splitlines()[-1])


def run_ued(tmp: Path, path: Path) -> dict[str, Any]:
    server = Server(tmp / "srv", 1)
    try:
        before = rss_kib(server.proc.pid, "VmHWM")
        seconds = peer("ued", "127.0.0.1", str(server.port), str(path))
        peak = rss_kib(server.proc.pid, "VmHWM")
    finally:
        server.stop()
    return {"seconds": seconds, "server_peak_rss_mib": peak / 1024,
            "server_peak_growth_mib": (peak - before) / 1024}


def run_raw(tmp: Path, path: Path) -> float:
    out = tmp / "raw"
    out.mkdir(exist_ok=True)
    recv = subprocess.Popen([sys.executable, str(HERE / "upload_peer.py"), "raw-recv", str(out)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert recv.stdout is not None
        port = recv.stdout.readline().strip()
        return peer("raw-send", "127.0.0.1", port, str(path))
    finally:
        recv.wait(60)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="1,100", help="file sizes in MiB")
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-up-") as t:
        tmp = Path(t)
        for mib in (int(x) for x in args.sizes.split(",")):
            path = tmp / "dev0-1.txt"
            make_file(path, mib)
            size = path.stat().st_size
            ued, raw = [], []
            for _ in range(args.runs):
                ued.append(run_ued(tmp, path))
                raw.append(run_raw(tmp, path))
            ued_mbs = median([size / r["seconds"] / 1e6 for r in ued])
            raw_mbs = median([size / s / 1e6 for s in raw])
            row = {"size_mib": mib, "bytes": size, "ued_mb_s": ued_mbs, "raw_tcp_mb_s": raw_mbs,
                   "ratio": ued_mbs / raw_mbs,
                   "server_peak_rss_mib": median([r["server_peak_rss_mib"] for r in ued]),
                   "server_peak_growth_mib": median([r["server_peak_growth_mib"] for r in ued]),
                   "runs": args.runs, "raw": {"ued": ued, "raw_seconds": raw}}
            rows.append(row)
            print(f"{mib:>4} MiB: UED {ued_mbs:7.1f} MB/s  raw TCP+fsync {raw_mbs:7.1f} MB/s  "
                  f"ratio {row['ratio']:.2f}  server peak RSS {row['server_peak_rss_mib']:.1f} MiB "
                  f"(+{row['server_peak_growth_mib']:.1f})", flush=True)
            path.unlink()
    save("upload", {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
