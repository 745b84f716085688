"""Graceful shutdown of a real server process: SIGTERM/SIGINT stop accepting, tell every
device, let an upload in flight finish, abort a stalled one cleanly, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path

import pytest

from edgenet.server.logs import FileRecord
from edgenet.wire.frames import encode_header
from tests.clientproc import LiveClient
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice

pytestmark = pytest.mark.timeout(60)


SHUTDOWN_NOTICE = {"type": "notice", "kind": "shutdown", "message": "the server is shutting down"}


async def connections_refused(port: int, tries: int = 50) -> bool:
    """Whether new connections to ``port`` come to be refused (within ``tries`` tries,
    0.1 s apart). A connection the server still took must get the shutdown notice and
    then the end of the stream; one reset by the kernel before the server took it
    (queued as the listening socket closed) counts as refused."""
    for _ in range(tries):
        try:
            late = await asyncio.wait_for(WireDevice.connect(port, hello=False), 2)
        except ConnectionRefusedError:
            return True
        try:
            first = await late.recv(timeout=5)
        except ConnectionResetError:
            return True
        assert first == SHUTDOWN_NOTICE
        assert await late.recv(timeout=5) is None
        await late.close()
        await asyncio.sleep(0.1)
    return False


def wait_event(server: ServerProcess, name: str, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.get("event") == name for e in server.read_events()):
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_lets_uploads_finish_and_tells_devices(tmp_path: Path, credentials_file: Path,
                                                     sig: signal.Signals) -> None:
    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--no-admin",
        "--shutdown-grace", "2"], data)
    shell = LiveClient(server.port, tmp_path / "alpha")
    body = b"".join(b"%d\n" % i for i in range(200_000))
    try:
        shell.login("alpha", "alphapass")

        async def scenario() -> tuple[dict[str, object], dict[str, object] | None,
                                      dict[str, object] | None, float]:
            beta = await WireDevice.connect(server.port)
            assert (await beta.login("beta", "betapass"))["type"] == "ok"
            gamma = await WireDevice.connect(server.port)
            assert (await gamma.login("gamma", "gammapass"))["type"] == "ok"
            half = len(body) // 2
            beta.writer.write(encode_header({"type": "upload", "id": 50, "file_id": 1},
                                            len(body)) + body[:half])
            gamma.writer.write(encode_header({"type": "upload", "id": 60, "file_id": 2},
                                             len(body)) + body[:half])
            await asyncio.gather(beta.writer.drain(), gamma.writer.drain())
            await asyncio.sleep(0.2)
            t0 = time.monotonic()
            server.proc.send_signal(sig)
            assert await asyncio.to_thread(wait_event, server, "shutdown_requested")
            # New connections are no longer accepted: the port refuses them soon after the
            # signal; one that got in just before is told of the shutdown and closed.
            refused = await connections_refused(server.port)
            # beta finishes its upload within the grace: it is stored and acknowledged.
            beta.writer.write(body[half:])
            await beta.writer.drain()
            reply = await beta.recv(timeout=10)
            notice = await beta.recv(timeout=10)
            # gamma stalls: after the grace its upload is aborted and the connection closed.
            end = await gamma.recv(timeout=15)
            await asyncio.gather(beta.close(), gamma.close())
            assert reply is not None
            assert refused
            return reply, notice, end, t0

        reply, notice, gamma_end, t0 = asyncio.run(scenario())
        assert reply["type"] == "ok" and reply["id"] == 50 and reply["samples"] == 200_000
        assert notice == SHUTDOWN_NOTICE
        # The stalled upload is aborted after the grace, and its device told why.
        assert gamma_end == SHUTDOWN_NOTICE
        assert server.proc.wait(15) == 0
        assert time.monotonic() - t0 < 10  # "within a few seconds" (grace 2 s + a margin)
        shell.expect("the server is shutting down", timeout=10)
        # README: exit status 1 when the server goes away.
        assert shell.proc.wait(10) == 1
        assert "Traceback" not in "\n".join(shell.seen)
        assert shell.proc.stderr is not None and "Traceback" not in shell.proc.stderr.read()
    finally:
        shell.close()
        server.stop()
    assert (data / "beta-1.txt").read_bytes() == body
    assert not (data / "gamma-2.txt").exists()
    assert list(data.glob(".upload-*")) == []
    records = [FileRecord.parse(x) for x in (data / "upload-log.txt").read_text().splitlines()]
    assert [(r.device, r.file_id) for r in records] == [("beta", 1)]
    assert (data / "edge-device-log.txt").read_text() == ""
    text = server.stderr_path.read_text()
    assert '"server_stopped"' in text and "Traceback" not in text
