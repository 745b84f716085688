"""Start-up reconciliation across the end of daylight saving time, through the built
zipapp in a real ``TZ=Europe/Berlin``: on 25 October 2026 the local hour 02:00-02:59
comes twice (CEST, then CET), so the logs' local times in it are ambiguous. A data
dir whose history runs across the switch must open without a repair, and an
acknowledged re-upload must stay logged once."""

from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from tests.clientproc import LiveClient
from tests.conftest import PYZ, ServerProcess, server_argv

pytestmark = pytest.mark.timeout(60)

BERLIN = "Europe/Berlin"


def berlin(utc_hour: int, minute: int) -> tuple[float, str]:
    """An instant on 25 Oct 2026 (given in UTC) and its text in the logs' format."""
    when = datetime(2026, 10, 25, utc_hour, minute, tzinfo=timezone.utc)
    local = when.astimezone(ZoneInfo(BERLIN))
    return when.timestamp(), f"{local.day:02d} October 2026 {local:%H:%M:%S}"


def start(data: Path, credentials: Path) -> ServerProcess:
    env = {**os.environ, "TZ": BERLIN}
    return ServerProcess(server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials),
        "--data-dir", str(data), "--log-format", "json", "--no-admin"], data, env=env)


def test_a_history_across_the_dst_switch_opens_without_repairs(
        tmp_path: Path, credentials_file: Path) -> None:
    if not Path("/usr/share/zoneinfo", BERLIN).exists():
        pytest.fail("the zoneinfo for Europe/Berlin is missing (Debian's tzdata; .ci/run "
                    "installs it)")
    assert PYZ.exists(), "build/edgenet.pyz is missing: run `make pyz` (make test does)"
    data = tmp_path / "data"
    data.mkdir()
    _, up_cest = berlin(0, 50)           # 02:50 CEST
    _, gone_cest = berlin(0, 55)         # 02:55 CEST
    t_again, again_cet = berlin(1, 5)    # 02:05 CET: 10 minutes later, an earlier text
    assert up_cest.endswith("02:50:00") and again_cet.endswith("02:05:00")
    # alpha-1: uploaded, deleted, uploaded again after the switch (on disk, 2 samples).
    # alpha-2: uploaded before the switch, deleted after it (not on disk).
    uploads = (f"alpha; {up_cest}; 1; 3\n" f"alpha; {up_cest}; 2; 1\n"
               f"alpha; {again_cet}; 1; 2\n")
    deletions = f"alpha; {gone_cest}; 1; 3\n" f"alpha; {again_cet}; 2; 1\n"
    (data / "upload-log.txt").write_text(uploads)
    (data / "deletion-log.txt").write_text(deletions)
    (data / "alpha-1.txt").write_text("5\n6\n")
    os.utime(data / "alpha-1.txt", (t_again, t_again))

    server = start(data, credentials_file)
    try:
        assert [e for e in server.read_events() if e.get("event") == "log_repaired"] == []
        assert (data / "upload-log.txt").read_text() == uploads
        assert (data / "deletion-log.txt").read_text() == deletions
        client = LiveClient(server.port, tmp_path / "alpha", use_pyz=True)
        try:
            client.login("alpha", "alphapass")
            client.send("SCS 1 SUM")
            client.expect("the SUM of file 1 is 11")
            client.send("SCS 2 SUM")
            client.expect("the file does not exist at the server side")
            client.send("EDG 1 4")
            client.expect("data generation done")
            client.send("UED 1")  # acknowledged now: logged once, also after a restart
            client.expect("file alpha-1.txt has been uploaded (4 samples)")
            client.send("OUT")
            client.expect("Bye")
        finally:
            client.close()
    finally:
        server.stop()
    logged = (data / "upload-log.txt").read_text()
    assert logged.startswith(uploads) and logged.count("\n") == 4
    again = start(data, credentials_file)
    try:
        assert [e for e in again.read_events() if e.get("event") == "log_repaired"] == []
    finally:
        again.stop()
    assert (data / "upload-log.txt").read_text() == logged
    assert (data / "deletion-log.txt").read_text() == deletions
