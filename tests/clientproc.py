"""Real client processes for tests: scripted through stdin, read line by line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from queue import Empty, Queue
from typing import Any

from tests.conftest import PYZ


def client_argv(port: int, data_dir: Path, udp_port: int = 0, use_pyz: bool = False,
                extra: list[str] | None = None) -> list[str]:
    base = [sys.executable, str(PYZ)] if use_pyz else [sys.executable, "-m", "edgenet"]
    return base + ["client", "127.0.0.1", str(port), str(udp_port), "--data-dir", str(data_dir),
                   *(extra or ())]


def run_script(port: int, data_dir: Path, lines: list[str], use_pyz: bool = False,
               timeout: float = 60) -> subprocess.CompletedProcess[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return subprocess.run(client_argv(port, data_dir, use_pyz=use_pyz),
                          input="".join(x + "\n" for x in lines), capture_output=True, text=True,
                          timeout=timeout, check=False)


class LiveClient:
    """A client process kept open: send lines, wait for output lines."""

    def __init__(self, port: int, data_dir: Path, use_pyz: bool = False,
                 udp_port: int = 0, extra: list[str] | None = None) -> None:
        data_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(client_argv(port, data_dir, udp_port, use_pyz, extra),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, bufsize=1)
        self.lines: Queue[str | None] = Queue()
        self.seen: list[str] = []
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        try:
            for line in self.proc.stdout:
                self.lines.put(line.rstrip("\n"))
        except (ValueError, OSError):  # closed by close()
            pass
        self.lines.put(None)

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, text: str, timeout: float = 30) -> str:
        """Wait for an output line containing ``text``; returns it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except Empty:
                break
            if line is None:
                raise AssertionError(f"client exited before {text!r}; saw {self.seen[-10:]}")
            self.seen.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} within {timeout} s; saw {self.seen[-10:]}")

    def login(self, name: str, password: str) -> None:
        self.send(name)
        self.send(password)
        self.expect("Welcome")

    def peak_rss_kib(self) -> int:
        return peak_rss_kib(self.proc.pid)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._pump_thread.join(5)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


class StayingDevice:
    """A headless device that stays logged in (``--stay``); its JSON lines are read as
    they come, whole lines only (a line half written is kept for the next read). Its
    stderr goes to a file, so that a chatty device never blocks on a full pipe."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self._err = tempfile.TemporaryFile()  # noqa: SIM115 - lives as long as the object
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, env=env)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        os.set_blocking(self._fd, False)
        self._partial = b""
        self.lines: list[dict[str, Any]] = []

    def read(self) -> list[dict[str, Any]]:
        """Every JSON line printed so far (the list grows as the device prints)."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                break
            if not chunk:
                break
            *whole, self._partial = (self._partial + chunk).split(b"\n")
            self.lines += [json.loads(x) for x in whole if x.startswith(b"{")]
        return self.lines

    def errors(self) -> str:
        """What the device wrote to stderr so far."""
        self._err.seek(0)
        return self._err.read().decode(errors="replace")

    def stop(self) -> int:
        """SIGTERM (a device logs out and exits 0), SIGKILL if it does not exit in 30 s."""
        if self.proc.poll() is None:
            self.proc.terminate()
        try:
            status = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            status = self.proc.wait(10)
        self.read()
        return status


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def wait_until(predicate, timeout: float = 10.0, step: float = 0.05) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


__all__ = ["LiveClient", "StayingDevice", "os", "peak_rss_kib", "run_script", "wait_until"]
