"""Crash consistency: kill -9 the server in the middle of uploads and deletes, restart
it, and check what was acknowledged; and the start-up reconciliation of the logs with
the files, for the crash windows a kill cannot hit on purpose."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from edgenet.config import ServerConfig
from edgenet.server.logs import FileRecord, format_timestamp
from edgenet.server.store import DataDirStore
from tests.conftest import ServerProcess, server_argv, start_server
from tests.wireclient import WireDevice

pytestmark = pytest.mark.timeout(120)


def samples(rng: random.Random, n: int) -> bytes:
    return b"".join(b"%d\n" % rng.randint(-9999, 9999) for _ in range(n))


class Ledger:
    """What the server acknowledged, as seen by the devices."""

    def __init__(self) -> None:
        self.uploaded: dict[tuple[str, int], bytes] = {}
        self.deleted: set[tuple[str, int]] = set()
        self.sent: dict[tuple[str, int], bytes] = {}


async def uploader(port: int, name: str, first_id: int, rng: random.Random, ledger: Ledger,
                   size: int, delete_every: int) -> None:
    try:
        dev = await WireDevice.connect(port)
        assert (await dev.login(name, f"{name}pass"))["type"] == "ok"
        file_id = first_id
        while True:
            body = samples(rng, size)
            ledger.sent[(name, file_id)] = body
            r = await dev.call({"type": "upload", "file_id": file_id}, body)
            assert r["type"] == "ok", r
            ledger.uploaded[(name, file_id)] = body
            if delete_every and file_id % delete_every == 0:
                victim = (name, rng.randint(first_id, file_id))
                if victim in ledger.uploaded and victim not in ledger.deleted:
                    r = await dev.call({"type": "delete", "file_id": victim[1]})
                    if r["type"] == "ok":
                        ledger.deleted.add(victim)
            file_id += 1
    except (AssertionError, ConnectionError, OSError, asyncio.TimeoutError,
            asyncio.IncompleteReadError):
        return  # the server was killed


async def stalled_upload(port: int, name: str, file_id: int) -> None:
    """Announce an upload, send half of it and wait: the kill always finds this one
    mid-upload (its temporary file on disk), whatever the timing of the others."""
    try:
        dev = await WireDevice.connect(port)
        assert (await dev.login(name, f"{name}pass"))["type"] == "ok"
        body = b"7\n" * 50_000
        from edgenet.wire.frames import encode_header

        dev.writer.write(encode_header({"type": "upload", "id": 99, "file_id": file_id},
                                       len(body)) + body[: len(body) // 2])
        await dev.writer.drain()
        await dev.recv(timeout=30)  # the kill ends this: EOF, or a reset
    except (AssertionError, ConnectionError, OSError, asyncio.TimeoutError,
            asyncio.IncompleteReadError):
        return


def lines_of(path: Path) -> list[FileRecord]:
    if not path.exists():
        return []
    text = path.read_text()
    assert text == "" or text.endswith("\n")
    return [FileRecord.parse(line) for line in text.splitlines()]  # every line parses


def start(data: Path, credentials: Path) -> ServerProcess:
    return ServerProcess(server_argv() + [
        "server", "0", "5", "--host", "127.0.0.1", "--credentials", str(credentials),
        "--data-dir", str(data), "--log-format", "json", "--no-admin"], data)


def test_kill_9_mid_upload_and_mid_delete(tmp_path: Path, credentials_file: Path) -> None:
    data = tmp_path / "server"
    data.mkdir()
    ledger = Ledger()
    rng = random.Random(5)
    before_uploads: list[FileRecord] = []
    leftovers = 0  # half uploads the kills left behind: proof that a kill hit mid-upload
    for round_no in range(8):
        if round_no >= 3 and leftovers:
            break
        server = start(data, credentials_file)
        # A restart starts with nobody connected, and keeps the history.
        assert (data / "edge-device-log.txt").read_text() == ""
        assert lines_of(data / "upload-log.txt")[: len(before_uploads)] == before_uploads

        async def work(port: int = server.port, pid: int = server.proc.pid,
                       r: int = round_no) -> None:
            loop = asyncio.get_running_loop()
            loop.call_later(0.4 + rng.random() * 0.8, os.kill, pid, signal.SIGKILL)
            await asyncio.gather(
                uploader(port, "alpha", 1000 * r + 1, random.Random(r), ledger, 60_000, 0),
                uploader(port, "beta", 1000 * r + 1, random.Random(r + 50), ledger, 300, 2),
                stalled_upload(port, "gamma", 1000 * r + 1))

        asyncio.run(asyncio.wait_for(work(), 40))
        server.proc.wait(10)
        assert server.proc.returncode == -signal.SIGKILL
        server.stop()
        leftovers += len(list(data.glob(".upload-*")))
        before_uploads = lines_of(data / "upload-log.txt")
    server = start(data, credentials_file)
    try:
        assert (data / "edge-device-log.txt").read_text() == ""
        assert leftovers > 0
        assert list(data.glob(".upload-*")) == []  # leftovers cleaned at start-up
        uploads = lines_of(data / "upload-log.txt")
        deletions = lines_of(data / "deletion-log.txt")
        up_count = Counter((r.device, r.file_id) for r in uploads)
        del_count = Counter((r.device, r.file_id) for r in deletions)
        assert ledger.uploaded and ledger.deleted  # the test did both before each kill
        for key, body in ledger.uploaded.items():
            assert up_count[key] == 1, key  # acknowledged: logged exactly once
            path = data / f"{key[0]}-{key[1]}.txt"
            if key in ledger.deleted:
                assert not path.exists() and del_count[key] == 1, key
            elif del_count[key] == 0:
                assert path.read_bytes() == body, key  # intact
        # No half file under a final name: every stored file is one whole upload, logged.
        for path in data.glob("*-*.txt"):
            if path.name.endswith("-log.txt"):
                continue
            name, _, fid = path.stem.rpartition("-")
            key = (name, int(fid))
            assert path.read_bytes() == ledger.sent[key], path.name
            assert up_count[key] == 1 and del_count[key] == 0, key
        assert server.proc.poll() is None
    finally:
        server.stop()
    assert server.proc.returncode == 0


# -- reconciliation of the crash windows -----------------------------------------------------


def write_log(path: Path, *records: FileRecord) -> None:
    with path.open("a") as fh:
        for r in records:
            fh.write(r.line())


def test_reconcile_appends_what_a_crash_left_out(tmp_path: Path) -> None:
    data = tmp_path / "d"
    data.mkdir()
    t0 = 1_700_000_000.0
    # 1. Renamed into place, then killed before the upload line (never acknowledged).
    (data / "alpha-1.txt").write_bytes(b"1\n2\n3\n")
    # 2. Logged upload, unlinked by a delete, killed before the deletion line.
    write_log(data / "upload-log.txt", FileRecord("beta", t0, 2, 4))
    # 3. Consistent history: uploaded, deleted, uploaded again (a file, last line upload).
    write_log(data / "upload-log.txt", FileRecord("gamma", t0, 3, 1))
    write_log(data / "deletion-log.txt", FileRecord("gamma", t0 + 5, 3, 1))
    write_log(data / "upload-log.txt", FileRecord("gamma", t0 + 9, 3, 2))
    (data / "gamma-3.txt").write_bytes(b"5\n6\n")
    os.utime(data / "gamma-3.txt", (t0 + 9, t0 + 9))
    # 4. Re-uploaded after a deletion, killed before the new upload line.
    write_log(data / "upload-log.txt", FileRecord("delta", t0, 4, 1))
    write_log(data / "deletion-log.txt", FileRecord("delta", t0 + 5, 4, 1))
    (data / "delta-4.txt").write_bytes(b"7\n")
    os.utime(data / "delta-4.txt", (t0 + 1, t0 + 1))  # mtime earlier than the deletion line
    # 5. A torn last line (power loss mid-write).
    with (data / "deletion-log.txt").open("a") as fh:
        fh.write("gamma; 01 Jan")
    store = DataDirStore.open(data, time.time())
    repaired = {(r.get("device"), r.get("file_id"), r["log"]) for r in store.repairs}
    assert repaired == {("alpha", 1, "upload-log.txt"), ("beta", 2, "deletion-log.txt"),
                        ("delta", 4, "upload-log.txt"), (None, None, "deletion-log.txt")}
    uploads = lines_of(data / "upload-log.txt")
    deletions = lines_of(data / "deletion-log.txt")
    assert (uploads[-2].device, uploads[-2].file_id, uploads[-2].samples) == ("alpha", 1, 3)
    assert (uploads[-1].device, uploads[-1].samples) == ("delta", 1)
    assert uploads[-1].time >= t0 + 5  # never before the deletion it follows
    assert (deletions[-1].device, deletions[-1].file_id, deletions[-1].samples) == ("beta", 2, 4)
    # Idempotent: a second start-up finds nothing to repair.
    again = DataDirStore.open(data, time.time())
    assert again.repairs == []
    assert lines_of(data / "upload-log.txt") == uploads


async def test_repairs_are_logged_at_start(server_config: ServerConfig) -> None:
    data = server_config.data_dir
    data.mkdir(parents=True)
    (data / "alpha-1.txt").write_bytes(b"1\n")
    with capture_logs() as logs:
        server = await start_server(server_config)
        await server.close()
    events = [e for e in logs if e["event"] == "log_repaired"]
    assert len(events) == 1 and events[0]["device"] == "alpha"
    assert events[0]["log_level"] == "warning"
    assert format_timestamp(0)  # the module's formatter is the one used for the line
