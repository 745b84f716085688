"""Slowloris on the admin port, against the built zipapp: connections that send a
request head one byte at a time are closed at the header timeout, connections
beyond the cap get 503 at once, an idle kept-alive connection is closed, and
honest requests (a slow but timely head, a long event stream) are served."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PYZ, ServerProcess, server_argv
from tests.test_admin_support import http_json

pytestmark = pytest.mark.timeout(60)

CAP = 100
SLOW = 150


async def closed_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    """True when the server closes (EOF or reset) within ``seconds``."""
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(4096):
                pass
        return True
    except TimeoutError:  # (an OSError too: caught first)
        return False
    except (ConnectionError, OSError):
        return True


async def trickle(writer: asyncio.StreamWriter, stop: asyncio.Event) -> None:
    head = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
    for i in range(len(head)):
        if stop.is_set() or writer.is_closing():
            return
        try:
            writer.write(head[i:i + 1])
            await writer.drain()
        except (ConnectionError, OSError):
            return
        await asyncio.sleep(0.2)


async def scenario(port: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    stop = asyncio.Event()
    conns = [await asyncio.open_connection("127.0.0.1", port) for _ in range(CAP)]
    trickles = [asyncio.create_task(trickle(w, stop)) for _, w in conns]
    await asyncio.sleep(0.3)
    # Beyond the cap: an answer at once, and closed.
    extra = [await asyncio.open_connection("127.0.0.1", port) for _ in range(SLOW - CAP)]
    answers = await asyncio.gather(*(r.read(4096) for r, _ in extra))
    for _, w in extra:
        w.close()
    out["over_cap"] = sum(a.startswith(b"HTTP/1.1 503") and b"too_many_connections" in a
                          for a in answers)
    status, _ = await asyncio.to_thread(http_json, f"http://127.0.0.1:{port}/healthz")
    out["while_full"] = status
    # The slow ones: all closed at the header timeout (1 s), well before their head ends.
    closed = await asyncio.gather(*(closed_within(r, 4.0) for r, _ in conns))
    out["slow_closed"] = sum(closed)
    stop.set()
    await asyncio.gather(*trickles)
    for _, w in conns:
        w.close()
    out["after"] = await asyncio.to_thread(http_json, f"http://127.0.0.1:{port}/healthz")

    # A head sent slowly but within the timeout is served; then the connection,
    # kept alive and idle, is closed at the idle timeout (2 s).
    r, w = await asyncio.open_connection("127.0.0.1", port)
    for piece in (b"GET /healthz HTTP/1.1\r\n", b"Host: 127.0.0.1\r\n", b"\r\n"):
        w.write(piece)
        await asyncio.sleep(0.25)
    async with asyncio.timeout(5):
        response = await r.readuntil(b"\r\n\r\n")
    out["timely"] = response.split(b"\r\n", 1)[0]
    out["idle_closed"] = await closed_within(r, 4.0)
    w.close()

    # An event stream outlives both timeouts.
    r, w = await asyncio.open_connection("127.0.0.1", port)
    w.write(b"GET /api/v1/events/stream HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(5):
        out["stream"] = (await r.readuntil(b"\r\n\r\n")).split(b"\r\n", 1)[0]
    t0 = asyncio.get_running_loop().time()
    out["stream_cut"] = await closed_within(r, 3.0)
    out["stream_cut_after"] = asyncio.get_running_loop().time() - t0
    w.close()
    return out


def test_slow_heads_are_cut_and_the_admin_port_is_capped(
        tmp_path: Path, credentials_file: Path) -> None:
    assert PYZ.exists(), "build/edgenet.pyz is missing: run `make pyz` (make test does)"
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--admin-host", "127.0.0.1",
        "--admin-port", "0", "--admin-max-connections", str(CAP),
        "--admin-header-timeout", "1", "--admin-idle-timeout", "2"], data)
    try:
        port = next(e["port"] for e in server.events if e.get("event") == "admin_ready")
        out = asyncio.run(asyncio.wait_for(scenario(int(port)), 40))
        events = server.read_events()
    finally:
        server.stop()
    assert out["over_cap"] == SLOW - CAP, out
    assert out["while_full"] == 503, out
    assert out["slow_closed"] == CAP, out
    assert out["after"] == (200, {"status": "ok"}), out
    assert out["timely"] == b"HTTP/1.1 200 OK", out
    assert out["idle_closed"], out
    assert out["stream"] == b"HTTP/1.1 200 OK" and not out["stream_cut"], repr(out)[-200:]
    reasons = {e.get("reason") for e in events if e.get("event") == "admin_connection_closed"}
    assert reasons == {"header_timeout", "idle_timeout"}, reasons
    refused = [e for e in events if e.get("event") == "admin_connection_refused"]
    assert refused and len(refused) < SLOW - CAP  # logged, at most once a second
    assert server.proc.returncode == 0
