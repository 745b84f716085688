"""Devices at scale, against the real server (the zipapp) and baselines measured in
the same run: a bare asyncio server that only decodes and answers frames (the
ceiling), Mosquitto (when installed: the same connections, MQTT CONNECT/CONNACK,
250 at once as for edgenet and, as ``mosquitto@100``, 100 at once: its fixed listen
backlog), and optionally a previous zipapp (``--baseline-pyz``: before/after, alternating).

Three parts, each repeated ``--runs`` times, the servers taken in turn:

* ``--idle N,...``: N devices log in (hello + login in one write, as the headless
  client sends them, BATCH connections at once; ``edgenet:stepwise`` waits for the
  hello answer first, as the interactive shell) and stay idle for ``--hold`` s:
  logins/s, server RSS over idle (KiB a connection). ``bare`` is the login ceiling:
  the bare server answering the same frames with no work at all.
* ``--slow N``: N slow readers (8 KiB receive buffers) loop on AED and SCS for
  ``--seconds``: server RSS sampled every 0.5 s (its peak and growth over the run).
* ``--devices N,...``: N devices loop on AED and SCS, closed loop (commands/s against
  the bare server's), then paced at ``--pace`` of the bare server's ceiling (p50/p99).

    python bench/bench_scale.py [--idle 1000,5000] [--slow 0] [--devices 1000]
        [--seconds 5] [--slow-seconds 30] [--runs 3] [--procs 2] [--sources 8]
        [--baseline-pyz OLD.pyz]

The load generators (and the Mosquitto probe) connect from ``--sources`` loopback
addresses, 127.0.0.2 on, each with its own ephemeral ports (0: all from 127.0.0.1).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from common import PYZ, Server, cpu_seconds, median, percentile, rss_kib, save

HERE = Path(__file__).resolve().parent
#: A server past this RSS is stopped (the run reports "over the cap").
RSS_CAP_MIB = 6144
#: Connections opened at once (over all load-generator processes).
BATCH = 250
#: Mosquitto 2.0 listens with a fixed backlog of 100 (``listen(sock, 100)``): 250
#: connections at once overflow its accept queue, and the kernel's SYN-ACK retry (1 s)
#: then sets its rate. ``mosquitto@100`` connects 100 at a time, the most it takes.
MOSQUITTO_BACKLOG = 100


class Swarm:
    """Load-generator processes (bench/loadgen.py or bench/mqtt_probe.py) sharing N
    devices: started together, each says READY once its devices are in."""

    def __init__(self, argv: Callable[[int, int, int], list[str]], n: int, procs: int,
                 at_once: int = BATCH) -> None:
        procs = max(1, min(procs, n))
        share = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        firsts = [sum(share[:i]) for i in range(procs)]
        # ``at_once`` connections at once in all: each process opens its share of them.
        batch = max(1, at_once // procs)
        self.procs = [subprocess.Popen([sys.executable, *argv(first, count, batch)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                      for first, count in zip(firsts, share)]
        self.n = n
        self.ready: list[dict[str, Any]] = []

    def wait_ready(self, timeout: float = 600) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for p in self.procs:
            assert p.stdout is not None
            while time.monotonic() < deadline:
                line = p.stdout.readline()
                if not line:
                    raise RuntimeError(f"load generator {p.pid} ended before READY")
                if line.startswith("READY "):
                    self.ready.append(json.loads(line[6:]))
                    break
        start = min(r["login_start"] for r in self.ready)
        end = max(r["login_end"] for r in self.ready)
        failed = sum(r["login_failed"] for r in self.ready)
        return {"logins_per_s": (self.n - failed) / (end - start), "login_seconds": end - start,
                "login_failed": failed, "loadgen_login_cpu_share":
                    sum(r["login_cpu_s"] for r in self.ready) / (end - start),
                "login_start": start, "login_end": end}

    def finish(self, word: str, timeout: float = 600) -> list[dict[str, Any]]:
        out = []
        for p in self.procs:
            assert p.stdin is not None and p.stdout is not None
            try:
                p.stdin.write(word + "\n")
                p.stdin.flush()
            except BrokenPipeError:
                pass
        for p in self.procs:
            assert p.stdout is not None
            text, _ = p.communicate(timeout=timeout)
            lines = [x for x in text.splitlines() if x.startswith("{")]
            if p.returncode != 0 or not lines:
                raise RuntimeError(f"load generator {p.pid} failed (exit {p.returncode})")
            result = json.loads(lines[-1])
            if "out" in result:
                path = Path(result["out"])
                result = json.loads(path.read_text())
                path.unlink()
            out.append(result)
        return out

    def kill(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)


#: Loopback source addresses the load generators connect from (``--sources``).
SOURCES = 8


def loadgen_argv(port: int, seconds: float, total: int, *, loop: bool, rate: float = 0.0,
                 slow: bool = False, stepwise: bool = False
                 ) -> Callable[[int, int, int], list[str]]:
    def argv(first: int, count: int, batch: int) -> list[str]:
        out = Path(tempfile.gettempdir()) / f"edgenet-loadgen-{port}-{first}.json"
        return [str(HERE / "loadgen.py"), str(port), str(count), str(seconds), "--first",
                str(first), "--total", str(total), "--rate", str(rate), "--sync",
                "--batch", str(batch), "--out", str(out), "--sources", str(SOURCES),
                *(["--slow"] if slow else []), *([] if loop else ["--no-loop"]),
                *(["--stepwise"] if stepwise else [])]
    return argv


class Mosquitto:
    """A Mosquitto broker of its own on a free loopback port, minimal configuration."""

    def __init__(self, workdir: Path) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        conf = workdir / "mosquitto.conf"
        conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
                        "max_connections -1\npersistence false\nlog_type error\n")
        self.proc = subprocess.Popen([mosquitto_path() or "mosquitto", "-c", str(conf)],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def listen_overflows() -> int:
    """The kernel's count of connections dropped at a full accept queue (TcpExt
    ListenOverflows): one server runs at a time, so a difference is that server's."""
    lines = [x.split() for x in Path("/proc/net/netstat").read_text().splitlines()
             if x.startswith("TcpExt:")]
    if len(lines) < 2 or "ListenOverflows" not in lines[0]:
        return 0
    return int(lines[1][lines[0].index("ListenOverflows")])


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/bin/mosquitto") if Path(p).exists()), None)


