"""Issue 12, item 13: numbers are parsed strictly (ASCII digits) everywhere.

``str.isdigit`` accepts ``"²"`` (which ``int`` refuses) and ``int``/``float``
accept ``"٣"`` and a full-width ``"１"``: each was a 500 at the admin API or a
number nobody typed. Through a real server process: every numeric parameter of
the admin API answers a 4xx JSON error for them, the device protocol answers
one-line errors, and the command line refuses them with exit status 2.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgenet.numbers import NumberError, parse_ascii_float, parse_ascii_int
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice

TOKEN = "strict-numbers-token-0123456789"
#: A superscript two (isdigit, not int), Arabic-Indic three and full-width one (int and
#: float take both), and ASCII mixed with each.
DIGITS = ["²", "٣", "１", "1²", "١٠", "2１"]
LISTS = {"/api/v1/devices": "devices", "/api/v1/lockouts": "lockouts",
         "/api/v1/logs/uploads": "uploads", "/api/v1/logs/deletions": "deletions",
         "/api/v1/logs/devices": "device-log", "/api/v1/events": "events",
         "/api/v1/files": "files"}
WITH_SINCE = [p for p in LISTS if p != "/api/v1/lockouts"]


def test_parse_ascii_int_and_float() -> None:
    assert parse_ascii_int("0") == 0 and parse_ascii_int("007", 0, 10) == 7
    assert parse_ascii_float("1.5") == 1.5 and parse_ascii_float("1e3") == 1000.0
    assert parse_ascii_float(".5", 0.0, 1.0) == 0.5
    for bad in DIGITS + ["", " 1", "1 ", "+1", "-1", "1_000", "0x10", "1.0", "9" * 41]:
        with pytest.raises(NumberError) as err:
            parse_ascii_int(bad, what="limit")
        assert "\n" not in str(err.value) and str(err.value).startswith("limit must be")
    for bad in DIGITS + ["", "nan", "inf", "-1", "1e999", "1.2.3", "1_0", "٣.٥"]:
        with pytest.raises(ValueError):
            parse_ascii_float(bad)
    with pytest.raises(NumberError, match="from 1 to 5"):
        parse_ascii_int("6", 1, 5, "MAX_ATTEMPTS")
    with pytest.raises(NumberError, match="greater than 0"):
        parse_ascii_float("0", 0.0, what="--heartbeat", lo_open=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, int]]:
    tmp = tmp_path_factory.mktemp("strict")
    creds = tmp / "credentials.txt"
    creds.write_text("alpha alphapass\nbeta betapass\n")
    data = tmp / "server"
    data.mkdir()
    proc = ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--admin-host", "127.0.0.1",
        "--admin-port", "0", "--admin-token", TOKEN], data)
    port = 0
    deadline = time.monotonic() + 10
    while not port and time.monotonic() < deadline:
        port = next((int(e["port"]) for e in proc.read_events()
                     if e.get("event") == "admin_ready"), 0)
        time.sleep(0.05)
    assert port, "the admin API did not start"
    yield proc, port
    proc.stop()
    assert "Traceback" not in proc.stderr_path.read_text()


def _get(port: int, path: str, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params)}"
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _cursor(kind: str, number: str) -> str:
    return base64.urlsafe_b64encode(f"{kind}:{number}".encode()).decode().rstrip("=")


def _assert_4xx(status: int, body: dict[str, Any], code: str) -> None:
    assert 400 <= status < 500, (status, body)
    assert body["error"]["code"] == code, body
    assert "\n" not in body["error"]["message"]


@pytest.mark.parametrize("digit", DIGITS)
def test_every_numeric_admin_parameter_refuses_unicode_digits(
        server: tuple[ServerProcess, int], digit: str) -> None:
    proc, port = server
    for path, kind in LISTS.items():
        _assert_4xx(*_get(port, path, {"limit": digit}), "bad_limit")
        _assert_4xx(*_get(port, path, {"cursor": _cursor(kind, digit)}), "bad_cursor")
        assert _get(port, path, {"cursor": _cursor(kind, "0")})[0] == 200  # the form is right
    for path in WITH_SINCE:
        _assert_4xx(*_get(port, path, {"since": digit}), "bad_since")
        _assert_4xx(*_get(port, path, {"since": f"{digit}0 November 2026 10:00:00"}), "bad_since")
    _assert_4xx(*_get(port, "/api/v1/events/stream", {"after": digit}), "bad_after")
    assert proc.proc.poll() is None


@pytest.mark.parametrize("digit", ["²", "٣", "１"])
def test_last_event_id_header_refuses_unicode_digits(server: tuple[ServerProcess, int],
                                                     digit: str) -> None:
    _, port = server
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     b"Authorization: Bearer " + TOKEN.encode() + b"\r\n"
                     b"Last-Event-ID: " + digit.encode() + b"\r\nConnection: close\r\n\r\n")
        raw = b""
        while b"\r\n\r\n" not in raw or not raw.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ")[1])
    _assert_4xx(status, json.loads(body), "bad_after")


async def _device_session(port: int) -> list[dict[str, Any]]:
    replies = []
    dev = await WireDevice.connect(port)
    replies.append(await dev.login("alpha", "alphapass", udp_port="٣٠٠٠"))  # type: ignore[arg-type]
    ok = await dev.login("alpha", "alphapass")
    assert ok["type"] == "ok", ok
    for fields in ({"type": "upload", "file_id": "٣"}, {"type": "compute", "file_id": "²",
                                                          "op": "SUM"},
                   {"type": "delete", "file_id": "１"}, {"type": "upload", "file_id": "1٣"}):
        replies.append(await dev.call(fields))
    assert (await dev.call({"type": "ping"}))["type"] == "ok"  # still logged in and served
    await dev.close()
    # A bare Unicode digit where JSON wants a number is not JSON: a one-line frame error.
    raw_dev = await WireDevice.connect(port)
    raw = '{"type":"delete","id":7,"file_id":٣}'.encode()
    raw_dev.writer.write(struct.pack(">I", len(raw)) + raw)
    await raw_dev.writer.drain()
    reply = await raw_dev.recv()
    assert reply is not None
    replies.append(reply)
    await raw_dev.close()
    return replies


def test_device_protocol_answers_one_line_errors_for_unicode_digits(
        server: tuple[ServerProcess, int]) -> None:
    proc, _ = server
    replies = asyncio.run(_device_session(proc.port))
    for reply in replies:
        assert reply["type"] == "error", reply
        assert reply["code"] in ("bad_message", "bad_frame"), reply
        assert reply["message"] and "\n" not in reply["message"]
    assert replies[-1]["code"] == "bad_frame"
    assert proc.proc.poll() is None


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgenet", *args], capture_output=True,
                          text=True, timeout=20, stdin=subprocess.DEVNULL, check=False,
                          env={**os.environ, **(env or {})})


def _usage_line(p: subprocess.CompletedProcess[str]) -> str:
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


@pytest.mark.parametrize("digit", ["٣", "１", "²"])
def test_command_line_options_refuse_unicode_digits_with_exit_2(tmp_path: Path,
                                                                digit: str) -> None:
    # A credentials file that does not exist: on an old main a number taken for 3 let
    # the server go on to fail on it (exit 1), instead of refusing the number (exit 2).
    none = str(tmp_path / "missing.txt")
    base = ["--credentials", none, "--data-dir", str(tmp_path), "--no-admin"]
    for argv in (["server", f"5500{digit}", "3", *base], ["server", "0", digit, *base],
                 ["server", "0", "3", "--block-seconds", digit, *base],
                 ["server", "0", "3", "--heartbeat", f"1{digit}", *base],
                 ["server", "0", "3", "--max-connections", f"10{digit}", *base],
                 ["server", "0", "3", "--login-rate", digit, *base],
                 ["server", "0", "3", "--max-upload", f"1{digit}", *base],
                 ["client", "127.0.0.1", f"5500{digit}", "0"],
                 ["client", "127.0.0.1", "1", "0", "--chunk-size", f"100{digit}"],
                 ["hash-password", "alpha", "--iterations", f"1000{digit}"],
                 ["admin", "--url", "http://127.0.0.1:9", "logs", "uploads", "--limit", digit],
                 ["admin", "--url", "http://127.0.0.1:9", "logs", "uploads", "--since",
                  f"{digit}h"]):
        line = _usage_line(_run(*argv))
        assert "must be" in line or "invalid" in line.lower(), (argv, line)
    # The environment and a TOML file go through the same checks.
    _usage_line(_run("server", "0", "3", *base, env={"EDGENET_BLOCK_SECONDS": digit}))
    toml = tmp_path / "edgenet.toml"
    toml.write_text(f'login_rate = "{digit}"\n', encoding="utf-8")
    _usage_line(_run("server", "0", "3", *base, "--config", str(toml)))
