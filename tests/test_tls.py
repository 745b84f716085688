"""TLS between devices and the server, with a throwaway CA made at run time (trustme)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.clientproc import client_argv, run_script
from tests.conftest import ServerProcess, server_argv

trustme = pytest.importorskip("trustme")


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    out = {"ca": tmp_path / "ca.pem", "cert": tmp_path / "server.pem",
           "key": tmp_path / "server.key", "other_ca": tmp_path / "other-ca.pem"}
    ca.cert_pem.write_to_path(str(out["ca"]))
    cert.private_key_pem.write_to_path(str(out["key"]))
    cert.cert_chain_pems[0].write_to_path(str(out["cert"]))
    for pem in cert.cert_chain_pems[1:]:
        pem.write_to_path(str(out["cert"]), append=True)
    trustme.CA().cert_pem.write_to_path(str(out["other_ca"]))
    return out


def start(tmp_path: Path, credentials_file: Path, *extra: str) -> ServerProcess:
    data = tmp_path / f"server{time.monotonic_ns()}"
    data.mkdir()
    return ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--no-admin", *extra], data)


def client(port: int, data: Path, lines: list[str], *extra: str,
           timeout: float = 30) -> subprocess.CompletedProcess[str]:
    data.mkdir(parents=True, exist_ok=True)
    return subprocess.run(client_argv(port, data) + list(extra),
                          input="".join(x + "\n" for x in lines), capture_output=True,
                          text=True, timeout=timeout, check=False)


def one_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode != 0
    text = (p.stdout + p.stderr)
    assert "Traceback" not in text, text
    lines = [x for x in p.stdout.splitlines() if x.strip()]
    assert len(lines) == 1, p.stdout
    return lines[0]


def test_login_over_tls_and_mismatches(tmp_path: Path, credentials_file: Path,
                                       pki: dict[str, Path]) -> None:
    tls = start(tmp_path, credentials_file, "--tls-cert", str(pki["cert"]),
                "--tls-key", str(pki["key"]))
    plain = start(tmp_path, credentials_file)
    try:
        p = client(tls.port, tmp_path / "a", ["alpha", "alphapass", "EDG 1 5", "UED 1",
                                              "SCS 1 MAX", "OUT"], "--tls-ca", str(pki["ca"]))
        assert p.returncode == 0, p.stdout + p.stderr
        assert "Welcome to the edge network, alpha!" in p.stdout
        assert "has been uploaded (5 samples)" in p.stdout and "the MAX of file 1 is" in p.stdout

        p = client(tls.port, tmp_path / "b", ["alpha", "alphapass", "OUT"], "--tls-insecure")
        assert p.returncode == 0 and "Welcome" in p.stdout
        assert "WARNING" in p.stderr and "NOT checked" in p.stderr

        # A plain client against the TLS server: one clear line, quickly.
        t0 = time.monotonic()
        line = one_line(client(tls.port, tmp_path / "c", ["alpha", "alphapass"], timeout=20))
        print(line)
        assert "before answering hello" in line and "--tls-ca" in line
        # A TLS client against a plain server.
        line = one_line(client(plain.port, tmp_path / "d", ["alpha", "alphapass"],
                               "--tls-ca", str(pki["ca"]), timeout=20))
        print(line)
        assert "TLS handshake failed" in line and "without TLS" in line
        # A certificate from another CA is refused.
        line = one_line(client(tls.port, tmp_path / "e", ["alpha", "alphapass"],
                               "--tls-ca", str(pki["other_ca"]), timeout=20))
        print(line)
        assert "certificate was refused" in line
        assert time.monotonic() - t0 < 40  # bounded: none of them waits for a timeout
        # The TLS server is unharmed by the plain client.
        p = run_script(tls.port, tmp_path / "f", ["beta", "betapass"])
        assert p.returncode == 1
        assert tls.proc.poll() is None and plain.proc.poll() is None
        assert "Traceback" not in tls.stderr_path.read_text()
    finally:
        tls.stop()
        plain.stop()


def test_bad_tls_files_are_one_line(tmp_path: Path, credentials_file: Path,
                                    pki: dict[str, Path]) -> None:
    def server(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(server_argv() + [
            "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
            "--data-dir", str(tmp_path / "s"), "--no-admin", *extra],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL, check=False)

    for extra, words in ((["--tls-cert", str(pki["cert"])], "go together"),
                         (["--tls-cert", str(tmp_path / "nope.pem"), "--tls-key",
                           str(pki["key"])], "not found"),
                         (["--tls-cert", str(pki["ca"]), "--tls-key", str(pki["key"])],
                          "cannot use TLS certificate")):
        p = server(*extra)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode != 0 and len(lines) == 1 and words in lines[0], p.stderr
    p = client(1, tmp_path / "x", [], "--tls-ca", str(tmp_path / "missing.pem"))
    assert "TLS CA file not found" in one_line(p)
