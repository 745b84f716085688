"""Storage faults through the built zipapp, with real clients: a full disk (a real
8 MiB tmpfs as the data dir) during a streamed upload, for a tiny upload and at
login; and the data dir deleted while the server runs. Each fault is one clear
error for the request it hits; the device stays connected, nothing half-written
stays behind, and the server says what is on disk."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.clientproc import LiveClient, wait_until
from tests.conftest import PYZ, ServerProcess, server_argv
from tests.faultdisk import fill, small_tmpfs
from tests.test_admin_support import http_json

pytestmark = pytest.mark.timeout(120)


class PyzServer(ServerProcess):
    """The built zipapp as a server process, with its admin API on an OS-chosen port."""

    def __init__(self, data: Path, credentials: Path, *extra: str) -> None:
        super().__init__(server_argv(use_pyz=True) + [
            "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials),
            "--data-dir", str(data), "--log-format", "json", "--admin-host", "127.0.0.1",
            "--admin-port", "0", *extra], data)
        admin = [e for e in self.events if e.get("event") == "admin_ready"]
        assert admin, self.events
        self.admin = f"http://127.0.0.1:{admin[0]['port']}"

    def health(self) -> tuple[int, Any]:
        return http_json(self.admin + "/healthz")

    def named(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.read_events() if e.get("event") == event]


@pytest.fixture
def pyz() -> None:
    if not PYZ.exists():
        pytest.fail("build/edgenet.pyz is missing: run `make pyz` (make test does)")


def leftovers(data: Path) -> list[str]:
    return sorted(p.name for p in data.iterdir() if p.name.startswith("."))


def device_log_names(data: Path) -> list[str]:
    path = data / "edge-device-log.txt"
    return [line.split("; ")[2] for line in path.read_text().splitlines()] if path.exists() \
        else []


@pytest.fixture
def full_disk_server(tmp_path: Path, credentials_file: Path, pyz: None
                     ) -> Iterator[tuple[PyzServer, Path]]:
    with small_tmpfs("8m") as mount:
        data = mount / "data"
        data.mkdir()
        server = PyzServer(data, credentials_file)
        try:
            yield server, mount
        finally:
            server.stop()


def logged_in(server: PyzServer, tmp_path: Path, name: str) -> LiveClient:
    client = LiveClient(server.port, tmp_path / name, use_pyz=True)
    client.login(name, f"{name}pass")
    return client


def test_a_disk_that_fills_up_during_a_streamed_upload_fails_that_upload_only(
        full_disk_server: tuple[PyzServer, Path], tmp_path: Path) -> None:
    server, mount = full_disk_server
    data = server.data_dir
    alpha = logged_in(server, tmp_path, "alpha")
    try:
        alpha.send("EDG 1 400000")  # about 2 MB of samples
        alpha.expect("data generation done")
        filler = fill(mount, leave=1 << 20)  # 1 MiB left: the body does not fit
        alpha.send("UED 1")
        line = alpha.expect("could not store the file")
        assert line.endswith("No space left on device")
        assert leftovers(data) == []  # the temporary file is gone
        # Events are written at the end of the loop's turn, after the reply went out.
        assert wait_until(lambda: bool(server.named("storage_error")), 5)
        failed = server.named("storage_error")
        assert failed and failed[0]["device"] == "alpha" and failed[0]["command"] == "UED"
        alpha.send("SCS 1 SUM")
        alpha.expect("the file does not exist at the server side")  # nothing stored
        filler.unlink()
        alpha.send("UED 1")  # the same session, once there is room
        alpha.expect("file alpha-1.txt has been uploaded (400000 samples)")
        alpha.send("OUT")
        alpha.expect("Bye")
        assert not server.named("disconnect")
        assert (data / "upload-log.txt").read_text().count("; 1; 400000\n") == 1
    finally:
        alpha.close()


def test_a_tiny_upload_on_a_full_disk_leaves_no_temporary_file(
        full_disk_server: tuple[PyzServer, Path], tmp_path: Path) -> None:
    server, mount = full_disk_server
    alpha = logged_in(server, tmp_path, "alpha")
    try:
        alpha.send("EDG 2 10")
        alpha.expect("data generation done")
        fill(mount)  # not a byte left
        alpha.send("UED 2")
        assert alpha.expect("could not store the file").endswith("No space left on device")
        assert leftovers(server.data_dir) == []
        alpha.send("SCS 2 SUM")
        alpha.expect("the file does not exist at the server side")
    finally:
        alpha.close()


def test_a_login_on_a_full_disk_is_served_and_the_device_log_catches_up(
        full_disk_server: tuple[PyzServer, Path], tmp_path: Path) -> None:
    server, mount = full_disk_server
    data = server.data_dir
    alpha = logged_in(server, tmp_path, "alpha")
    beta = None
    try:
        assert wait_until(lambda: device_log_names(data) == ["alpha"], 5)
        filler = fill(mount)
        beta = logged_in(server, tmp_path, "beta")  # served; the log is behind, and says so
        assert wait_until(lambda: bool(server.named("device_log_write_failed")), 5)
        assert device_log_names(data) == ["alpha"]
        assert leftovers(data) == []
        status, body = server.health()
        assert status == 200 and body["status"] == "degraded", body
        assert [p["code"] for p in body["problems"]] == ["device_log_stale"]
        filler.unlink()  # space is back: the log catches up by itself
        assert wait_until(lambda: device_log_names(data) == ["alpha", "beta"], 10)
        assert wait_until(lambda: server.health() == (200, {"status": "ok"}), 5)
        # The event's line is written at the end of the loop's turn, which may come
        # after the health answer of that turn.
        assert wait_until(lambda: bool(server.named("device_log_caught_up")), 5)
        assert len(server.named("device_log_caught_up")) == 1
        assert leftovers(data) == []
        beta.send("OUT")
        beta.expect("Bye")
        assert wait_until(lambda: device_log_names(data) == ["alpha"], 5)
    finally:
        alpha.close()
        if beta is not None:
            beta.close()


def test_a_deleted_data_dir_is_a_storage_error_and_is_opened_again(
        tmp_path: Path, credentials_file: Path, pyz: None) -> None:
    data = tmp_path / "data"
    data.mkdir()
    server = PyzServer(data, credentials_file)
    alpha = LiveClient(server.port, tmp_path / "alpha", use_pyz=True)
    try:
        alpha.login("alpha", "alphapass")
        alpha.send("EDG 1 50")
        alpha.expect("data generation done")
        alpha.send("UED 1")
        alpha.expect("has been uploaded")
        alpha.send("SCS 1 SUM")
        total = alpha.expect("the SUM of file 1 is")
        shutil.move(str(data), str(tmp_path / "data.moved"))  # the data dir is gone

        alpha.send("UED 1")
        assert alpha.expect("could not store the file").endswith(
            "the server's data dir is missing")
        assert wait_until(lambda: bool(server.named("data_dir_missing")), 5)
        status, body = server.health()
        assert status == 503 and body["status"] == "not_ready", body
        assert body["problems"][0]["code"] == "data_dir_missing"
        alpha.send("DTE 1")
        alpha.expect("could not delete the file")
        alpha.send("AED")  # the device is still in, and served
        alpha.expect("no other active edge devices")
        assert not data.exists()  # the server does not make a new, empty one

        # The folder comes back: it is opened again as at start-up, and served.
        shutil.move(str(tmp_path / "data.moved"), str(data))
        assert wait_until(lambda: server.health() == (200, {"status": "ok"}), 5)
        # (logged before the health changed, written at the end of that turn of the loop)
        assert wait_until(lambda: bool(server.named("storage_restored")), 5)
        assert len(server.named("data_dir_reopened")) == 1
        assert server.named("storage_restored")[0]["problem"] == "data_dir_missing"
        alpha.send("SCS 1 SUM")
        assert alpha.expect("the SUM of file 1 is") == total
        alpha.send("DTE 1")
        alpha.expect("has been successfully removed")
        assert device_log_names(data) == ["alpha"]
        alpha.send("OUT")
        alpha.expect("Bye")
        assert not server.named("disconnect")
    finally:
        alpha.close()
        server.stop()
    assert server.proc.returncode == 0
