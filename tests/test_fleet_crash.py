"""A fleet node killed (SIGKILL) at any point of an upload: afterwards the file is
either whole, listed and logged once, with exact statistics, or not visible at all.
Real processes: the fleet zipapp on the session's Redis and SeaweedFS (S3); the
upload is large enough to go to S3 in several parts."""

from __future__ import annotations

import asyncio
import json
import random
import secrets
import signal
import sys
import urllib.request
from pathlib import Path
from typing import Any

from edgenet.wire.frames import encode_frame
from tests.conftest import CREDENTIALS, ServerProcess
from tests.engines import BUCKET, S3_KEY, S3_SECRET, RedisEngine, SeaweedEngine
from tests.fleetproc import FLEET_PYZ, wait_for
from tests.wireclient import WireDevice

#: About 20 MiB: three parts of a multipart upload.
LINES = 2_600_000


def start(place: Path, redis: RedisEngine, weed: SeaweedEngine, prefix: str,
          node_id: str) -> tuple[ServerProcess, int]:
    data = place / node_id
    data.mkdir(parents=True, exist_ok=True)
    creds = place / "credentials.txt"
    creds.write_text(CREDENTIALS)
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET, "PATH": ""}
    node = ServerProcess([sys.executable, str(FLEET_PYZ), "server", "0", "3", "--host",
                          "127.0.0.1", "--credentials", str(creds), "--data-dir", str(data),
                          "--log-format", "json", "--admin-port", "0", "--redis", redis.url,
                          "--redis-prefix", prefix, "--node-id", node_id, "--lease", "2",
                          "--files", f"s3://{BUCKET}/{prefix}", "--s3-endpoint",
                          weed.endpoint], data, env=env)
    ready = wait_for(lambda: [e for e in node.read_events() if e.get("event") == "admin_ready"])
    assert ready
    return node, int(ready[0]["port"])


def api(admin: int, path: str) -> Any:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}{path}", timeout=10) as resp:
        return json.loads(resp.read())["data"]


async def upload_until_killed(port: int, body: bytes, node: ServerProcess, delay: float
                              ) -> dict[str, Any] | None:
    """Send the upload; ``delay`` seconds after the body is written (negative: while
    half of it is), SIGKILL the node. The reply, if one came first."""
    dev = await WireDevice.connect(port)
    assert (await dev.login("alpha", "alphapass"))["type"] == "ok"
    frame = encode_frame({"type": "upload", "id": 99, "file_id": 1, "body": len(body)}, body)
    half = len(frame) // 2 if delay < 0 else len(frame)
    dev.writer.write(frame[:half])
    await dev.writer.drain()
    await asyncio.sleep(abs(delay))
    node.proc.send_signal(signal.SIGKILL)
    try:
        reply = await dev.recv(timeout=5)
    except (ConnectionError, OSError, TimeoutError):
        reply = None
    await dev.close()
    return reply


def test_a_node_killed_during_an_upload_leaves_all_or_nothing(
        tmp_path: Path, redis_engine: RedisEngine, seaweed_engine: SeaweedEngine) -> None:
    values = [random.randrange(10000) for _ in range(LINES)]
    body = b"".join(b"%d\n" % v for v in values)
    prefix = f"crash{secrets.token_hex(4)}"
    witness, witness_admin = start(tmp_path, redis_engine, seaweed_engine, prefix, "witness")
    versions: list[float] = []  # every version ever listed, oldest first
    try:
        for round_no, delay in enumerate((-0.05, 0.0, 0.15, 0.4, 1.0)):
            node, _ = start(tmp_path, redis_engine, seaweed_engine, prefix, f"victim{round_no}")
            try:
                reply = asyncio.run(upload_until_killed(node.port, body, node, delay))
            finally:
                node.proc.wait(10)
                node.stop()
            files = api(witness_admin, "/api/v1/files?device=alpha")
            if delay < 0:  # killed while half the body was on its way: nothing to see
                assert files == [] and reply is None
            if reply is not None and reply.get("type") == "ok":
                assert files and files[0]["uploaded_at_epoch"] not in versions, (
                    "acknowledged, then lost")
            if files:  # whole: every sample, every byte
                assert [(f["file_id"], f["samples"], f["size"]) for f in files] == [
                    (1, LINES, len(body))]
                if files[0]["uploaded_at_epoch"] not in versions:
                    versions.append(files[0]["uploaded_at_epoch"])
            # Each version listed was logged exactly once, and nothing else was logged.
            logged = api(witness_admin, "/api/v1/logs/uploads?device=alpha&limit=1000")
            assert sorted(r["time_epoch"] for r in logged) == versions, (logged, versions)
        # Whatever is listed reads back exact, through another node.
        got = asyncio.run(_sum(witness.port))
        if versions:
            assert got.get("result") == str(sum(values)), got
        else:
            assert got.get("code") == "not_found", got
        assert witness.proc.poll() is None
    finally:
        witness.stop()


async def _sum(port: int) -> dict[str, Any]:
    dev = await WireDevice.connect(port)
    try:
        assert (await dev.login("alpha", "alphapass"))["type"] == "ok"
        return await dev.call({"type": "compute", "file_id": 1, "op": "SUM"})
    finally:
        await dev.close()
