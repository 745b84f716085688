"""edge-device-log.txt under bursts: each device's line formatted once, rewrites at most
once an interval (the first change after a quiet interval at once), the file exact
after a burst of logins and logouts and at shutdown (a real server process)."""

from __future__ import annotations

import asyncio
import math
import signal
import time
from pathlib import Path

import pytest

from edgenet.server import devicelog
from edgenet.server.devicelog import DeviceLines, DeviceLogWriter
from edgenet.server.logs import format_timestamp, parse_device_line
from edgenet.server.presence import ActiveDevices
from tests.clientproc import wait_until
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice


def expected_text(devices: list[tuple[str, float, int]]) -> str:
    return "".join(f"{seq}; {format_timestamp(since)}; {name}; 127.0.0.1; {port}\n"
                   for seq, (name, since, port) in enumerate(devices, 1))


async def test_each_line_is_formatted_once_and_renumbered(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []

    def counting(t: float) -> str:
        calls.append(t)
        return format_timestamp(t)

    monkeypatch.setattr(devicelog, "format_timestamp", counting)
    presence = ActiveDevices()
    joined = [await presence.join(f"d{i}", "127.0.0.1", 7000 + i, 1_764_000_000.0 + i)
              for i in range(5)]
    lines = DeviceLines()
    for _ in range(3):
        first = lines.render(await presence.devices())
    assert len(calls) == 5  # once per device, not once per rewrite
    assert first == expected_text([(f"d{i}", 1_764_000_000.0 + i, 7000 + i) for i in range(5)])
    await presence.leave("d1", joined[1].device.session_id)
    after = lines.render(await presence.devices())
    assert after == expected_text([(f"d{i}", 1_764_000_000.0 + i, 7000 + i) for i in (0, 2, 3, 4)])
    assert [parse_device_line(x)[0] for x in after.splitlines()] == [1, 2, 3, 4]
    assert len(calls) == 5


async def test_a_burst_of_changes_costs_few_rewrites(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    real = devicelog.write_atomically

    def counting(path: Path, text: str, fsync: bool = False) -> None:
        writes.append(text)
        real(path, text, fsync)

    monkeypatch.setattr(devicelog, "write_atomically", counting)
    presence = ActiveDevices()
    path = tmp_path / "edge-device-log.txt"
    writer = DeviceLogWriter(path, presence, interval=0.3)
    await presence.join("first", "127.0.0.1", 6999, 1_764_000_000.0)
    # The first change after a quiet interval: the future resolves once the file has it.
    await asyncio.wait_for(writer.request(), 5)
    assert path.read_text() == expected_text([("first", 1_764_000_000.0, 6999)])
    started = time.monotonic()
    for i in range(200):
        await presence.join(f"d{i}", "127.0.0.1", 7000 + i, 1_764_000_001.0)
        fut = writer.request()
        assert fut.done()  # within the interval nobody waits for the file
        await asyncio.sleep(0)
    assert writer.pending
    await asyncio.wait_for(writer.written(), 5)
    elapsed = time.monotonic() - started
    assert not writer.pending
    assert path.read_text() == expected_text(
        [("first", 1_764_000_000.0, 6999)] + [(f"d{i}", 1_764_000_001.0, 7000 + i)
                                               for i in range(200)])
    # One write for the first change, then at most one per interval (not 200).
    assert len(writes) <= 1 + math.ceil(elapsed / 0.3) + 1, (len(writes), elapsed)
    writer.close()


@pytest.fixture
def many_server(tmp_path: Path) -> ServerProcess:
    creds = tmp_path / "credentials.txt"
    creds.write_text("".join(f"dev{i} pw{i}\n" for i in range(300)))
    data = tmp_path / "server"
    data.mkdir()
    return ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--no-admin", "--udp-port", "0"], data)


def device_lines(data: Path) -> list[tuple[int, str, int]]:
    return [(seq, name, port) for seq, _, name, _, port in
            (parse_device_line(x) for x in (data / "edge-device-log.txt").read_text().splitlines())]


async def test_file_is_exact_after_a_burst_and_at_shutdown(many_server: ServerProcess) -> None:
    server = many_server
    try:
        async def login(i: int) -> WireDevice:
            dev = await WireDevice.connect(server.port)
            assert (await dev.login(f"dev{i}", f"pw{i}", 10000 + i))["type"] == "ok"
            return dev

        devices: dict[int, WireDevice] = {}
        for start in range(0, 300, 100):  # in login order, batch by batch
            batch = await asyncio.gather(*(login(i) for i in range(start, start + 100)))
            devices.update(zip(range(start, start + 100), batch))
        # A burst of leavings: a third log out, a third drop the connection.
        for i in range(0, 300, 3):
            assert (await devices[i].call({"type": "logout"}))["type"] == "ok"
            await devices.pop(i).close()
        for i in range(1, 300, 3):
            devices.pop(i).writer.transport.abort()
        # The logins of a batch run at once, so their order on the server (the order of
        # the file) need not be that of their numbers: the file must list exactly those
        # who stay, numbered 1..N, in the order they logged in (their timestamps).
        want = {(f"dev{i}", 10000 + i) for i in devices}

        def exact() -> bool:
            lines = [parse_device_line(x) for x in
                     (server.data_dir / "edge-device-log.txt").read_text().splitlines()]
            return ({(name, port) for _, _, name, _, port in lines} == want
                    and [seq for seq, *_ in lines] == list(range(1, len(want) + 1))
                    and [ts for _, ts, *_ in lines] == sorted(ts for _, ts, *_ in lines))

        assert await asyncio.to_thread(wait_until, exact, 10.0), \
            f"after 10 s the device log lists {len(device_lines(server.data_dir))} devices, " \
            f"{len(want)} expected; not expected: " \
            f"{sorted({(n, p) for _, n, p in device_lines(server.data_dir)} - want)[:5]}, " \
            f"missing: {sorted(want - {(n, p) for _, n, p in device_lines(server.data_dir)})[:5]}"
        # Logins just before a shutdown (within the interval): the file is exact after it.
        for i in range(0, 30, 3):
            devices[i] = await login(i)
        assert device_lines(server.data_dir) != []
        server.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(server.proc.wait, 20) == 0
        assert (server.data_dir / "edge-device-log.txt").read_text() == ""
        events = [e["event"] for e in server.read_events()]
        assert events.count("login") == 310 and "device_log_write_failed" not in events
    finally:
        for dev in devices.values():
            await dev.close()
        server.stop()
