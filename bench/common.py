"""Shared helpers of the benchmarks: processes, memory and CPU readings, medians, output."""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYZ = ROOT / "build" / "edgenet.pyz"
OUT_DIR = ROOT / "build" / "bench"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return float(sorted_values[k])


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def write_credentials(path: Path, n: int) -> None:
    path.write_text("".join(f"dev{i} pw{i}\n" for i in range(n)))


def _raise_nofile() -> None:
    """The server's soft open-file limit at the hard limit (one descriptor a device)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class Server:
    """The real edgenet server from the built zipapp, JSON logs to a file."""

    def __init__(self, workdir: Path, devices: int, extra: Sequence[str] = (),
                 pyz: Path = PYZ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.creds = workdir / "credentials.txt"
        write_credentials(self.creds, devices)
        self.data = workdir / "data"
        self.log_path = workdir / "server.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, str(pyz), "server", "0", "5", "--host", "127.0.0.1",
             "--credentials", str(self.creds), "--data-dir", str(self.data),
             "--log-format", "json", "--no-admin", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._log,
            preexec_fn=_raise_nofile)
        self.port = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not self.port:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log_path.read_text())
            for line in self.log_path.read_text(errors="replace").splitlines():
                if '"server_ready"' in line:
                    self.port = int(json.loads(line)["port"])
            time.sleep(0.05)
        if not self.port:
            raise RuntimeError("server not ready in 30 s")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()


def save(name: str, result: dict[str, Any]) -> Path:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def machine() -> dict[str, Any]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": model, "python": sys.version.split()[0],
            "platform": sys.platform}
