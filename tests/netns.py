"""A small internet in network namespaces, for UVF across NATs (tests and bench_nat.py).

    public   203.0.113.0/24: the server 203.0.113.1 and a third party 203.0.113.66 on a
             bridge, and each site router's outside address 203.0.113.1N
    site 1   192.0.2.0/24:    device 192.0.2.2 behind router 1 (192.0.2.1 inside)
    site 2   198.51.100.0/24: device 198.51.100.2 behind router 2 (198.51.100.1 inside)

Each router masquerades its site (nftables): ``eim`` keeps the device's port where it can
(an endpoint-independent mapping: what hole punching needs), ``random`` picks a random port
for every destination (``masquerade fully-random``, as iptables' ``--random-fully``: a
symmetric NAT). Like a home router it drops what arrives from outside unasked, so
unanswered probes leave no state behind. Only documentation-range addresses, only inside
these namespaces; the namespaces have no link to anything else, so no datagram can leave.

Names: every namespace is ``ennat<pid>x<random>-<role>`` (veth ends are created inside the
namespaces, so their names never meet the host's or another run's). ``sweep`` removes what
a run that died left behind (its pid is gone), with what still ran inside them; ``close``
removes this lab, also after a failure (tests call it from a finalizer).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
from collections.abc import Sequence
from typing import Any

PREFIX = "ennat"
SERVER_IP = "203.0.113.1"
THIRD_PARTY_IP = "203.0.113.66"
SITES = {1: ("192.0.2", "203.0.113.11"), 2: ("198.51.100", "203.0.113.12")}
_NAME = re.compile(rf"^{PREFIX}(\d+)x[0-9a-f]+-")


def why_not() -> str | None:
    """Why namespaces cannot be made here (None: they can). Only a missing root is a
    reason; as root, missing tools are an error (``missing_tools``), not a skip."""
    if os.geteuid() != 0:
        return "network namespaces need root (run the suite as root, as CI does)"
    return None


def missing_tools() -> str | None:
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"'{tool}' is not installed (.ci/run installs iproute2 and nftables)"
    return None


def _sh(*argv: str, stdin: str | None = None) -> None:
    done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=20,
                          check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip() or done.stdout.strip()}")


def namespaces() -> list[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=20,
                         check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_inside(name: str) -> None:
    """End what still runs inside a namespace of ours (started there by our own run)."""
    out = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True,
                         timeout=20, check=False).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):  # ended meanwhile
            os.kill(int(pid), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` runs (one of another user counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> int:
    """Remove namespaces of this module's prefix whose run is over; returns how many."""
    removed = 0
    for name in namespaces():
        match = _NAME.match(name)
        if match is None:
            continue
        if _alive(int(match.group(1))):
            continue  # that run is alive: its namespaces are its own
        _kill_inside(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20,
                       check=False)
        removed += 1
    return removed


def _ruleset(mode: str) -> str:
    masquerade = "masquerade fully-random" if mode == "random" else "masquerade"
    return f"""
table ip edgenat {{
    chain post {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "wan" {masquerade}
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
    chain forward {{
        type filter hook forward priority filter; policy accept;
        iifname "wan" ct state established,related accept
        iifname "wan" drop
    }}
}}
"""


class NetLab:
    """The namespaces above; ``run`` starts a process inside one."""

    def __init__(self) -> None:
        self.tag = f"{PREFIX}{os.getpid()}x{secrets.token_hex(3)}"
        self.made: list[str] = []
        self.nat = {1: "eim", 2: "eim"}

    def ns(self, role: str) -> str:
        """``pub``, ``r1``, ``d1``, ``r2``, ``d2``."""
        return f"{self.tag}-{role}"

    def device_ip(self, site: int) -> str:
        return f"{SITES[site][0]}.2"

    def build(self, nat1: str = "eim", nat2: str = "eim") -> NetLab:
        try:
            self._build(nat1, nat2)
        except BaseException:
            self.close()
            raise
        return self

    def _build(self, nat1: str, nat2: str) -> None:
        pub = self._add("pub")
        _sh("ip", "-n", pub, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", pub, "addr", "add", f"{SERVER_IP}/24", "dev", "br0")
        _sh("ip", "-n", pub, "addr", "add", f"{THIRD_PARTY_IP}/24", "dev", "br0")
        _sh("ip", "-n", pub, "link", "set", "br0", "up")
        for site, (lan, wan_ip) in SITES.items():
            router, device = self._add(f"r{site}"), self._add(f"d{site}")
            _sh("ip", "link", "add", "name", f"s{site}", "netns", pub, "type", "veth",
                "peer", "name", "wan", "netns", router)
            _sh("ip", "-n", pub, "link", "set", f"s{site}", "master", "br0", "up")
            _sh("ip", "-n", router, "addr", "add", f"{wan_ip}/24", "dev", "wan")
            _sh("ip", "-n", router, "link", "set", "wan", "up")
            _sh("ip", "link", "add", "name", "lan", "netns", router, "type", "veth",
                "peer", "name", "eth0", "netns", device)
            _sh("ip", "-n", router, "addr", "add", f"{lan}.1/24", "dev", "lan")
            _sh("ip", "-n", router, "link", "set", "lan", "up")
            _sh("ip", "-n", device, "addr", "add", f"{lan}.2/24", "dev", "eth0")
            _sh("ip", "-n", device, "link", "set", "eth0", "up")
            _sh("ip", "-n", device, "route", "add", "default", "via", f"{lan}.1")
            _sh("ip", "netns", "exec", router, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.set_nat(site, nat1 if site == 1 else nat2)

    def set_nat(self, site: int, mode: str) -> None:
        """``eim`` or ``random`` on the router of ``site`` (its old mappings are dropped)."""
        if mode not in ("eim", "random"):
            raise ValueError(mode)
        router = self.ns(f"r{site}")
        subprocess.run(["ip", "netns", "exec", router, "nft", "delete", "table", "ip",
                        "edgenat"], capture_output=True, timeout=20, check=False)
        _sh("ip", "netns", "exec", router, "nft", "-f", "-", stdin=_ruleset(mode))
        self.nat[site] = mode

    def _add(self, role: str) -> str:
        name = self.ns(role)
        _sh("ip", "netns", "add", name)
        self.made.append(name)
        _sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def run(self, role: str, argv: Sequence[str], **popen: Any) -> subprocess.Popen[Any]:
        return subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], **popen)

    def close(self) -> None:
        """Remove every namespace of this lab (their veths and rules go with them)."""
        for name in reversed(self.made):
            _kill_inside(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=20,
                           check=False)
        self.made.clear()
