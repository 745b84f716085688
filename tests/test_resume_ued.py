"""Resumable UED (protocol version 3) through real processes: a 50 MB upload cut by a
relay that closes the link, by killing the client, by kill -9 of the server; resumed,
stored byte-identical, logged once, with fewer bytes sent the second time. A file
changed between the tries starts over; the resume budget; expired partials."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import ServerProcess, server_argv
from tests.filedata import sha
from tests.tcprelay import TcpRelay, sample_file

pytestmark = pytest.mark.timeout(300)

SIZE = 50_000_000
PARTIALS = "partial-uploads"


def start_server(data: Path, credentials: Path, *extra: str) -> ServerProcess:
    data.mkdir(exist_ok=True)
    return ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials),
        "--data-dir", str(data), "--log-format", "json", "--no-admin", "--udp-port", "0",
        *extra], data)


async def device(port: int, data_dir: Path, *opts: str, name: str = "alpha",
                 run: str = "UED 5") -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EDGENET_")}
    env["EDGENET_PASSWORD"] = f"{name}pass"
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "edgenet", "client", "127.0.0.1", str(port), "0", "--data-dir",
        str(data_dir), "--name", name, "--run", run, *opts, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env)


async def finish(proc: asyncio.subprocess.Process, timeout: float = 120
                 ) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def checkpoints(data: Path) -> list[dict[str, object]]:
    found = []
    for path in (data / PARTIALS).glob("*.json"):
        try:
            found.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue  # being replaced right now
    return found


async def until(predicate: Callable[[], object], seconds: float = 60, what: str = "",
                seen: Callable[[], object] | None = None) -> None:
    """Wait (bounded) for ``predicate()`` to be true; the failure says what was awaited
    and what ``seen()`` showed last."""
    deadline = time.monotonic() + seconds
    while not predicate():
        if time.monotonic() > deadline:
            last = seen() if seen is not None else None
            raise AssertionError(f"not within {seconds:g} s: {what or predicate}; saw {last!r}")
        await asyncio.sleep(0.05)


def events_of(server: ServerProcess, name: str) -> list[dict[str, object]]:
    return [e for e in server.read_events() if e.get("event") == name]


def upload_lines(data: Path, name: str, file_id: int) -> list[str]:
    log = data / "upload-log.txt"
    lines = log.read_text().splitlines() if log.exists() else []
    return [x for x in lines if x.startswith(f"{name}; ") and x.split("; ")[2] == str(file_id)]


def resumed_at(out: str) -> int:
    m = re.search(r"file alpha-5\.txt has been uploaded \((\d+) samples, resumed at (\d+) %\)",
                  out)
    assert m, out
    return int(m.group(2))


def samples_of(path: Path) -> int:
    return path.read_bytes().count(b"\n")


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return sample_file(tmp_path / "dev" / "alpha-5.txt", SIZE)


async def test_a_link_cut_mid_upload_is_resumed_by_the_retry(
        tmp_path: Path, credentials_file: Path, src: Path) -> None:
    data = tmp_path / "srv"
    server = start_server(data, credentials_file)
    relay = await TcpRelay(server.port, cut_after=30_000_000).start()
    try:
        code, out, err = await finish(await device(relay.port, src.parent))
        assert code == 0, out + err
        pct = resumed_at(out)
        assert 50 <= pct <= 60, out  # the cut came after 30 MB of 50 (less the frames)
        assert f"({samples_of(src)} samples, resumed at {pct} %)" in out
        assert "trying again" in out  # the runner said it retried
        assert sha(data / "alpha-5.txt") == sha(src)
        assert len(upload_lines(data, "alpha", 5)) == 1
        assert len(relay.sent) == 2 and relay.sent[1] < SIZE - 25_000_000, relay.sent
        assert checkpoints(data) == [] and list((data / PARTIALS).iterdir()) == []
    finally:
        await relay.close()
        server.stop()


async def test_a_killed_client_resumes_when_run_again(
        tmp_path: Path, credentials_file: Path, src: Path) -> None:
    data = tmp_path / "srv"
    server = start_server(data, credentials_file)
    relay = await TcpRelay(server.port, hold_after=20_000_000).start()
    try:
        proc = await device(relay.port, src.parent)
        await asyncio.wait_for(relay.held.wait(), 60)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
        relay.drop_all()  # the dead client's connection ends
        await until(lambda: any(c["offset"] >= 19_000_000 for c in checkpoints(data)))
        assert not (data / "alpha-5.txt").exists()
        assert upload_lines(data, "alpha", 5) == []  # a partial is never in the log
        code, out, err = await finish(await device(relay.port, src.parent))
        assert code == 0, out + err
        assert 35 <= resumed_at(out) <= 41, out
        assert sha(data / "alpha-5.txt") == sha(src)
        assert len(upload_lines(data, "alpha", 5)) == 1
        assert relay.sent[1] < SIZE - 19_000_000, relay.sent
    finally:
        await relay.close()
        server.stop()


async def test_a_server_killed_and_restarted_mid_upload_is_resumed(
        tmp_path: Path, credentials_file: Path, src: Path) -> None:
    data = tmp_path / "srv"
    server = start_server(data, credentials_file)
    relay = await TcpRelay(server.port, hold_after=30_000_000).start()
    try:
        proc = await device(relay.port, src.parent, "--upload-retries", "20")
        await asyncio.wait_for(relay.held.wait(), 60)
        # Checkpoints come every 8 MiB: the 24 MiB one is on disk before the kill.
        await until(lambda: any(c["offset"] >= 24 * 2**20 for c in checkpoints(data)),
                    what="the 24 MiB checkpoint", seen=lambda: checkpoints(data))
        server.proc.send_signal(signal.SIGKILL)
        server.proc.wait(30)
        server.stop()
        server = start_server(data, credentials_file)
        relay.upstream_port = server.port  # the device comes back through the relay
        swept = [e for e in server.read_events() if e.get("event") == "partials_swept"]
        assert swept and swept[0]["kept"] == 1 and swept[0]["expired"] == 0, swept
        code, out, err = await finish(proc)
        assert code == 0, out + err
        assert 45 <= resumed_at(out) <= 60, out
        assert sha(data / "alpha-5.txt") == sha(src)
        assert len(upload_lines(data, "alpha", 5)) == 1
        # The try after the restart sent what the checkpoint lacked, not the whole file.
        assert relay.sent[-1] < SIZE - 24 * 2**20 + 1_000_000, relay.sent
    finally:
        await relay.close()
        server.stop()


async def test_a_server_stopped_by_sigterm_mid_upload_keeps_what_it_received(
        tmp_path: Path, credentials_file: Path, src: Path) -> None:
    """SIGTERM with an upload streaming: after the grace the upload is cut, and its last
    checkpoint (all that was received, here less than one periodic checkpoint's worth)
    is written before the server exits; after a restart the device resumes from it."""
    data = tmp_path / "srv"
    server = start_server(data, credentials_file, "--shutdown-grace", "0.5")
    held = 5_000_000  # under the first periodic checkpoint (8 MiB): only the cut's is kept
    relay = await TcpRelay(server.port, hold_after=held).start()
    try:
        proc = await device(relay.port, src.parent, "--upload-retries", "20")
        await asyncio.wait_for(relay.held.wait(), 60)

        def received() -> int:
            return sum(p.stat().st_size for p in (data / PARTIALS).glob("*.part"))
        # The server has read all the relay let through (less the frames' headers).
        await until(lambda: received() >= held - 100_000, what="the body written to the part",
                    seen=received)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(60) == 0
        kept = checkpoints(data)
        assert len(kept) == 1 and int(kept[0]["offset"]) >= held - 100_000, kept  # type: ignore[call-overload]
        server.stop()
        server = start_server(data, credentials_file)
        relay.upstream_port = server.port  # the device comes back through the relay
        swept = events_of(server, "partials_swept")
        assert swept and swept[0]["kept"] == 1, swept
        code, out, err = await finish(proc)
        assert code == 0, out + err
        assert 9 <= resumed_at(out) <= 10, out  # 5 MB of 50
        assert sha(data / "alpha-5.txt") == sha(src)
        assert len(upload_lines(data, "alpha", 5)) == 1
        assert relay.sent[-1] < SIZE - held + 1_000_000, relay.sent
    finally:
        await relay.close()
        server.stop()


async def test_a_file_changed_between_the_tries_starts_over(
        tmp_path: Path, credentials_file: Path, src: Path) -> None:
    data = tmp_path / "srv"
    server = start_server(data, credentials_file)
    relay = await TcpRelay(server.port, cut_after=20_000_000).start()
    try:
        code, out, err = await finish(await device(relay.port, src.parent,
                                                   "--upload-retries", "0"))
        assert code == 4, out + err  # cut, and no retry allowed
        await until(lambda: bool(checkpoints(data)))  # the server's last checkpoint
        assert checkpoints(data)[0]["offset"] > 19_000_000
        changed = sample_file(src, SIZE, seed=2)  # same name and size, other samples
        code, out, err = await finish(await device(server.port, src.parent))
        assert code == 0, out + err
        assert f"file alpha-5.txt has been uploaded ({samples_of(changed)} samples)" in out
        assert "resumed" not in out
        assert sha(data / "alpha-5.txt") == sha(changed)
        assert len(upload_lines(data, "alpha", 5)) == 1
        assert checkpoints(data) == []
    finally:
        await relay.close()
        server.stop()


async def test_partials_past_the_budget_are_refused_and_nothing_else_is_lost(
        tmp_path: Path, credentials_file: Path) -> None:
    data = tmp_path / "srv"
    server = start_server(data, credentials_file, "--resume-budget", "8MiB",
                          "--resume-total-budget", "12MiB")
    small = sample_file(tmp_path / "beta" / "beta-1.txt", 6_000_000)
    big = sample_file(tmp_path / "dev" / "alpha-5.txt", 7_000_000, seed=3)
    try:
        # beta's cut upload is kept (6 MB, within 8 MiB per device and 12 MiB in all).
        relay = await TcpRelay(server.port, cut_after=3_000_000).start()
        code, out, err = await finish(await device(relay.port, small.parent, "--upload-retries",
                                                   "0", name="beta", run="UED 1"))
        await relay.close()
        assert code == 4, out + err
        await until(lambda: len(checkpoints(data)) == 1)
        kept = checkpoints(data)[0]
        # alpha's 7 MB would take the total past 12 MiB: refused, said in one line.
        relay = await TcpRelay(server.port, cut_after=3_000_000).start()
        code, out, err = await finish(await device(relay.port, big.parent,
                                                   "--upload-retries", "0"))
        await relay.close()
        assert code == 4, out + err
        refusal = "the server keeps partial uploads of at most 12.0 MiB in all"
        assert refusal in err, err
        assert [line for line in err.splitlines() if refusal in line][0].count("\n") == 0
        def refused() -> list[dict[str, object]]:
            return [e for e in server.read_events() if e.get("event") == "resume_refused"]
        await until(refused, 10, "the resume_refused event")  # written a turn after the reply
        assert refused()[0]["device"] == "alpha"
        assert checkpoints(data) == [kept]  # beta's partial is untouched
        # With retries, alpha's upload still goes through (from 0 each time).
        relay = await TcpRelay(server.port, cut_after=3_000_000).start()
        code, out, err = await finish(await device(relay.port, big.parent))
        await relay.close()
        assert code == 0, out + err
        assert "resumed at" not in out and sha(data / "alpha-5.txt") == sha(big)
        # And beta resumes its own.
        code, out, err = await finish(await device(server.port, small.parent, name="beta",
                                                   run="UED 1"))
        assert code == 0 and "resumed at" in out, out + err
        assert sha(data / "beta-1.txt") == sha(small)
    finally:
        server.stop()


async def test_expired_partials_are_removed_at_start_up_and_on_a_timer(
        tmp_path: Path, credentials_file: Path, src: Path) -> None:
    data = tmp_path / "srv"
    # 0.0005 hours: 1.8 s. The partial may be gone before a loaded box's poll sees it,
    # so the running server's part is followed through its events.
    server = start_server(data, credentials_file, "--resume-hours", "0.0005")
    relay = await TcpRelay(server.port, cut_after=10_000_000).start()
    try:
        code, out, err = await finish(await device(relay.port, src.parent,
                                                   "--upload-retries", "0"))
        assert code == 4, out + err
        await until(lambda: events_of(server, "partial_kept"), what="the cut's partial kept")
        # The running server removes it once it is older than --resume-hours.
        await until(lambda: events_of(server, "partial_expired"), what="partial_expired")
        await until(lambda: list((data / PARTIALS).iterdir()) == [],
                    what="the expired partial's files removed",
                    seen=lambda: sorted(p.name for p in (data / PARTIALS).iterdir()))
        await relay.close()
        server.stop()
        # Again, with the server stopped meanwhile: start-up removes it. This partial is
        # left by a server that keeps partials for a day (so it is still there when the
        # server stops), then the server starts again keeping them for 1.8 s.
        server = start_server(data, credentials_file)
        relay = await TcpRelay(server.port, cut_after=10_000_000).start()
        code, out, err = await finish(await device(relay.port, src.parent,
                                                   "--upload-retries", "0"))
        assert code == 4, out + err
        await until(lambda: len(checkpoints(data)) == 1, what="one checkpoint",
                    seen=lambda: checkpoints(data))
        server.stop()
        kept = checkpoints(data)
        assert len(kept) == 1, kept
        written = float(kept[0]["updated"])  # type: ignore[arg-type]
        await until(lambda: time.time() - written > 0.0005 * 3600 + 0.5,
                    what="the checkpoint older than 1.8 s")
        server = start_server(data, credentials_file, "--resume-hours", "0.0005")
        swept = events_of(server, "partials_swept")
        assert swept and swept[0]["expired"] == 1 and swept[0]["kept"] == 0, swept
        assert list((data / PARTIALS).iterdir()) == []
    finally:
        await relay.close()
        server.stop()


async def test_versions_2_and_3_still_work_together_starting_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgenet.config import ServerConfig
    from edgenet.server import session as server_session
    from edgenet.server.app import EdgeServer
    from edgenet.server.auth import Credentials
    from tests.conftest import CREDENTIALS
    from tests.wireclient import WireDevice

    src = sample_file(tmp_path / "dev" / "alpha-5.txt", 3_000_000)
    # A version-2 server: the version-3 client uploads as before (no question, no hash).
    monkeypatch.setattr(server_session, "negotiate", lambda hello: 2)
    server = EdgeServer(ServerConfig(port=0, max_attempts=3, host="127.0.0.1", udp_port=0,
                                     data_dir=tmp_path / "srv"), Credentials.parse(CREDENTIALS))
    await server.start()
    try:
        relay = await TcpRelay(server.port, cut_after=1_000_000).start()
        code, out, err = await finish(await device(relay.port, src.parent))
        await relay.close()
        assert code == 0, out + err  # cut, retried from 0
        assert "resumed at" not in out and sha(tmp_path / "srv" / "alpha-5.txt") == sha(src)
        assert relay.sent[1] > 3_000_000  # the whole file again
        assert not (tmp_path / "srv" / PARTIALS).exists()
    finally:
        await server.close()
    monkeypatch.undo()
    # A version-2 device and a version-3 server: a plain upload, as version 2 had it.
    server = EdgeServer(ServerConfig(port=0, max_attempts=3, host="127.0.0.1", udp_port=0,
                                     data_dir=tmp_path / "srv3"), Credentials.parse(CREDENTIALS))
    await server.start()
    try:
        old = await WireDevice.connect(server.port, hello=False)
        hello = await old.call({"type": "hello", "version": 1, "versions": [1, 2]})
        assert hello["version"] == 2
        assert (await old.login("alpha", "alphapass"))["type"] == "ok"
        reply = await old.call({"type": "upload", "file_id": 7}, b"1\n2\n")
        assert reply == {"type": "ok", "id": reply["id"], "file_id": 7, "samples": 2,
                         "bytes": 4}
        await old.close()
    finally:
        await server.close()
