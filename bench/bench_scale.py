"""Devices at scale: N devices logged in at once over loopback, each looping on AED
and SCS, against the real server (the zipapp) and against a bare asyncio server
that only decodes and answers frames (the ceiling), in the same run.

    python bench/bench_scale.py [--devices 100,1000,5000] [--seconds 5] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import Server, cpu_seconds, median, rss_kib, save

HERE = Path(__file__).resolve().parent


def loadgen(port: int, devices: int, seconds: float, rate: float = 0.0) -> dict[str, Any]:
    p = subprocess.run([sys.executable, str(HERE / "loadgen.py"), str(port), str(devices),
                        str(seconds), "--rate", str(rate)], capture_output=True, text=True,
                       timeout=seconds + 300, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"loadgen failed: {p.stderr[-2000:]}")
    return json.loads(p.stdout)


def run_edgenet(devices: int, seconds: float, rate: float = 0.0) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-") as tmp:
        server = Server(Path(tmp), devices)
        try:
            idle_rss = rss_kib(server.proc.pid)
            cpu0 = cpu_seconds(server.proc.pid)
            t0 = time.perf_counter()
            result = loadgen(server.port, devices, seconds, rate)
            wall = time.perf_counter() - t0
            result["server_cpu_share"] = (cpu_seconds(server.proc.pid) - cpu0) / wall
            result["server_rss_mib"] = rss_kib(server.proc.pid) / 1024
            result["server_peak_rss_mib"] = rss_kib(server.proc.pid, "VmHWM") / 1024
            result["server_idle_rss_mib"] = idle_rss / 1024
        finally:
            server.stop()
    return result


def run_bare(devices: int, seconds: float, same_replies: bool) -> dict[str, Any]:
    extra = ["--devices", str(devices)] if same_replies else []
    proc = subprocess.Popen([sys.executable, str(HERE / "bare_server.py"), *extra],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        return loadgen(port, devices, seconds)
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--devices", default="100,1000,5000")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=float, default=5000.0,
                    help="offered commands/s of the latency run (default 5000)")
    args = ap.parse_args()
    rows = []
    for n in (int(x) for x in args.devices.split(",")):
        ours, bare, bare_min, paced = [], [], [], []
        for _ in range(args.runs):
            # Interleaved, so all see the same noise on a shared machine.
            ours.append(run_edgenet(n, args.seconds))
            bare.append(run_bare(n, args.seconds, same_replies=True))
            bare_min.append(run_bare(n, args.seconds, same_replies=False))
            paced.append(run_edgenet(n, args.seconds, args.rate))
        row = {
            "devices": n,
            "commands_per_s": median([r["commands_per_s"] for r in ours]),
            "p50_ms": median([r["p50_ms"] for r in ours]),
            "p99_ms": median([r["p99_ms"] for r in ours]),
            "logins_per_s": median([r["logins_per_s"] for r in ours]),
            "server_rss_mib": median([r["server_rss_mib"] for r in ours]),
            "server_peak_rss_mib": median([r["server_peak_rss_mib"] for r in ours]),
            "server_cpu_share": median([r["server_cpu_share"] for r in ours]),
            "loadgen_cpu_share": median([r["loadgen_cpu_share"] for r in ours]),
            "errors": sum(r["errors"] for r in ours) + sum(r["errors"] for r in paced),
            "paced_offered_per_s": args.rate,
            "paced_commands_per_s": median([r["commands_per_s"] for r in paced]),
            "paced_p50_ms": median([r["p50_ms"] for r in paced]),
            "paced_p99_ms": median([r["p99_ms"] for r in paced]),
            "paced_server_rss_mib": median([r["server_rss_mib"] for r in paced]),
            "bare_commands_per_s": median([r["commands_per_s"] for r in bare]),
            "bare_minimal_commands_per_s": median([r["commands_per_s"] for r in bare_min]),
            "bare_p99_ms": median([r["p99_ms"] for r in bare]),
            "bare_loadgen_cpu_share": median([r["loadgen_cpu_share"] for r in bare]),
            "runs": args.runs, "seconds": args.seconds,
            "raw": {"edgenet": ours, "bare": bare, "bare_minimal": bare_min, "paced": paced},
        }
        row["ratio_to_bare"] = row["commands_per_s"] / row["bare_commands_per_s"]
        row["ratio_to_bare_minimal"] = row["commands_per_s"] / row["bare_minimal_commands_per_s"]
        rows.append(row)
        print(f"{n:>5} devices: {row['commands_per_s']:8.0f} cmd/s  p50 {row['p50_ms']:6.2f} ms  "
              f"p99 {row['p99_ms']:6.2f} ms  logins {row['logins_per_s']:6.0f}/s  "
              f"RSS {row['server_rss_mib']:6.1f} MiB  bare {row['bare_commands_per_s']:8.0f} cmd/s "
              f" ratio {row['ratio_to_bare']:.2f} (minimal-reply bare "
              f"{row['bare_minimal_commands_per_s']:.0f}, ratio {row['ratio_to_bare_minimal']:.2f})"
              f"  loadgen CPU {row['loadgen_cpu_share']:.2f}  | "
              f"paced {row['paced_commands_per_s']:.0f}/{args.rate:.0f} cmd/s p50 "
              f"{row['paced_p50_ms']:.2f} ms p99 {row['paced_p99_ms']:.2f} ms", flush=True)
    save("scale", {"rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
