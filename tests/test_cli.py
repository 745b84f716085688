"""The command line: argument errors are one clear line and a non-zero exit."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from edgenet import __version__

ATTEMPTS = ("Invalid number of allowed failed consecutive attempts: {}. "
            "The valid value of argument number is an integer between 1 and 5")


def run(*args: str, cwd: Path | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgenet", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd, stdin=subprocess.DEVNULL, check=False)


def one_line_error(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode != 0
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("value", ["0", "6", "x", "-1", "2.5"])
def test_max_attempts_out_of_range(value: str, credentials_file: Path, tmp_path: Path) -> None:
    p = run("server", "0", value, "--credentials", str(credentials_file), "--data-dir",
            str(tmp_path), "--no-admin")
    assert one_line_error(p) == ATTEMPTS.format(value)


@pytest.mark.parametrize("port", ["70000", "abc", "-5"])
def test_bad_port(port: str, credentials_file: Path) -> None:
    assert "Invalid port" in one_line_error(run("server", port, "3", "--credentials",
                                                str(credentials_file)))


def test_missing_credentials(tmp_path: Path) -> None:
    line = one_line_error(run("server", "0", "3", "--credentials", str(tmp_path / "none.txt"),
                              "--data-dir", str(tmp_path), "--no-admin"))
    assert "not found" in line and "none.txt" in line


def test_malformed_credentials_names_the_line(tmp_path: Path) -> None:
    creds = tmp_path / "c.txt"
    creds.write_text("alpha a\n# c\nbeta\n")
    line = one_line_error(run("server", "0", "3", "--credentials", str(creds), "--data-dir",
                              str(tmp_path), "--no-admin"))
    assert "line 3" in line


def test_port_in_use(credentials_file: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = one_line_error(run("server", str(port), "3", "--host", "127.0.0.1",
                                  "--credentials", str(credentials_file), "--data-dir",
                                  str(tmp_path), "--no-admin"))
    assert "already in use" in line


def test_help_and_version() -> None:
    for args in (["--help"], ["server", "--help"], ["client", "--help"]):
        p = run(*args)
        assert p.returncode == 0 and "usage:" in p.stdout
    p = run("--version")
    assert p.returncode == 0 and p.stdout.strip() == f"edgenet {__version__}"


def test_client_bad_ports() -> None:
    assert "Invalid server port" in one_line_error(run("client", "127.0.0.1", "x", "5000"))
    assert "Invalid UDP port" in one_line_error(run("client", "127.0.0.1", "5000", "99999"))


def test_client_server_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connection refused
        p = subprocess.run([sys.executable, "-m", "edgenet", "client", "127.0.0.1", str(port), "0",
                            "--data-dir", str(tmp_path)], input="alpha\nalphapass\n",
                           capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode != 0
    assert "Traceback" not in p.stdout + p.stderr
    assert "cannot reach the server" in p.stdout + p.stderr


def test_client_udp_port_taken(tmp_path: Path, server_process) -> None:  # type: ignore[no-untyped-def]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("0.0.0.0", 0))
        udp = s.getsockname()[1]
        p = subprocess.run([sys.executable, "-m", "edgenet", "client", "127.0.0.1",
                            str(server_process.port), str(udp), "--data-dir", str(tmp_path)],
                           input="alpha\nalphapass\n", capture_output=True, text=True, timeout=30, check=False)
    assert p.returncode != 0
    assert "Traceback" not in p.stdout + p.stderr
    assert f"UDP port {udp} is already in use" in p.stdout + p.stderr


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "edgenet"
    if not script.exists():
        pytest.skip("not installed as a package (no console script next to the interpreter)")
    p = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20, check=False)
    assert p.returncode == 0 and p.stdout.strip() == f"edgenet {__version__}"


def _has_ipv6() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6(), reason="no IPv6 loopback on this machine")
def test_ipv6_server_and_client(tmp_path: Path, credentials_file: Path) -> None:
    from tests.conftest import ServerProcess, server_argv

    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess(server_argv() + ["server", "0", "3", "--host", "::1", "--credentials",
                                            str(credentials_file), "--data-dir", str(data),
                                            "--log-format", "json", "--no-admin"], data)
    try:
        p = subprocess.run([sys.executable, "-m", "edgenet", "client", "::1", str(server.port), "0",
                            "--data-dir", str(tmp_path)], input="alpha\nalphapass\nAED\nOUT\n",
                           capture_output=True, text=True, timeout=30, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        assert "no other active edge devices" in p.stdout
        ready = next(e for e in server.read_events() if e["event"] == "server_ready")
        assert ready["host"] == "::1"
    finally:
        server.stop()
