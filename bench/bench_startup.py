"""Start-up and size: ``edgenet.pyz --version`` cold (first run: shiv extracts its
site-packages) and warm, the zipapp's size, and the server's RSS when idle.

    python bench/bench_startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PYZ, Server, median, rss_kib, save


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True, env=env, timeout=120)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    cold, warm, bare = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="edgenet-shiv-") as root:
            env = {**os.environ, "SHIV_ROOT": root}
            cold.append(timed([sys.executable, str(PYZ), "--version"], env))
            warm.append(timed([sys.executable, str(PYZ), "--version"], env))
            # The floor in the same run: the interpreter starting and doing nothing.
            bare.append(timed([sys.executable, "-c", "pass"], env))
    with tempfile.TemporaryDirectory(prefix="edgenet-idle-") as tmp:
        server = Server(Path(tmp), 6)
        try:
            time.sleep(1.0)
            idle = rss_kib(server.proc.pid) / 1024
        finally:
            server.stop()
    result = {"cold_s": median(cold), "warm_s": median(warm), "python_floor_s": median(bare),
              "pyz_bytes": PYZ.stat().st_size, "server_idle_rss_mib": idle, "runs": args.runs,
              "raw": {"cold": cold, "warm": warm, "python_floor": bare}}
    print(f"pyz --version: cold {result['cold_s']:.3f} s  warm {result['warm_s']:.3f} s  "
          f"(python -c pass {result['python_floor_s']:.3f} s)  size "
          f"{result['pyz_bytes'] / 2**20:.2f} MiB  server idle RSS {idle:.1f} MiB", flush=True)
    save("startup", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
