"""Where the time of logins goes at N devices: py-spy samples the real server (a
zipapp) and every load-generator process while N devices log in (hello + login,
250 connections at once, as ``bench_scale.py --idle`` does), and prints for each
process how busy it was (samples / (rate x seconds)) and the functions holding
the most samples (by their own time and by what they call).

    python bench/profile_logins.py [--devices 1000,19500] [--sources 8] [--procs 2]
        [--rate 100] [--top 8] A.pyz

Needs py-spy (the bench extra has it) and the right to trace (root, or ptrace allowed).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import bench_scale
from common import Server, save

HERE = Path(__file__).resolve().parent
#: Samples a second (``--rate``), and functions listed (``--top``).
RATE = 100
TOP = 8


def start_spy(py_spy: str, pid: int, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([py_spy, "record", "--format", "raw", "--nonblocking", "-r",
                             str(RATE), "-o", str(out), "-p", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def read_stacks(path: Path) -> tuple[int, Counter[str], Counter[str]]:
    """Samples (imports at start-up left out), and samples by
    leaf function and by any function on the stack."""
    total, leaf, inclusive = 0, Counter[str](), Counter[str]()
    if not path.exists():
        return 0, leaf, inclusive
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        frames = stack.split(";")[1:]  # the first is the thread
        if any("_find_and_load" in f for f in frames):
            continue
        total += int(n)
        if frames:
            leaf[frames[-1]] += int(n)
        for f in set(frames):
            inclusive[f] += int(n)
    return total, leaf, inclusive


def profile(pyz: Path, n: int, procs: int, py_spy: str) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgenet-proflogin-") as tmp:
        server = Server(Path(tmp) / "s", n, extra=["--max-connections", str(n + 500)], pyz=pyz)
        spies: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        swarm = None
        try:
            time.sleep(0.5)
            spies.append(("server", start_spy(py_spy, server.proc.pid, Path(tmp) / "server.txt"),
                          Path(tmp) / "server.txt"))
            swarm = bench_scale.Swarm(bench_scale.loadgen_argv(server.port, 0, n, loop=False),
                                      n, procs)
            for i, p in enumerate(swarm.procs):
                out = Path(tmp) / f"loadgen{i}.txt"
                spies.append((f"loadgen{i}", start_spy(py_spy, p.pid, out), out))
            time.sleep(0.3)  # py-spy attaches
            login = swarm.wait_ready()
            for _, spy, _ in spies:
                spy.send_signal(signal.SIGINT)
            for _, spy, _ in spies:
                spy.wait(60)
            swarm.finish("quit")
            swarm = None
        finally:
            if swarm is not None:
                swarm.kill()
            for _, spy, _ in spies:
                if spy.poll() is None:
                    spy.kill()
            server.stop()
        seconds = login["login_seconds"] + 0.3
        result: dict[str, Any] = {"devices": n, "logins_per_s": login["logins_per_s"],
                                  "login_seconds": login["login_seconds"],
                                  "load_average": os.getloadavg()}
        for name, _, path in spies:
            total, leaf, inclusive = read_stacks(path)
            result[name] = {
                "busy": total / (RATE * seconds),
                "top_self": [(f, c / total) for f, c in leaf.most_common(TOP)] if total else [],
                # Leaving out the frames under which nearly everything runs (main, the loop).
                "top_total": [(f, c / total) for f, c in inclusive.most_common(4 * TOP)
                              if c < 0.95 * total][:2 * TOP] if total else [],
            }
    return result


def main() -> int:
    global RATE, TOP
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("pyz", type=Path)
    ap.add_argument("--devices", default="1000,19500")
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--sources", type=int, default=bench_scale.SOURCES)
    ap.add_argument("--rate", type=int, default=RATE, help="py-spy samples a second")
    ap.add_argument("--top", type=int, default=TOP, help="functions listed per process")
    args = ap.parse_args()
    RATE, TOP = args.rate, args.top
    bench_scale.SOURCES = args.sources
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(py_spy).exists() and shutil.which(py_spy) is None:
        print("py-spy is not installed (pip install py-spy)", file=sys.stderr)
        return 2
    rows = []
    for n in (int(x) for x in args.devices.split(",") if x):
        r = profile(args.pyz.resolve(), n, args.procs, py_spy)
        rows.append(r)
        print(f"{n} devices, {args.sources or 1} source address(es): "
              f"{r['logins_per_s']:.0f} logins/s over {r['login_seconds']:.1f} s, load "
              f"{r['load_average'][0]:.2f}", flush=True)
        for name in [k for k in r if k == "server" or k.startswith("loadgen")]:
            print(f"  {name}: busy {r[name]['busy']:.2f} of a core", flush=True)
            for f, share in r[name]["top_self"][:TOP]:
                print(f"      self  {share:6.1%}  {f}", flush=True)
            for f, share in r[name]["top_total"][:TOP + 4]:
                print(f"      total {share:6.1%}  {f}", flush=True)
    save("profile_logins", {"sources": args.sources, "runs": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
