"""The headless device (--name, --run/--script, --json, --stay) as real processes
against a real server process, over loopback: every exit status, JSON output,
password-file permissions, reconnection after a server restart, SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from tests.clientproc import LiveClient, StayingDevice, wait_until
from tests.conftest import ServerProcess, server_argv


def headless(port: int, data_dir: Path, *opts: str, password: str | None = "alphapass",
             name: str | None = "alpha", timeout: float = 60
             ) -> subprocess.CompletedProcess[str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    if password is not None:
        env["EDGENET_PASSWORD"] = password
    argv = [sys.executable, "-m", "edgenet", "client", "127.0.0.1", str(port), "0",
            "--data-dir", str(data_dir)]
    if name is not None:
        argv += ["--name", name]
    return subprocess.run(argv + list(opts), check=False, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, env=env)


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def device_names(data_dir: Path) -> list[str]:
    path = data_dir / "edge-device-log.txt"
    return [ln.split("; ")[2] for ln in path.read_text().splitlines()] if path.exists() else []


def test_json_results_and_success(server_process: ServerProcess, tmp_path: Path) -> None:
    p = headless(server_process.port, tmp_path / "a", "--json",
                 "--run", "EDG 1 50; UED 1;SCS 1 SUM ; SCS 1 AVERAGE; AED")
    assert p.returncode == 0, p.stderr
    results = json_lines(p.stdout)
    assert [r["command"] for r in results] == ["login", "EDG 1 50", "UED 1", "SCS 1 SUM",
                                               "SCS 1 AVERAGE", "AED", "logout"]
    assert all(r["ok"] for r in results)
    values = [int(x) for x in (tmp_path / "a" / "alpha-1.txt").read_text().split()]
    assert results[2]["result"]["samples"] == 50
    assert results[3]["result"] == {"file_id": 1, "op": "SUM", "result": str(sum(values))}
    assert results[5]["result"]["devices"] == []
    assert "Traceback" not in p.stderr
    assert wait_until(lambda: device_names(server_process.data_dir) == [])  # logged out


def test_first_failure_stops_with_status_5(server_process: ServerProcess, tmp_path: Path) -> None:
    p = headless(server_process.port, tmp_path / "a", "--run", "AED; UED 9; SCS 9 SUM")
    assert p.returncode == 5
    assert "the file to be uploaded does not exist" in p.stdout
    assert "SCS 9" not in p.stdout  # stopped at the first failure
    assert "command 2 (UED 9) failed" in p.stderr
    assert "Bye, alpha!" in p.stdout
    # --keep-going runs the rest; the status still names the first failure.
    p = headless(server_process.port, tmp_path / "a", "--json", "--keep-going",
                 "--run", "SCS 9 SUM; AED")
    assert p.returncode == 5
    results = {r["command"]: r for r in json_lines(p.stdout)}
    assert results["SCS 9 SUM"]["error"] == {
        "code": "not_found", "message": "the file does not exist at the server side"}
    assert results["AED"]["ok"]


def test_auth_unreachable_and_usage_statuses(server_process: ServerProcess,
                                             tmp_path: Path) -> None:
    d = tmp_path / "a"
    p = headless(server_process.port, d, "--json", "--run", "AED", password="wrong")
    assert p.returncode == 3
    assert json_lines(p.stdout)[0]["error"]["code"] == "auth_failed"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    p = headless(closed_port, d, "--run", "AED")
    assert p.returncode == 4 and "cannot reach the server" in p.stderr
    for opts, password, name, words in [
        (["--run", "AED"], None, "alpha", "needs a password"),
        (["--run", "SCS 1 MEDIAN"], "alphapass", "alpha", "command 1"),
        (["--run", "AED", "--script", "x"], "alphapass", "alpha", "not both"),
        (["--run", "AED"], "alphapass", None, "--run needs --name"),
        (["--run", "OUT; AED"], "alphapass", "alpha", "last"),
    ]:
        p = headless(server_process.port, d, *opts, password=password, name=name)
        assert p.returncode == 2, (opts, p.stdout, p.stderr)
        assert words in p.stderr and "Traceback" not in p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
    # Blocked: the third wrong password blocks gamma; status 3 says so.
    for _ in range(3):
        p = headless(server_process.port, d, "--run", "AED", name="gamma", password="nope")
        assert p.returncode == 3
    assert "blocked" in p.stderr.lower()


def test_password_file_and_script(server_process: ServerProcess, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("betapass\n")
    script = tmp_path / "cmds"
    script.write_text("# a device's job\nEDG 3 10\n\nUED 3\nSCS 3 MAX\n")
    for mode in (0o644, 0o640, 0o604):
        secret.chmod(mode)
        p = headless(server_process.port, tmp_path / "b", "--password-file", str(secret),
                     "--script", str(script), name="beta", password=None)
        assert p.returncode == 2 and "chmod 600" in p.stderr, (oct(mode), p.stderr)
    secret.chmod(0o600)
    p = headless(server_process.port, tmp_path / "b", "--password-file", str(secret),
                 "--script", str(script), name="beta", password="wrong-but-unused")
    assert p.returncode == 0, p.stderr
    assert "the MAX of file 3 is" in p.stdout


#: Seconds a step of the restart test may take on a loaded box (each is a process
#: starting, or a device reconnecting with backoff): generous, and bounded.
PATIENCE = 60.0


def _restart(server: ServerProcess, credentials: Path) -> ServerProcess:
    port = server.port
    server.stop()
    assert wait_until(lambda: _port_free(port), timeout=PATIENCE), f"port {port} still bound"
    return ServerProcess(server_argv() + [
        "server", str(port), "3", "--host", "127.0.0.1", "--credentials", str(credentials),
        "--data-dir", str(server.data_dir), "--log-format", "json", "--no-admin"],
        server.data_dir)


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _holds(folder: Path, content: bytes) -> bool:
    """Whether a file of ``folder`` has ``content`` (a file may be renamed meanwhile)."""
    for f in folder.iterdir():
        try:
            if f.is_file() and f.read_bytes() == content:
                return True
        except FileNotFoundError:
            continue
    return False


def test_stay_reconnects_after_restart_and_sigterm_logs_out(
        server_process: ServerProcess, credentials_file: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    env["EDGENET_PASSWORD"] = "betapass"
    beta_dir = tmp_path / "beta"
    beta_dir.mkdir()
    stay = StayingDevice(
        [sys.executable, "-m", "edgenet", "client", "127.0.0.1", str(server_process.port), "0",
         "--data-dir", str(beta_dir), "--name", "beta", "--stay", "--json",
         "--reconnect-max", "1"], env=env)
    server = server_process

    def logins() -> list[dict[str, Any]]:
        return [e for e in stay.read() if e.get("command") == "login" and e.get("ok")]

    try:
        assert wait_until(lambda: device_names(server.data_dir) == ["beta"], PATIENCE), \
            (device_names(server.data_dir), stay.read())
        udp_before = (server.data_dir / "edge-device-log.txt").read_text().split("; ")[-1]
        server = _restart(server_process, credentials_file)
        # The device comes back by itself (a second login of its own), on the same UDP port.
        assert wait_until(lambda: len(logins()) == 2
                          and device_names(server.data_dir) == ["beta"], PATIENCE), \
            (device_names(server.data_dir), stay.read())
        udp_after = (server.data_dir / "edge-device-log.txt").read_text().split("; ")[-1]
        assert udp_after == udp_before
        # A file sent to it after the restart arrives: the UDP endpoint outlived the link.
        payload = tmp_path / "alpha" / "clip.bin"
        payload.parent.mkdir()
        payload.write_bytes(os.urandom(200_000))
        p = headless(server.port, tmp_path / "alpha", "--json", "--run", "UVF beta clip.bin",
                     timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr
        uvf = next(r for r in json_lines(p.stdout) if r["command"] == "UVF beta clip.bin")
        assert uvf["ok"] and uvf["result"]["device"] == "beta"
        # Headless, a UVF's result is the end of the transfer, not its start.
        assert "has been uploaded to beta" in uvf["text"]
        content = payload.read_bytes()
        assert wait_until(lambda: _holds(beta_dir, content), PATIENCE), \
            sorted(f.name for f in beta_dir.iterdir())
        # SIGTERM: logged out at once, status 0.
        stay.proc.send_signal(signal.SIGTERM)
        assert stay.proc.wait(PATIENCE) == 0
        assert wait_until(lambda: device_names(server.data_dir) == [], PATIENCE), \
            device_names(server.data_dir)
        assert wait_until(lambda: "logout" in {e.get("event") for e in server.read_events()},
                          PATIENCE), [e.get("event") for e in server.events][-10:]
        events = stay.read()
        err = stay.errors()
        assert [e.get("command") for e in events].count("login") == 2, events
        assert any(e.get("event") == "disconnected" for e in events), events
        assert any(e.get("event") == "peer" and "received" in e["message"]
                   and "clip.bin" in e["message"] for e in events), events
        assert "Traceback" not in err
    finally:
        stay.stop()
        if server is not server_process:
            server.stop()


def test_sigterm_on_a_scripted_client(server_process: ServerProcess, tmp_path: Path) -> None:
    c = LiveClient(server_process.port, tmp_path / "a")
    try:
        c.login("alpha", "alphapass")
        assert wait_until(lambda: device_names(server_process.data_dir) == ["alpha"])
        started = time.monotonic()
        c.proc.send_signal(signal.SIGTERM)
        assert c.proc.wait(10) == 0
        assert time.monotonic() - started < 5
        assert wait_until(lambda: device_names(server_process.data_dir) == [])
    finally:
        c.close()


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    from edgenet.client.backoff import Backoff

    low = Backoff(base=0.5, cap=4.0, rng=lambda: 0.0)
    high = Backoff(base=0.5, cap=4.0, rng=lambda: 1.0)
    assert [low.next_delay() for _ in range(6)] == [0.25, 0.5, 1.0, 2.0, 2.0, 2.0]
    assert [high.next_delay() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    high.reset()
    assert high.next_delay() == 0.5
    assert Backoff(base=5.0, cap=1.0, rng=lambda: 1.0).next_delay() == 1.0


def test_headless_uvf_that_never_arrives_fails_with_status_5(server_process: ServerProcess,
                                                               tmp_path: Path) -> None:
    """The target is logged in, but nothing answers on its UDP port: the transfer times
    out, and the headless run says so in its exit status (5) and its JSON result."""
    import asyncio

    from tests.wireclient import WireDevice

    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # bound, never read: the offer goes unanswered

    async def log_in_beta() -> WireDevice:
        dev = await WireDevice.connect(server_process.port)
        assert (await dev.login("beta", "betapass", silent.getsockname()[1]))["type"] == "ok"
        return dev

    loop = asyncio.new_event_loop()
    try:
        beta = loop.run_until_complete(log_in_beta())
        (tmp_path / "alpha").mkdir()
        (tmp_path / "alpha" / "clip.bin").write_bytes(os.urandom(50_000))
        p = headless(server_process.port, tmp_path / "alpha", "--json", "--run",
                     "UVF beta clip.bin", timeout=60)
        assert p.returncode == 5, p.stdout + p.stderr
        result = next(r for r in json_lines(p.stdout) if r.get("command") == "UVF beta clip.bin")
        assert result["ok"] is False and "failed" in result["error"]["message"]
        assert "Traceback" not in p.stderr
        loop.run_until_complete(beta.close())
    finally:
        loop.close()
        silent.close()
