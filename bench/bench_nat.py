"""UVF across NATs in network namespaces (root only): a file between two real clients of the
zipapp, direct through two NATs vs through the server's relay vs two devices on one LAN,
and the server's CPU while it relays; all cases interleaved in every run, medians.

    sudo python bench/bench_nat.py [--size-mb 100] [--runs 3] [--baseline-pyz OLD.pyz]

The small internet is tests/netns.py's (documentation addresses inside namespaces only).
Cases:

* ``direct``: alpha behind NAT 1, beta behind NAT 2, both endpoint-independent (hole
  punching works);
* ``relayed``: NAT 1 picks a random port per destination, so the transfer goes through the
  relay of a server whose relay limits are off (the relay's own capacity);
* ``relayed_capped``: the same through a server with the default limits (32 MiB/s a
  device): the cap at work;
* ``lan``: both devices in the public namespace beside the server (one LAN: the reported
  address wins);
* ``lan_before`` (with ``--baseline-pyz``): the LAN case with an older zipapp (server and
  clients), for the before/after of the LAN path.

MB/s is the file's size over the sender's transfer time (OFFER to DONE, from its
``uvf.transfer`` event); ``setup_s`` is the time from the UVF command to the OFFER (the
rendezvous: ~0 on a LAN, one probe round trip direct, the 2 s probe timeout before the
relay). Server CPU is its user+system time during the case over the transfer's time, in %
of one core (what relaying costs it; near 0 when it only brokers).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import PYZ, ROOT, cpu_seconds, machine, median, save

sys.path.insert(0, str(ROOT))
from tests import netns  # the namespace builder lives beside the tests

TIMEOUT = 300.0
CREDENTIALS = "alpha alphapass\nbeta betapass\n"


def events(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


class Bench:
    def __init__(self, work: Path, lab: netns.NetLab, baseline: Path | None) -> None:
        self.work, self.lab = work, lab
        (work / "credentials.txt").write_text(CREDENTIALS)
        for name in ("alpha", "beta"):
            secret = work / f"{name}.pass"
            secret.write_text(f"{name}pass\n")
            os.chmod(secret, 0o600)
        self.servers: dict[str, tuple[subprocess.Popen[bytes], int, Path]] = {}
        self.start_server("open", PYZ, ["--relay-device-rate", "0", "--relay-total-rate", "0"])
        self.start_server("capped", PYZ, [])
        if baseline is not None:
            self.start_server("before", baseline, [])

    def start_server(self, key: str, pyz: Path, extra: list[str]) -> None:
        log = self.work / f"server-{key}.log"
        with log.open("wb") as err:
            proc = self.lab.run("pub", [sys.executable, str(pyz), "server", "0", "3",
                                        "--credentials", str(self.work / "credentials.txt"),
                                        "--data-dir", str(self.work / f"srv-{key}"),
                                        "--log-format", "json", "--no-admin", *extra],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = [e for e in events(log.read_text()) if e.get("event") == "server_ready"]
            if ready:
                self.servers[key] = (proc, int(ready[0]["port"]), pyz)
                return
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"server {key} did not start: {log.read_text()[-2000:]}")

    def client(self, key: str, name: str, *args: str) -> list[str]:
        _, port, pyz = self.servers[key]
        return [sys.executable, str(pyz), "client", netns.SERVER_IP, str(port), "0", "--name",
                name, "--password-file", str(self.work / f"{name}.pass"), "--json",
                "--log-format", "json", "--data-dir", str(self.work / name), *args]

    def case(self, key: str, site_a: str, site_b: str, nat1: str, src: Path) -> dict[str, Any]:
        self.lab.set_nat(1, nat1)
        self.lab.set_nat(2, "eim")
        out = self.work / "beta.out"
        with out.open("wb") as beta_out:
            beta = self.lab.run(site_b, self.client(key, "beta", "--stay"),
                                stdin=subprocess.DEVNULL, stdout=beta_out,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while b'"login"' not in out.read_bytes():
                if beta.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"beta did not log in: {out.read_text()}")
                time.sleep(0.05)
            time.sleep(0.3)  # its registration
            server = self.servers[key][0]
            cpu0, t0 = cpu_seconds(server.pid), time.monotonic()
            sent = subprocess.run(["ip", "netns", "exec", self.lab.ns(site_a),
                                   *self.client(key, "alpha", "--run", f"UVF beta {src.name}")],
                                  capture_output=True, text=True, timeout=TIMEOUT, check=False)
            wall = time.monotonic() - t0
            cpu = cpu_seconds(server.pid) - cpu0
            if sent.returncode != 0:
                raise RuntimeError(f"{key}: {sent.stdout[-800:]} {sent.stderr[-800:]}")
            logs = events(sent.stderr)
            transfer = next(e for e in logs if e.get("event") == "uvf.transfer")
            total = next(e for e in logs if e.get("event") == "uvf.sent")
            result = next(r for r in events(sent.stdout)
                          if str(r.get("command", "")).startswith("UVF"))
            seconds = transfer["duration_ms"] / 1000
            return {"path": result.get("result", {}).get("path", "direct"),
                    "mb_s": src.stat().st_size / 1e6 / seconds, "seconds": seconds,
                    "setup_s": (total["duration_ms"] - transfer["duration_ms"]) / 1000,
                    # the server's work is the relaying: its CPU over the transfer's time
                    "server_cpu_pct": 100 * cpu / max(seconds, 1e-6),
                    "wall_s": wall,
                    "retransmissions": transfer.get("retransmissions", 0)}
        finally:
            beta.terminate()
            try:
                beta.wait(10)
            except subprocess.TimeoutExpired:
                beta.kill()
            for f in (self.work / "beta").glob("alpha_*"):
                f.unlink()

    def close(self) -> None:
        for proc, _, _ in self.servers.values():
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


CASES = {  # name: (server, alpha's namespace, beta's namespace, NAT 1's mode)
    "direct": ("open", "d1", "d2", "eim"),
    "relayed": ("open", "d1", "d2", "random"),
    "relayed_capped": ("capped", "d1", "d2", "random"),
    "lan": ("open", "pub", "pub", "eim"),
    "lan_before": ("before", "pub", "pub", "eim"),
}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-mb", type=float, default=100)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--baseline-pyz", type=Path, default=None,
                    help="an older build/edgenet.pyz for the LAN case's before/after")
    args = ap.parse_args()
    reason = netns.why_not() or netns.missing_tools()
    if reason is not None:
        print(f"bench_nat: skipped: {reason}")
        save("nat", {"skipped": reason})
        return 0
    netns.sweep()
    work = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench-nat-{os.getpid()}"
    work.mkdir(parents=True)
    lab = netns.NetLab()
    bench: Bench | None = None
    results: dict[str, list[dict[str, Any]]] = {}
    load = [os.getloadavg()[0]]
    try:
        lab.build()
        bench = Bench(work, lab, args.baseline_pyz)
        (work / "alpha").mkdir()
        src = work / "alpha" / "payload.bin"
        with src.open("wb") as out:
            for _ in range(int(args.size_mb)):
                out.write(os.urandom(1_000_000))
        names = [n for n in CASES if n != "lan_before" or args.baseline_pyz is not None]
        for run in range(args.runs):
            order = names[run % len(names):] + names[:run % len(names)]  # interleaved
            for name in order:
                key, site_a, site_b, nat1 = CASES[name]
                row = bench.case(key, site_a, site_b, nat1, src)
                results.setdefault(name, []).append(row)
                print(f"run {run + 1} {name:15s} {row['path']:8s} {row['mb_s']:7.1f} MB/s "
                      f"setup {row['setup_s']:.2f} s server CPU {row['server_cpu_pct']:5.1f} %",
                      flush=True)
    finally:
        if bench is not None:
            bench.close()
        lab.close()
        load.append(os.getloadavg()[0])
        shutil.rmtree(work, ignore_errors=True)
    summary = {name: {"path": rows[0]["path"],
                      "mb_s": median([r["mb_s"] for r in rows]),
                      "setup_s": median([r["setup_s"] for r in rows]),
                      "server_cpu_pct": median([r["server_cpu_pct"] for r in rows]),
                      "runs": rows} for name, rows in results.items()}
    direct = summary["direct"]["mb_s"]
    ratio = summary["relayed"]["mb_s"] / direct
    print(f"\n{'case':15s} {'path':8s} {'MB/s':>7s} {'setup s':>8s} {'server CPU %':>13s}")
    for name, row in summary.items():
        print(f"{name:15s} {row['path']:8s} {row['mb_s']:7.1f} {row['setup_s']:8.2f} "
              f"{row['server_cpu_pct']:13.1f}")
    print(f"relay / direct = {ratio:.2f} (target >= 0.50); load average {load[0]:.2f} -> "
          f"{load[1]:.2f}")
    if "lan_before" in summary:
        print(f"LAN after / before = {summary['lan']['mb_s'] / summary['lan_before']['mb_s']:.2f}")
    save("nat", {"machine": machine(), "size_mb": args.size_mb, "runs": args.runs,
                 "load_average": load, "relay_over_direct": ratio, "cases": summary})
    paths_ok = (summary["direct"]["path"] == "direct" and summary["relayed"]["path"] == "relayed"
                and summary["lan"]["path"] == "direct")
    return 0 if paths_ok else 1


if __name__ == "__main__":
    sys.exit(main())
