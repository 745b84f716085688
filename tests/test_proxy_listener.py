"""The device port behind a balancer: PROXY headers from trusted proxies only, the
device's real address everywhere, TLS after the header, and through a real HAProxy."""

from __future__ import annotations

import asyncio
import ssl
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from admin_api import start_admin
from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.proxyproto import encode_v1, encode_v2
from tests.conftest import start_server
from tests.engines import HAProxyEngine
from tests.wireclient import WireDevice


async def proxied(port: int, header: bytes, local: str = "127.0.0.1",
                  tls: ssl.SSLContext | None = None) -> WireDevice:
    """A device connection whose first bytes are ``header``, as a balancer sends them."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=(local, 0))
    writer.write(header)
    await writer.drain()
    if tls is not None:
        await writer.start_tls(tls, server_hostname="127.0.0.1")  # type: ignore[attr-defined]
    dev = WireDevice(reader, writer)
    reply = await dev.call({"type": "hello", "version": 1})
    assert reply["type"] == "hello", reply
    return dev


async def closed_without_a_word(reader: asyncio.StreamReader) -> bool:
    """The server closed the connection (FIN or reset) without sending a byte."""
    try:
        return await asyncio.wait_for(reader.read(100), 5) == b""
    except ConnectionResetError:
        return True


@pytest.fixture
async def server(server_config: ServerConfig) -> AsyncIterator[EdgeServer]:
    srv = await start_server(server_config, proxy_protocol=True)
    yield srv
    await srv.close()


DST = ("127.0.0.1", 55000)


async def test_the_header_names_the_device_everywhere(server: EdgeServer) -> None:
    a = await proxied(server.port, encode_v2(("192.0.2.7", 40001), DST))
    assert (await a.login("alpha", "alphapass"))["type"] == "ok"
    b = await proxied(server.port, encode_v1(("198.51.100.3", 5000), DST))
    assert (await b.login("beta", "betapass"))["type"] == "ok"
    listed = await b.call({"type": "list_devices"})
    assert [(d["name"], d["ip"]) for d in listed["devices"]] == [("alpha", "192.0.2.7")]
    found = await b.call({"type": "lookup", "name": "alpha"})
    assert (found["ip"], found["udp_port"]) == ("192.0.2.7", 9999)
    assert (await server.state.presence.get("beta")).ip == "198.51.100.3"  # type: ignore[union-attr]
    assert "192.0.2.7" in (server.config.data_dir / "edge-device-log.txt").read_text()
    await a.close()
    await b.close()


async def test_the_login_limiter_counts_the_real_address(server_config: ServerConfig) -> None:
    srv = await start_server(server_config, proxy_protocol=True, login_rate=2)
    try:
        bad = await proxied(srv.port, encode_v2(("192.0.2.50", 1), DST))
        for _ in range(2):
            assert (await bad.login("alpha", "wrong"))["code"] in ("auth_failed", "blocked")
        assert (await bad.login("beta", "wrong"))["code"] == "rate_limited"
        # Another device behind the same balancer (same socket address) is not limited.
        good = await proxied(srv.port, encode_v2(("192.0.2.51", 1), DST))
        assert (await good.login("gamma", "gammapass"))["type"] == "ok"
        await bad.close()
        await good.close()
    finally:
        await srv.close()


async def test_untrusted_or_malformed_connections_are_closed(server_config: ServerConfig) -> None:
    srv = await start_server(server_config, proxy_protocol=True,
                             trusted_proxies=("192.0.2.0/24",))
    try:
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(encode_v2(("192.0.2.7", 1), DST))
            assert await closed_without_a_word(reader)
            writer.close()
        assert [e for e in logs if e["event"] == "untrusted_proxy"]
    finally:
        await srv.close()
    srv = await start_server(server_config, proxy_protocol=True)
    try:
        with capture_logs() as logs:
            reader, writer = await asyncio.open_connection("127.0.0.1", srv.port)
            writer.write(b"\x00\x00\x00\x1b{\"type\":\"hello\",\"version\":1}")
            assert await closed_without_a_word(reader)
            writer.close()
        bad = [e for e in logs if e["event"] == "proxy_header_invalid"]
        assert bad and "does not start" in bad[0]["error"]
        # A device without a header never reaches the session: nothing is listed.
        assert await srv.state.presence.count() == 0
    finally:
        await srv.close()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="the test's client needs start_tls")
async def test_tls_starts_after_the_header(server_config: ServerConfig, tmp_path: Path) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert_path, key_path = tmp_path / "server.pem", tmp_path / "server.key"
    cert.private_key_pem.write_to_path(str(key_path))
    for i, pem in enumerate(cert.cert_chain_pems):
        pem.write_to_path(str(cert_path), append=i > 0)
    srv = await start_server(server_config, proxy_protocol=True, tls_cert=cert_path,
                             tls_key=key_path)
    try:
        tls = ssl.create_default_context()
        ca.configure_trust(tls)
        dev = await proxied(srv.port, encode_v2(("203.0.113.9", 7), DST), tls=tls)
        assert (await dev.login("alpha", "alphapass"))["type"] == "ok"
        assert (await srv.state.presence.get("alpha")).ip == "203.0.113.9"  # type: ignore[union-attr]
        await dev.close()
    finally:
        await srv.close()


async def test_through_haproxy_the_server_sees_the_device_address(
        server: EdgeServer, tmp_path: Path) -> None:
    admin = await start_admin(server, port=0)
    haproxy = HAProxyEngine(tmp_path / "haproxy", [(server.port, admin.port)])
    try:
        haproxy.start()
        for _ in range(100):  # the first health check marks the node up
            try:
                dev = await asyncio.wait_for(WireDevice.connect(haproxy.port, hello=False), 2)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            break
        await dev.close()
        # A device on another loopback address: HAProxy connects from 127.0.0.1, the
        # header says 127.0.0.5.
        reader, writer = await asyncio.open_connection("127.0.0.1", haproxy.port,
                                                       local_addr=("127.0.0.5", 0))
        dev = WireDevice(reader, writer)
        hello = await dev.call({"type": "hello", "version": 1})
        assert hello["type"] == "hello"
        assert (await dev.login("alpha", "alphapass"))["type"] == "ok"
        entry = await server.state.presence.get("alpha")
        assert entry is not None and entry.ip == "127.0.0.5"
        await dev.close()
    finally:
        haproxy.stop()
        await admin.stop()
