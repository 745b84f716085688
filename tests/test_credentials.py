"""Hashed credentials, hash-password, reload (method and SIGHUP), revocation, and the
per-address failed-login rate."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials, CredentialsError
from edgenet.server.limits import LoginRateLimiter
from edgenet.server.passwords import HashFormatError, hash_password, parse_hash
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice

#: Cheap enough for tests, slow enough (a few ms) that a check really yields the loop.
ITER = 20_000


def hashed_text(**passwords: str) -> str:
    return "".join(f"{n} {hash_password(p, ITER)}\n" for n, p in passwords.items())


# -- the format ----------------------------------------------------------------------


def test_hash_round_trip_and_salt() -> None:
    a, b = hash_password("s3cret pw", 1000), hash_password("s3cret pw", 1000)
    assert a != b and a.startswith("$pbkdf2-sha256$1000$")  # a fresh salt each time
    assert parse_hash(a).verify("s3cret pw") and not parse_hash(a).verify("s3cret pW")


@pytest.mark.parametrize("entry,words", [
    ("$md5$1000$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "unknown password hash scheme"),
    ("$pbkdf2-sha256$10$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA", "iterations"),
    ("$pbkdf2-sha256$1000$!!$aGFzaGhhc2hoYXNoaGFzaA", "base64"),
    ("$pbkdf2-sha256$1000$c2FsdHNhbHQ", "expected $pbkdf2-sha256$"),
    ("$notahash", "plain passwords may not start with '$'"),
])
def test_malformed_hashes_are_named(entry: str, words: str) -> None:
    with pytest.raises(HashFormatError, match=None) as err:
        parse_hash(entry)
    assert words in str(err.value)
    with pytest.raises(CredentialsError) as cerr:
        Credentials.parse(f"alpha alphapass\nbeta {entry}\n", "creds.txt")
    assert str(cerr.value).startswith("creds.txt, line 2: ")


def test_mixed_file_lists_plain_entries() -> None:
    creds = Credentials.parse("alpha alphapass\n" + hashed_text(beta="betapass"))
    assert creds.plain_text == ["alpha"]
    assert creds.check("beta", "betapass") and not creds.check("beta", "alphapass")
    assert creds.check("alpha", "alphapass")
    assert creds.is_slow("beta") and creds.is_slow("nobody") and not creds.is_slow("alpha")
    assert not creds.check("nobody", "x")


# -- logins against hashed entries --------------------------------------------------------


async def server_with(config: ServerConfig, text: str, **changes: object) -> EdgeServer:
    path = config.data_dir.parent / "credentials.txt"
    path.write_text(text)
    server = EdgeServer(replace(config, credentials=path, **changes), Credentials.load(path))
    await server.start()
    return server


async def test_hashed_login_and_fifty_concurrent_wrong_attempts(server_config: ServerConfig
                                                                ) -> None:
    server = await server_with(server_config, hashed_text(alpha="alphapass", beta="betapass"))
    try:
        ok = await WireDevice.connect(server.port)
        assert (await ok.login("alpha", "alphapass"))["type"] == "ok"
        devices = await asyncio.gather(*(WireDevice.connect(server.port) for _ in range(50)))
        replies = await asyncio.gather(*(d.login("beta", "wrong") for d in devices))
        codes = [r["code"] for r in replies]
        assert codes.count("auth_failed") == 2 and codes.count("blocked") == 48, codes
        assert (await devices[0].login("beta", "betapass"))["code"] == "blocked"
        unknown = await devices[1].login("nobody", "x")
        assert unknown["code"] == "auth_failed"
        assert unknown["message"] == "Invalid password. Please try again"
        await asyncio.gather(*(d.close() for d in devices), ok.close())
    finally:
        await server.close()


async def test_plain_text_warning_once_at_start(server_config: ServerConfig) -> None:
    with capture_logs() as logs:
        server = await server_with(server_config, "alpha alphapass\n" + hashed_text(beta="b"))
        await server.close()
        server = await server_with(server_config, hashed_text(alpha="a", beta="b"))
        await server.close()
    warnings = [e for e in logs if e["event"] == "credentials_plain_text"]
    assert len(warnings) == 1 and warnings[0]["count"] == 1
    assert warnings[0]["log_level"] == "warning"


# -- reload and revocation ---------------------------------------------------------------


async def test_reload_adds_revokes_and_keeps_old_on_error(server_config: ServerConfig) -> None:
    server = await server_with(server_config, "alpha alphapass\nbeta betapass\n")
    path = server.config.credentials
    try:
        a = await WireDevice.connect(server.port)
        assert (await a.login("alpha", "alphapass"))["type"] == "ok"
        b = await WireDevice.connect(server.port)
        assert (await b.login("beta", "betapass"))["type"] == "ok"
        d = await WireDevice.connect(server.port)
        assert (await d.login("delta", "deltapass"))["code"] == "auth_failed"

        path.write_text("beta betapass\n" + hashed_text(delta="deltapass"))
        with capture_logs() as logs:
            result = await server.reload_credentials()
        assert result["reloaded"] and result["added"] == ["delta"]
        assert result["removed"] == ["alpha"] and result["disconnected"] == ["alpha"]
        notice = await a.recv()
        assert notice is not None and (notice["type"], notice["kind"]) == ("notice", "revoked")
        assert await a.recv() is None
        assert [x.name for x in await server.state.presence.devices()] == ["beta"]
        assert (await d.login("delta", "deltapass"))["type"] == "ok"
        assert any(e["event"] == "credentials_reloaded" for e in logs)

        # A malformed file keeps the old credentials; the error is logged, nobody dropped.
        path.write_text("beta betapass\nbroken line with spaces\n")
        with capture_logs() as logs:
            result = await server.reload_credentials()
        assert not result["reloaded"] and "line 2" in result["error"]["message"]
        failed = next(e for e in logs if e["event"] == "credentials_reload_failed")
        assert failed["log_level"] == "error"
        assert sorted(x.name for x in await server.state.presence.devices()) == ["beta", "delta"]
        e = await WireDevice.connect(server.port)
        assert (await e.login("delta", "deltapass"))["type"] == "ok"  # takes over: still valid
        path.unlink()
        assert not (await server.reload_credentials())["reloaded"]
        await asyncio.gather(*(x.close() for x in (a, b, d, e)))
    finally:
        await server.close()


def test_sighup_reloads_a_running_server(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.txt"
    creds.write_text("alpha alphapass\n")
    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--no-admin"], data)
    try:
        async def login(name: str, password: str) -> str:
            dev = await WireDevice.connect(server.port)
            try:
                reply = await dev.login(name, password)
                return str(reply.get("code", reply["type"]))
            finally:
                await dev.close()

        assert asyncio.run(login("omega", "omegapass")) == "auth_failed"
        creds.write_text("alpha alphapass\n" + hashed_text(omega="omegapass"))
        os.kill(server.proc.pid, signal.SIGHUP)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                e.get("event") == "credentials_reloaded" for e in server.read_events()):
            time.sleep(0.05)
        assert asyncio.run(login("omega", "omegapass")) == "ok"
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert server.proc.returncode == 0


# -- hash-password ----------------------------------------------------------------------


def test_hash_password_command_reads_stdin_only(tmp_path: Path) -> None:
    p = subprocess.run([sys.executable, "-m", "edgenet", "hash-password", "alpha",
                        "--iterations", "1000"], input="pass word\n", capture_output=True,
                       text=True, timeout=30, check=False)
    assert p.returncode == 0, p.stderr
    name, entry = p.stdout.strip().split(" ")
    assert name == "alpha" and parse_hash(entry).verify("pass word")
    creds = Credentials.parse(p.stdout)
    assert creds.check("alpha", "pass word")
    for args, stdin in ((["--iterations", "5"], "x\n"), ([], ""), (["bad/name"], "x\n")):
        p = subprocess.run([sys.executable, "-m", "edgenet", "hash-password", *args],
                           input=stdin, capture_output=True, text=True, timeout=30, check=False)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode != 0 and len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
        assert p.stdout == ""


# -- failed logins per address ----------------------------------------------------------------


def test_rate_limiter_with_a_fake_clock() -> None:
    rl = LoginRateLimiter(per_minute=3)
    for _ in range(3):
        assert rl.seconds_left("192.0.2.1", 0.0) == 0.0
        rl.record_failure("192.0.2.1", 0.0)
    assert rl.seconds_left("192.0.2.1", 0.0) == pytest.approx(20.0)
    assert rl.seconds_left("192.0.2.2", 0.0) == 0.0  # other addresses are not affected
    assert rl.seconds_left("192.0.2.1", 19.9) > 0
    assert rl.seconds_left("192.0.2.1", 20.0) == 0.0  # one token back after 60/3 s
    assert rl.seconds_left("192.0.2.1", 60.0) == 0.0 and len(rl) == 0  # full: forgotten
    off = LoginRateLimiter(0)
    for _ in range(100):
        off.record_failure("x", 0.0)
    assert off.seconds_left("x", 0.0) == 0.0
    small = LoginRateLimiter(1, max_entries=10)
    for i in range(100):
        small.record_failure(f"10.0.{i}.1", 0.0)
    assert len(small) == 10  # bounded


async def test_failed_logins_per_address_are_limited(server_config: ServerConfig) -> None:
    server = await server_with(server_config, "alpha alphapass\nbeta betapass\n",
                               login_rate=3, max_attempts=5)
    try:
        d = await WireDevice.connect(server.port)
        # Spraying over names: each name stays under its own lockout limit.
        for name in ("n1", "n2", "n3"):
            assert (await d.login(name, "guess"))["code"] == "auth_failed"
        with capture_logs() as logs:
            r = await d.login("alpha", "alphapass")  # even a right password now waits
        assert r["code"] == "rate_limited" and r["seconds_left"] >= 1
        assert "too many failed logins from your address" in r["message"]
        assert any(e["event"] == "login_rate_limited" for e in logs)
        assert (await d.call({"type": "ping"}))["type"] == "ok"  # the connection stays usable
        await d.close()
    finally:
        await server.close()