class RssWatch:
    """Samples a process's RSS every 0.5 s; stops the process past the cap."""

    def __init__(self, pid: int, stop: Callable[[], None]) -> None:
        self.pid, self._stop_proc = pid, stop
        self.samples: list[tuple[float, float]] = []
        self.over_cap = False
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._done.wait(0.5):
            try:
                mib = rss_kib(self.pid) / 1024
            except OSError:
                return
            self.samples.append((time.monotonic(), mib))
            if mib > RSS_CAP_MIB:
                self.over_cap = True
                self._stop_proc()
                return

    def stop(self) -> list[tuple[float, float]]:
        self._done.set()
        self._thread.join(5)
        return self.samples


class Bare:
    """bench/bare_server.py in its own process (``devices``: AED replies of that size)."""

    def __init__(self, devices: int = 0) -> None:
        self.proc = subprocess.Popen([sys.executable, str(HERE / "bare_server.py"),
                                      *(["--devices", str(devices)] if devices else [])],
                                     stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def server_for(kind: str, tmp: Path, n: int, pyz: dict[str, Path]) -> tuple[Any, int, int]:
    """(handle, port, pid) of a server of ``kind``: a tree's zipapp (``tree:stepwise``
    the same server), mosquitto, or the bare server."""
    if kind.startswith("mosquitto"):
        mq = Mosquitto(tmp)
        return mq, mq.port, mq.proc.pid
    if kind == "bare":
        bare = Bare()
        return bare, bare.port, bare.proc.pid
    tree = kind.split(":")[0]
    srv = Server(tmp / tree, n, extra=["--max-connections", str(n + 500)], pyz=pyz[tree])
    return srv, srv.port, srv.proc.pid


def run_idle(kind: str, n: int, hold: float, procs: int, pyz: dict[str, Path]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-") as tmp:
        handle, port, pid = server_for(kind, Path(tmp), n, pyz)
        swarm = None
        try:
            time.sleep(0.5)
            idle = rss_kib(pid)
            cpu0 = cpu_seconds(pid)
            overflows0 = listen_overflows()
            if kind.startswith("mosquitto"):
                def argv(first: int, count: int, batch: int) -> list[str]:
                    return [str(HERE / "mqtt_probe.py"), str(port), str(count), "--first",
                            str(first), "--batch", str(batch), "--sources", str(SOURCES)]
                swarm = Swarm(argv, n, procs,
                              MOSQUITTO_BACKLOG if kind == "mosquitto@100" else BATCH)
            else:
                swarm = Swarm(loadgen_argv(port, 0, n, loop=False,
                                           stepwise=kind.endswith(":stepwise")), n, procs)
            r = swarm.wait_ready()
            server_cpu = cpu_seconds(pid) - cpu0
            r["server_login_cpu_share"] = server_cpu / r["login_seconds"]
            r["server_us_per_login"] = server_cpu / max(n - r["login_failed"], 1) * 1e6
            r["listen_overflows"] = listen_overflows() - overflows0
            time.sleep(hold)
            held = rss_kib(pid)
            swarm.finish("quit")
            swarm = None
        finally:
            if swarm is not None:
                swarm.kill()
            handle.stop()
    r.update(kind=kind, devices=n, idle_rss_mib=idle / 1024, held_rss_mib=held / 1024,
             growth_mib=(held - idle) / 1024, kib_per_connection=(held - idle) / n)
    return r


def run_loop(kind: str, n: int, seconds: float, procs: int, pyz: dict[str, Path], *,
             rate: float = 0.0, slow: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="edgenet-bench-") as tmp:
        bare = None
        handle = None
        if kind == "bare":
            bare = Bare(n)
            port, pid = bare.port, bare.proc.pid
        else:
            handle, port, pid = server_for(kind, Path(tmp), n, pyz)
        swarm = None
        try:
            idle = rss_kib(pid)
            swarm = Swarm(loadgen_argv(port, seconds, n, loop=True, rate=rate, slow=slow), n, procs)
            login = swarm.wait_ready()
            logged_in = rss_kib(pid)
            stop: Callable[[], None] = (bare.proc.kill if bare is not None
                                        else handle.proc.kill)
            watch = RssWatch(pid, stop)
            cpu0, wall0 = cpu_seconds(pid), time.perf_counter()
            results = swarm.finish("go", timeout=seconds + 600)
            swarm = None
            wall = time.perf_counter() - wall0
            samples = watch.stop()
            cpu = (cpu_seconds(pid) - cpu0) / wall if not watch.over_cap else float("nan")
        finally:
            if swarm is not None:
                swarm.kill()
            if bare is not None:
                bare.stop()
            if handle is not None:
                handle.stop()
        dropped = 0
        if isinstance(handle, Server):
            dropped = handle.log_path.read_text(errors="replace").count('"slow_reader_dropped"')
    lat = sorted(x for r in results for x in r["latencies"])
    window = median([r["rate_window"] for r in results])
    mibs = [m for _, m in samples]
    half = len(mibs) // 2
    third = len(mibs) // 3
    return {
        "kind": kind, "devices": n, "rate": rate or None, "slow": slow,
        "commands_per_s": len(lat) / window if window > 0 else 0.0,
        "p50_ms": percentile(lat, 0.50) * 1000, "p99_ms": percentile(lat, 0.99) * 1000,
        "errors": sum(r["errors"] for r in results), "logins_per_s": login["logins_per_s"],
        "unfinished": sum(r.get("unfinished", 0) for r in results),
        "slow_readers_dropped": dropped,
        "server_cpu_share": cpu,
        "loadgen_cpu_share": sum(r["loadgen_cpu_s"] for r in results) / wall,
        "idle_rss_mib": idle / 1024, "logged_in_rss_mib": logged_in / 1024,
        "peak_rss_mib": max(mibs, default=logged_in / 1024),
        "first_half_peak_mib": max(mibs[:half], default=float("nan")),
        "second_half_peak_mib": max(mibs[half:], default=float("nan")),
        # Flat or not: the median RSS of the first and of the last third of the run.
        "first_third_median_mib": median(mibs[:third]) if third else float("nan"),
        "last_third_median_mib": median(mibs[-third:]) if third else float("nan"),
        "over_cap": watch.over_cap, "rss_samples_mib": mibs,
    }


def summarize(rows: Sequence[dict[str, Any]], keys: Sequence[str]) -> dict[str, Any]:
    return {k: median([r[k] for r in rows]) for k in keys} | {"runs": len(rows), "raw": list(rows)}


def main() -> int:
    global SOURCES
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--idle", default="1000,5000", help="device counts of the idle/login part (0: skip)")
    ap.add_argument("--slow", type=int, default=0, help="slow readers looping (0: skip)")
    ap.add_argument("--devices", default="1000", help="device counts of the command part (0: skip)")
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--hold", type=float, default=3.0, help="idle hold before reading RSS")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--procs", type=int, default=2, help="load-generator processes")
    ap.add_argument("--pace", type=float, default=0.5,
                    help="paced rate as a share of the bare server's closed-loop ceiling")
    ap.add_argument("--baseline-pyz", type=Path, help="a previous zipapp, run alternately")
    ap.add_argument("--no-mosquitto", action="store_true")
    ap.add_argument("--no-stepwise", action="store_true",
                    help="leave out the logins of the interactive shell (edgenet:stepwise)")
    ap.add_argument("--slow-seconds", type=float, help="length of the slow part (default: --seconds)")
    ap.add_argument("--sources", type=int, default=SOURCES,
                    help="loopback source addresses of the load generators (0: 127.0.0.1 only)")
    args = ap.parse_args()
    SOURCES = args.sources
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}, "
          f"{args.sources or 1} source address(es)", flush=True)
    pyz = {"edgenet": PYZ}
    if args.baseline_pyz:
        pyz["before"] = args.baseline_pyz.resolve()
    trees = list(pyz)
    has_mq = mosquitto_path() is not None and not args.no_mosquitto
    out: dict[str, Any] = {"mosquitto": "installed" if has_mq else (
                               "left out" if args.no_mosquitto else "not installed"),
                           "sources": args.sources, "load_average_start": os.getloadavg(),
                           "trees": {k: str(v) for k, v in pyz.items()}, "idle": [], "slow": [],
                           "commands": []}
    if not has_mq:
        print("mosquitto: " + ("left out (--no-mosquitto)" if args.no_mosquitto
                               else "not installed (the ratios to it are left out)"), flush=True)
    for n in (int(x) for x in args.idle.split(",") if x and int(x) > 0):
        mosquittos = ["mosquitto", "mosquitto@100"]
        ours = [*trees, *([] if args.no_stepwise else ["edgenet:stepwise"]), "bare"]
        per: dict[str, list[dict[str, Any]]] = {k: [] for k in [*ours, *mosquittos]}
        for run in range(args.runs):
            kinds = ours + (mosquittos if has_mq else [])
            for kind in kinds[run % len(kinds):] + kinds[:run % len(kinds)]:
                per[kind].append(run_idle(kind, n, args.hold, args.procs, pyz))
        row: dict[str, Any] = {"devices": n}
        for kind, rows in per.items():
            if rows:
                row[kind] = summarize(rows, ["logins_per_s", "kib_per_connection", "growth_mib",
                                             "idle_rss_mib", "held_rss_mib",
                                             "server_login_cpu_share", "loadgen_login_cpu_share",
                                             "server_us_per_login", "listen_overflows"])
        for kind in ours:
            row[kind]["logins_ratio_to_bare"] = (row[kind]["logins_per_s"]
                                                 / row["bare"]["logins_per_s"])
        if "mosquitto" in row:
            for kind in ours:
                row[kind]["logins_ratio_to_mosquitto"] = (row[kind]["logins_per_s"]
                                                          / row["mosquitto"]["logins_per_s"])
                row[kind]["logins_ratio_to_mosquitto_at_100"] = (
                    row[kind]["logins_per_s"] / row["mosquitto@100"]["logins_per_s"])
                row[kind]["memory_ratio_to_mosquitto"] = (
                    row[kind]["kib_per_connection"]
                    / max(row["mosquitto"]["kib_per_connection"], 1e-9))
        out["idle"].append(row)
        print(f"idle {n:>6}: " + "  |  ".join(
            f"{k}: {row[k]['logins_per_s']:7.0f} logins/s, +{row[k]['growth_mib']:6.1f} MiB "
            f"({row[k]['kib_per_connection']:.2f} KiB/conn), failed "
            f"{sum(r['login_failed'] for r in row[k]['raw'])}, accept-queue overflows "
            f"{row[k]['listen_overflows']:.0f}, CPU server "
            f"{row[k]['server_login_cpu_share']:.2f} ({row[k]['server_us_per_login']:.0f} us a "
            f"login) / loadgen {row[k]['loadgen_login_cpu_share']:.2f}"
            for k in per if k in row), flush=True)
        print("             " + "  |  ".join(
            f"{k} / bare: logins {row[k]['logins_ratio_to_bare']:.2f}" for k in ours), flush=True)
        if "mosquitto" in row:
            print("             " + "  |  ".join(
                f"{k} / mosquitto: logins {row[k]['logins_ratio_to_mosquitto']:.2f} (250 at once), "
                f"{row[k]['logins_ratio_to_mosquitto_at_100']:.2f} (against mosquitto 100 at "
                f"once), memory {row[k]['memory_ratio_to_mosquitto']:.1f}x" for k in ours),
                flush=True)
    if args.slow:
        slow_seconds = args.slow_seconds or args.seconds
        per = {k: [] for k in trees}
        for run in range(args.runs):
            for kind in trees[run % len(trees):] + trees[:run % len(trees)]:
                per[kind].append(run_loop(kind, args.slow, slow_seconds, args.procs, pyz,
                                          slow=True))
        row = {"devices": args.slow, "seconds": slow_seconds}
        for kind, rows in per.items():
            row[kind] = summarize(rows, ["peak_rss_mib", "logged_in_rss_mib", "idle_rss_mib",
                                         "first_half_peak_mib", "second_half_peak_mib",
                                         "first_third_median_mib", "last_third_median_mib",
                                         "commands_per_s", "errors", "slow_readers_dropped",
                                         "server_cpu_share",
                                         "loadgen_cpu_share"])
            row[kind]["over_cap_runs"] = sum(1 for r in rows if r["over_cap"])
        out["slow"].append(row)
        print(f"slow {args.slow:>6}: " + "  |  ".join(
            f"{k}: peak {row[k]['peak_rss_mib']:7.1f} MiB (logged in "
            f"{row[k]['logged_in_rss_mib']:.1f}, halves {row[k]['first_half_peak_mib']:.1f} / "
            f"{row[k]['second_half_peak_mib']:.1f}, median of the first / last third "
            f"{row[k]['first_third_median_mib']:.1f} / {row[k]['last_third_median_mib']:.1f}), "
            f"{row[k]['commands_per_s']:.0f} cmd/s, "
            f"errors {row[k]['errors']:.0f}, dropped {row[k]['slow_readers_dropped']:.0f}, "
            f"over cap {row[k]['over_cap_runs']}" for k in per), flush=True)
    for n in (int(x) for x in args.devices.split(",") if x and int(x) > 0):
        closed: dict[str, list[dict[str, Any]]] = {k: [] for k in [*trees, "bare"]}
        paced: dict[str, list[dict[str, Any]]] = {k: [] for k in trees}
        for run in range(args.runs):
            kinds = [*trees, "bare"]
            for kind in kinds[run % len(kinds):] + kinds[:run % len(kinds)]:
                closed[kind].append(run_loop(kind, n, args.seconds, args.procs, pyz))
            ceiling = closed["bare"][-1]["commands_per_s"]
            for kind in trees[run % len(trees):] + trees[:run % len(trees)]:
                paced[kind].append(run_loop(kind, n, args.seconds, args.procs, pyz,
                                            rate=args.pace * ceiling))
        keys = ["commands_per_s", "p50_ms", "p99_ms", "server_cpu_share", "loadgen_cpu_share",
                "peak_rss_mib", "errors"]
        row = {"devices": n, "pace": args.pace}
        row["closed"] = {k: summarize(v, keys) for k, v in closed.items()}
        row["paced"] = {k: summarize(v, keys) for k, v in paced.items()}
        for kind in trees:
            row["closed"][kind]["ratio_to_bare"] = (row["closed"][kind]["commands_per_s"]
                                                    / row["closed"]["bare"]["commands_per_s"])
        out["commands"].append(row)
        print(f"commands {n:>5}: bare {row['closed']['bare']['commands_per_s']:.0f} cmd/s  |  "
              + "  |  ".join(
                  f"{k}: {row['closed'][k]['commands_per_s']:.0f} cmd/s "
                  f"({row['closed'][k]['ratio_to_bare']:.2f} of bare), paced "
                  f"{row['paced'][k]['commands_per_s']:.0f} cmd/s p50 "
                  f"{row['paced'][k]['p50_ms']:.2f} p99 {row['paced'][k]['p99_ms']:.2f} ms, CPU "
                  f"server {row['closed'][k]['server_cpu_share']:.2f} / loadgen "
                  f"{row['closed'][k]['loadgen_cpu_share']:.2f}" for k in trees), flush=True)
    out["load_average_end"] = os.getloadavg()
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    save("scale", out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
