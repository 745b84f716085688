"""UVF and the files of a device's data dir, through real client and server processes:
what the start-up sweep may remove, and what UVF may send (issue 12, items 14 and 15)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from edgenet.rudp import names
from tests.clientproc import LiveClient, run_script, wait_until
from tests.conftest import ServerProcess
from tests.filedata import make_file, sha

pytestmark = pytest.mark.timeout(90)

CREDENTIALS = """\
alpha alphapass
beta betapass
.uvf-x uvfpass
"""


@pytest.fixture
def credentials_file(tmp_path: Path) -> Path:
    path = tmp_path / "credentials.txt"
    path.write_text(CREDENTIALS)
    return path


def age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_received_file_named_like_a_temp_file_survives_the_next_start(
        server_process: ServerProcess, tmp_path: Path) -> None:
    src = make_file(tmp_path / "x" / "y.part", 100_000)
    inbox = tmp_path / "beta"
    beta = LiveClient(server_process.port, inbox)
    try:
        beta.login("beta", "betapass")
        sent = run_script(server_process.port, tmp_path / "x",
                          [".uvf-x", "uvfpass", "UVF beta y.part"], timeout=40)
        assert "y.part has been uploaded to beta (100000 bytes, direct)" in sent.stdout, sent.stdout
        beta.expect("received .uvf-x_y.part from .uvf-x (100000 bytes)", 20)
        beta.send("OUT")
        beta.expect("Bye, beta!", 10)
        assert beta.proc.wait(10) == 0
    finally:
        beta.close()
    received = inbox / ".uvf-x_y.part"
    assert sha(received) == sha(src)
    # Both untouched for an hour: the received file, and a real leftover of a crashed run.
    leftover = inbox / names.temp_name(0xDEAD)
    leftover.write_bytes(b"half a file")
    age(received, 3600)
    age(leftover, 3600)
    again = LiveClient(server_process.port, inbox)
    try:
        again.login("beta", "betapass")
        assert wait_until(lambda: not leftover.exists(), 10)  # the sweep ran ...
        assert sha(received) == sha(src)  # ... and left the received file alone
        again.send("OUT")
        again.expect("Bye, beta!", 10)
    finally:
        again.close()
    assert sorted(p.name for p in inbox.iterdir()) == [".uvf-x_y.part"]


def test_uvf_sends_nothing_a_symbolic_link_leads_to_outside_the_data_dir(
        server_process: ServerProcess, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    secret = make_file(outside / "secret.txt", 1000, seed=7)
    data = tmp_path / "alpha"
    clip = make_file(data / "clips" / "a.mp4", 20_000, seed=8)
    (data / "link").symlink_to(outside)
    (data / "leak.txt").symlink_to(secret)
    (data / "alias.mp4").symlink_to("clips/a.mp4")  # stays inside: may be sent
    inbox = tmp_path / "beta"
    beta = LiveClient(server_process.port, inbox)
    try:
        beta.login("beta", "betapass")
        sent = run_script(server_process.port, data,
                          ["alpha", "alphapass", "UVF beta link/secret.txt", "UVF beta leak.txt",
                           "UVF beta alias.mp4"], timeout=40)
        out = sent.stdout
        for name in ("link/secret.txt", "leak.txt"):
            assert (f"{name} is outside the data dir; UVF sends files from the data dir only "
                    "(give a name relative to it)") in out, out
            assert f"{name} has been uploaded" not in out
        assert "alias.mp4 has been uploaded to beta (20000 bytes, direct)" in out, out
        beta.expect("received alpha_alias.mp4 from alpha (20000 bytes)", 20)
    finally:
        beta.close()
    assert sorted(p.name for p in inbox.iterdir()) == ["alpha_alias.mp4"]
    assert sha(inbox / "alpha_alias.mp4") == sha(clip)
