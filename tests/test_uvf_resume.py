"""Resumable UVF through real processes (the zipapp): a sender killed with SIGKILL in the middle
of a 50 MB transfer, started again, sends only what the receiver lacks, and the file arrives
byte-identical; a file changed between the tries starts over; parts kept past
--uvf-resume-hours are removed by a running receiver and at start-up (issue 16)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.clientproc import LiveClient, wait_until
from tests.conftest import PYZ, ServerProcess
from tests.filedata import make_file, sha
from tests.udprelay import SlowUdpRelay

pytestmark = pytest.mark.timeout(150)
MB = 10**6
SIZE = 50 * MB
#: The link to the receiver (a relay): 50 MB take 5 s, so a kill after 5 MB lands mid-transfer.
RATE = 10 * MB


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def kept(directory: Path) -> list[str]:
    """The records of the parts kept for a resume."""
    return sorted(p.name for p in directory.glob(".uvf-*.resume"))


def part_size(directory: Path) -> int:
    parts = [p for p in directory.iterdir() if p.name.endswith(".part")]
    try:
        return max((p.stat().st_size for p in parts), default=0)
    except FileNotFoundError:
        return 0


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SlowBeta:
    """beta, reached by UVF through a relay at RATE (it advertises the relay's port)."""

    def __init__(self, port: int, beta_dir: Path, extra: list[str] | None = None) -> None:
        udp = free_udp_port()
        self.relay = SlowUdpRelay(udp, RATE)
        self.client = LiveClient(port, beta_dir, use_pyz=True, udp_port=udp,
                                 extra=[*(extra or []), "--advertise-udp-port",
                                        str(self.relay.port)])

    def close(self) -> None:
        self.client.close()
        self.relay.close()


def start_and_kill(port: int, alpha_dir: Path, beta_dir: Path, at: int = 5 * MB) -> None:
    """alpha starts ``UVF beta big.bin`` and is killed with SIGKILL once beta wrote ``at``."""
    alpha = LiveClient(port, alpha_dir, use_pyz=True)
    try:
        alpha.login("alpha", "alphapass")
        alpha.send("UVF beta big.bin")
        assert wait_until(lambda: part_size(beta_dir) >= at, timeout=30, step=0.002), (
            f"beta's part reached only {part_size(beta_dir)} bytes")
        alpha.proc.kill()
    finally:
        alpha.close()
    assert not [p for p in beta_dir.glob("alpha_big*.bin") if p.stat().st_size == SIZE], \
        "the transfer ended before the kill"


def headless_uvf(port: int, data_dir: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A headless alpha runs ``UVF beta big.bin`` to its end: (its result, its log events)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    env["EDGENET_PASSWORD"] = "alphapass"
    argv = [sys.executable, str(PYZ), "client", "127.0.0.1", str(port), "0", "--data-dir",
            str(data_dir), "--name", "alpha", "--json", "--run", "UVF beta big.bin"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=90, check=False,
                       stdin=subprocess.DEVNULL, env=env)
    assert p.returncode == 0, p.stdout + p.stderr
    results = [json.loads(line) for line in p.stdout.splitlines() if line.strip()]
    (uvf,) = [r for r in results if r["command"] == "UVF beta big.bin"]
    events = []
    for line in p.stderr.splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            continue
    return uvf, events


def bytes_sent(events: list[dict[str, Any]]) -> int:
    (done,) = [e for e in events if e.get("event") == "uvf.transfer"]
    assert done["outcome"] == "ok", done
    return int(done["data_bytes_sent"])


@pytest.mark.parametrize("wait_for_park", [False, True])
def test_a_killed_sender_started_again_sends_only_the_rest(
        server_process: ServerProcess, tmp_path: Path, wait_for_park: bool) -> None:
    """``wait_for_park``: the receiver timed out (10 s) and kept the part before the new
    offer; else the new offer came at once and took over from the silent transfer."""
    video = make_file(tmp_path / "alpha" / "big.bin", SIZE, seed=21)
    beta_dir = tmp_path / "beta"
    slow = SlowBeta(server_process.port, beta_dir)
    beta = slow.client
    try:
        beta.login("beta", "betapass")
        start_and_kill(server_process.port, tmp_path / "alpha", beta_dir)
        if wait_for_park:
            beta.expect("receiving big.bin from alpha failed: sender went silent", 30)
            assert wait_until(lambda: len(kept(beta_dir)) == 1, timeout=20), files_in(beta_dir)
        uvf, events = headless_uvf(server_process.port, tmp_path / "alpha")
        assert uvf["ok"], uvf
        held = uvf["result"].get("resumed_from", 0)
        assert 5 * MB <= held < SIZE, (uvf, beta.seen)
        percent = held * 100 // SIZE
        assert uvf["text"] == (f"big.bin has been uploaded to beta ({SIZE} bytes, direct, "
                                  f"resumed at {percent} %)"), uvf
        sent = bytes_sent(events)
        assert SIZE - held <= sent < SIZE, (sent, held)  # fewer bytes than the whole
        line = beta.expect(f"received alpha_big.bin from alpha ({SIZE} bytes, resumed at "
                           f"{percent} %)", 30)
        assert line
        saved = beta_dir / "alpha_big.bin"
        assert sha(saved) == sha(video)
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600
        assert files_in(beta_dir) == ["alpha_big.bin"]  # no part, no record, no temp file
        beta.send("OUT")
        beta.expect("Bye, beta!", 10)
    finally:
        slow.close()


def test_a_file_changed_between_the_tries_starts_over_and_is_stored_right(
        server_process: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "alpha" / "big.bin", SIZE, seed=22)
    beta_dir = tmp_path / "beta"
    make_file(beta_dir / "alpha_big.bin", 1000, seed=23)  # an older file of that name stays
    slow = SlowBeta(server_process.port, beta_dir)
    beta = slow.client
    try:
        beta.login("beta", "betapass")
        start_and_kill(server_process.port, tmp_path / "alpha", beta_dir)
        with open(src, "r+b") as fh:  # the first megabyte, which beta holds, changes
            fh.seek(1000)
            fh.write(b"a changed file")
        uvf, events = headless_uvf(server_process.port, tmp_path / "alpha")
        assert uvf["ok"] and "resumed_from" not in uvf["result"], uvf
        assert uvf["text"] == f"big.bin has been uploaded to beta ({SIZE} bytes, direct)"
        assert bytes_sent(events) >= SIZE
        beta.expect(f"received alpha_big (1).bin from alpha ({SIZE} bytes)", 30)
        assert sha(beta_dir / "alpha_big (1).bin") == sha(src)
        assert files_in(beta_dir) == ["alpha_big (1).bin", "alpha_big.bin"]
    finally:
        slow.close()


def test_expired_parts_are_removed_on_a_timer_and_at_start_up(
        server_process: ServerProcess, tmp_path: Path) -> None:
    make_file(tmp_path / "alpha" / "big.bin", SIZE, seed=24)
    beta_dir = tmp_path / "beta"
    # 0.002 h = 7.2 s: the part is kept when the sender falls silent, then swept.
    slow = SlowBeta(server_process.port, beta_dir, extra=["--uvf-resume-hours", "0.002"])
    beta = slow.client
    try:
        beta.login("beta", "betapass")
        start_and_kill(server_process.port, tmp_path / "alpha", beta_dir)
        assert wait_until(lambda: len(kept(beta_dir)) == 1, timeout=30), files_in(beta_dir)
        assert wait_until(lambda: files_in(beta_dir) == [], timeout=30), files_in(beta_dir)
    finally:
        slow.close()
    # Kept under the default 24 h by a receiver that then stops ...
    slow = SlowBeta(server_process.port, beta_dir)
    beta = slow.client
    try:
        beta.login("beta", "betapass")
        start_and_kill(server_process.port, tmp_path / "alpha", beta_dir)
        assert wait_until(lambda: len(kept(beta_dir)) == 1, timeout=30), files_in(beta_dir)
        beta.send("OUT")
        beta.expect("Bye, beta!", 10)
    finally:
        slow.close()
    assert len(files_in(beta_dir)) == 2  # the part and its record survive the receiver's exit
    # ... and removed when it starts again keeping none.
    beta = LiveClient(server_process.port, beta_dir, use_pyz=True,
                      extra=["--uvf-resume-hours", "0"])
    try:
        beta.login("beta", "betapass")
        assert wait_until(lambda: files_in(beta_dir) == [], timeout=15), files_in(beta_dir)
    finally:
        beta.close()
