"""Where a command's time goes: py-spy samples the real server (a zipapp) while N
devices loop on AED and SCS (closed loop), and the share of samples in logging
(structlog, the event ring buffer, the line batcher) and in ``transport.write`` is
printed, for each zipapp given, alternately.

    python bench/profile_commands.py [--devices 1000] [--seconds 5] [--runs 3] A.pyz [B.pyz]

Needs py-spy (``pip install py-spy``; the bench extra has it) and the right to
trace the server (root, or ptrace allowed).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from common import Server, median, save

HERE = Path(__file__).resolve().parent
GROUPS = {
    "logging": ("structlog", "edgenet/logconfig.py", "edgenet/server/events.py",
                "admin_api/metrics.py"),
    "transport_write": ("Transport.write (asyncio/selector_events.py",),
}


def profile(pyz: Path, devices: int, seconds: float, py_spy: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="edgenet-prof-") as tmp:
        server = Server(Path(tmp), devices, extra=["--max-connections", str(devices + 100)],
                        pyz=pyz)
        try:
            gen = subprocess.Popen([sys.executable, str(HERE / "loadgen.py"), str(server.port),
                                    str(devices), str(seconds + 2)], stdout=subprocess.PIPE,
                                   text=True)
            assert gen.stdout is not None
            gen.stdout.readline()  # READY: logged in, uploaded, looping now
            time.sleep(0.5)
            out = Path(tmp) / "stacks.txt"
            subprocess.run([py_spy, "record", "--format", "raw", "--nonblocking", "-r", "200",
                            "-d", str(int(seconds)), "-o", str(out), "-p", str(server.proc.pid)],
                           check=True, capture_output=True, timeout=seconds + 60)
            gen.communicate(timeout=seconds + 120)
            counts: Counter[str] = Counter()
            total = 0
            for line in out.read_text().splitlines():
                stack, _, n = line.rpartition(" ")
                if not n.isdigit():
                    continue
                total += int(n)
                for group, needles in GROUPS.items():
                    if any(x in stack for x in needles):
                        counts[group] += int(n)
        finally:
            server.stop()
    return {g: counts[g] / total if total else float("nan") for g in GROUPS} | {"samples": total}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("pyz", nargs="+", type=Path)
    ap.add_argument("--devices", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() and shutil.which(py_spy) is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    runs: dict[str, list[dict[str, float]]] = {str(p): [] for p in args.pyz}
    for _ in range(args.runs):
        for pyz in args.pyz:  # alternately: both see the same noise
            runs[str(pyz)].append(profile(pyz.resolve(), args.devices, args.seconds, py_spy))
    out = {}
    for pyz, rows in runs.items():
        out[pyz] = {g: median([r[g] for r in rows]) for g in [*GROUPS, "samples"]} | {"raw": rows}
        print(f"{pyz}: " + ", ".join(f"{g} {out[pyz][g]:.1%}" for g in GROUPS)
              + f" of {out[pyz]['samples']:.0f} samples (median of {len(rows)})", flush=True)
    save("profile_commands", out)
    print(json.dumps({k: {g: v[g] for g in GROUPS} for k, v in out.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
