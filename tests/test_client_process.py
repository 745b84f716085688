"""The client as a real process against a real server process, over loopback."""

from __future__ import annotations

import os
import re
import signal
from pathlib import Path

from tests.clientproc import LiveClient, peak_rss_kib, run_script, wait_until
from tests.conftest import ServerProcess

MENU = "EDG, UED, SCS, DTE, AED, UVF, OUT"


def device_names(server: ServerProcess) -> list[str]:
    path = server.data_dir / "edge-device-log.txt"
    return [line.split("; ")[2] for line in path.read_text().splitlines()] if path.exists() else []


def test_scripted_session_every_command(server_process: ServerProcess, tmp_path: Path) -> None:
    other = LiveClient(server_process.port, tmp_path / "beta")
    try:
        other.login("beta", "betapass")
        p = run_script(server_process.port, tmp_path / "alpha", [
            "alpha", "wrong", "alphapass",
            "EDG 1 100", "EDG", "EDG 1 -5", "EDG x 5",
            "UED 1", "UED", "UED 2",
            "SCS 1 SUM", "SCS 1 AVERAGE", "SCS 1 MAX", "SCS 1 MIN", "SCS 1 MEDIAN", "SCS x SUM",
            "SCS 9 SUM",
            "AED", "FOO", "UVF", "DTE 1", "DTE 1", "OUT",
        ])
    finally:
        other.close()
    out = p.stdout
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in out + p.stderr
    assert "Invalid password. Please try again" in out
    assert out.count(MENU) >= 20
    assert "data generation done" in out
    assert "EDG command requires fileID and dataAmount as arguments." in out
    assert "fileID is needed to upload the data" in out
    assert "the file to be uploaded does not exist" in out
    assert "has been uploaded" in out
    assert "fileID is missing or fileID should be an integer" in out
    assert "operation must be one of SUM, AVERAGE, MAX, MIN" in out
    assert "the file does not exist at the server side" in out
    assert "unknown command 'FOO'" in out
    assert "file with ID of 1 has been successfully removed from the central server" in out
    assert re.search(r"beta; 127\.0\.0\.1; \d+; active since \d{2} \w+ \d{4} \d\d:\d\d:\d\d", out)

    values = [int(x) for x in (tmp_path / "alpha" / "alpha-1.txt").read_text().split()]
    assert len(values) == 100
    m = re.search(r"the SUM of file 1 is (-?\d+)", out)
    assert m and int(m.group(1)) == sum(values)
    assert f"the MAX of file 1 is {max(values)}" in out
    assert f"the MIN of file 1 is {min(values)}" in out
    uploads = (server_process.data_dir / "upload-log.txt").read_text().splitlines()
    assert uploads[-1].startswith("alpha; ") and uploads[-1].endswith("; 1; 100")


def test_eof_logs_out_and_blocked_client_exits(server_process: ServerProcess, tmp_path: Path) -> None:
    p = run_script(server_process.port, tmp_path / "a", ["alpha", "alphapass", "AED"])
    assert p.returncode == 0
    assert "no other active edge devices" in p.stdout
    assert wait_until(lambda: device_names(server_process) == [])
    p = run_script(server_process.port, tmp_path / "a", ["gamma", "x", "y", "z", "gammapass"])
    assert p.returncode == 1
    assert p.stdout.count("Invalid password. Please try again") == 2
    assert "blocked" in p.stdout.lower()
    assert "Traceback" not in p.stdout + p.stderr
    p = run_script(server_process.port, tmp_path / "a", ["gamma", "gammapass"])
    assert p.returncode == 1 and re.search(r"blocked.*\d+ seconds", p.stdout)


def test_killed_client_leaves_the_device_log(server_process: ServerProcess, tmp_path: Path) -> None:
    a = LiveClient(server_process.port, tmp_path / "a")
    b = LiveClient(server_process.port, tmp_path / "b")
    try:
        a.login("alpha", "alphapass")
        b.login("beta", "betapass")
        assert wait_until(lambda: device_names(server_process) == ["alpha", "beta"])
        os.kill(a.proc.pid, signal.SIGKILL)
        assert wait_until(lambda: device_names(server_process) == ["beta"])
        line = (server_process.data_dir / "edge-device-log.txt").read_text().splitlines()[0]
        assert line.startswith("1; ")
        b.send("AED")
        b.expect("no other active edge devices")
    finally:
        a.close()
        b.close()


def test_takeover_tells_the_old_client(server_process: ServerProcess, tmp_path: Path) -> None:
    old = LiveClient(server_process.port, tmp_path / "old")
    new = LiveClient(server_process.port, tmp_path / "new")
    try:
        old.login("alpha", "alphapass")
        new.login("alpha", "alphapass")
        old.expect("replaced")
        assert old.proc.wait(10) == 1
        assert device_names(server_process) == ["alpha"]
    finally:
        old.close()
        new.close()


def test_client_told_when_server_goes_away(server_process: ServerProcess, tmp_path: Path) -> None:
    c = LiveClient(server_process.port, tmp_path / "a")
    try:
        c.login("alpha", "alphapass")
        os.kill(server_process.proc.pid, signal.SIGKILL)
        c.expect("server")
        assert c.proc.wait(10) == 1
        assert "Traceback" not in "\n".join(c.seen)
    finally:
        c.close()


def test_100mb_upload_streams_with_bounded_memory(server_process: ServerProcess, tmp_path: Path) -> None:
    data = tmp_path / "a"
    data.mkdir()
    line = b"".join(b"%d\n" % (i * 7919 % 100000) for i in range(100_000))
    path = data / "alpha-1.txt"
    with path.open("wb") as fh:
        while fh.tell() < 100 * 2**20:
            fh.write(line)
    size = path.stat().st_size
    server_before = peak_rss_kib(server_process.proc.pid)
    c = LiveClient(server_process.port, data)
    try:
        c.login("alpha", "alphapass")
        c.send("UED 1")
        c.expect("has been uploaded", timeout=120)
        client_peak = c.peak_rss_kib()
        server_peak = peak_rss_kib(server_process.proc.pid)
        c.send("SCS 1 MAX")
        c.expect("the MAX of file 1 is 99999", timeout=120)
    finally:
        c.close()
    stored = server_process.data_dir / "alpha-1.txt"
    assert stored.stat().st_size == size
    # Neither side holds the file in memory: both stay far below its 100 MB.
    assert server_peak - server_before < 40 * 1024, (server_before, server_peak)
    assert client_peak < 80 * 1024, client_peak
