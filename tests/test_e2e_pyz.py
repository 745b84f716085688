"""End to end through the built zipapp: one server and two scripted clients, as processes."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from tests.clientproc import LiveClient, run_script, wait_until
from tests.conftest import PYZ, ServerProcess, server_argv

pytestmark = pytest.mark.skipif(not PYZ.exists(), reason="build/edgenet.pyz not built; run `make test`")


@pytest.fixture
def pyz_server(tmp_path: Path, credentials_file: Path) -> Iterator[ServerProcess]:
    data = tmp_path / "server"
    data.mkdir()
    proc = ServerProcess(server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--no-admin"], data)
    yield proc
    proc.stop()


def test_pyz_version_and_help() -> None:
    p = subprocess.run([sys.executable, str(PYZ), "--version"], capture_output=True, text=True,
                       timeout=60, check=False)
    assert p.returncode == 0 and p.stdout.startswith("edgenet ")
    p = subprocess.run([sys.executable, str(PYZ), "server", "0", "9"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode != 0 and "between 1 and 5" in p.stderr and "Traceback" not in p.stderr


def test_pyz_server_and_two_clients_every_command(pyz_server: ServerProcess, tmp_path: Path) -> None:
    beta_dir = tmp_path / "beta"
    beta = LiveClient(pyz_server.port, beta_dir, use_pyz=True)
    try:
        beta.login("beta", "betapass")
        beta.send("EDG 2 50")
        beta.expect("data generation done")
        beta.send("UED 2")
        beta.expect("has been uploaded")
        alpha = run_script(pyz_server.port, tmp_path / "alpha", [
            "alpha", "alphapass", "EDG 1 1000", "UED 1", "SCS 1 SUM", "SCS 1 AVERAGE",
            "SCS 1 MAX", "SCS 1 MIN", "AED", "UVF beta alpha-1.txt", "DTE 1", "SCS 1 SUM", "OUT",
        ], use_pyz=True)
        assert alpha.returncode == 0, alpha.stdout + alpha.stderr
        out = alpha.stdout
        values = [int(x) for x in (tmp_path / "alpha" / "alpha-1.txt").read_text().split()]
        assert len(values) == 1000
        assert f"the SUM of file 1 is {sum(values)}" in out
        assert f"the MAX of file 1 is {max(values)}" in out
        assert f"the MIN of file 1 is {min(values)}" in out
        average = re.search(r"the AVERAGE of file 1 is (-?\d+\.\d+)$", out, re.MULTILINE)
        assert average, out
        # Exact: 1000 samples make a mean of at most three decimals.
        assert Fraction(Decimal(average[1])) == Fraction(sum(values), len(values))
        # AED lists beta as the server's device log does (address, UDP port, since).
        seq, since, name, ip, udp_port = (pyz_server.data_dir / "edge-device-log.txt"
                                          ).read_text().splitlines()[0].split("; ")
        assert (seq, name, ip) == ("1", "beta", "127.0.0.1")
        listed = re.findall(r"^(\S+); (\S+); (\d+); active since (.+)$", out, re.MULTILINE)
        assert listed == [("beta", "127.0.0.1", udp_port, since)], out
        assert "file with ID of 1 has been successfully removed from the central server" in out
        assert "the file does not exist at the server side" in out
        # UVF: straight to beta over UDP; the script's OUT waits for the transfer.
        assert "alpha-1.txt has been uploaded" in out
        assert out.index("alpha-1.txt has been uploaded") < out.index("Bye, alpha!")
        beta.expect("received alpha_alpha-1.txt from alpha")
        assert ((beta_dir / "alpha_alpha-1.txt").read_bytes()
                == (tmp_path / "alpha" / "alpha-1.txt").read_bytes())
        beta.send("AED")
        beta.expect("no other active edge devices")
        beta.send("SCS 2 SUM")
        beta.expect("the SUM of file 2 is")
        beta.send("OUT")
        beta.expect("Bye")
        assert beta.proc.wait(10) == 0
    finally:
        beta.close()
    assert wait_until(lambda: (pyz_server.data_dir / "edge-device-log.txt").read_text() == "")
    uploads = (pyz_server.data_dir / "upload-log.txt").read_text().splitlines()
    assert [u.split("; ")[0] for u in uploads] == ["beta", "alpha"]
    deletions = (pyz_server.data_dir / "deletion-log.txt").read_text().splitlines()
    assert len(deletions) == 1 and deletions[0].endswith("; 1; 1000")
    events = {e["event"] for e in pyz_server.read_events()}
    assert {"server_ready", "login", "upload", "command", "delete", "logout"} <= events
