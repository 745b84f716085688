"""The credentials file replaced by a FIFO (or something too large), then SIGHUP,
then SIGTERM, against the built zipapp: the reload is refused without reading, the
old credentials stay, and the server exits at once. And a reload that blocks for
good (a hung mount) does not keep the process from exiting."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.clientproc import wait_until
from tests.conftest import PYZ, ROOT, ServerProcess, server_argv

pytestmark = pytest.mark.timeout(60)


def reload_failures(server: ServerProcess) -> list[str]:
    return [e["error"] for e in server.read_events()
            if e.get("event") == "credentials_reload_failed"]


def test_a_fifo_or_a_huge_file_is_refused_and_does_not_block_shutdown(
        tmp_path: Path, credentials_file: Path) -> None:
    assert PYZ.exists(), "build/edgenet.pyz is missing: run `make pyz` (make test does)"
    data = tmp_path / "data"
    data.mkdir()
    server = ServerProcess(server_argv(use_pyz=True) + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(credentials_file),
        "--data-dir", str(data), "--log-format", "json", "--no-admin"], data)
    try:
        credentials_file.unlink()
        os.mkfifo(credentials_file)  # nobody will ever write to it
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(reload_failures(server)) == 1, 5)
        assert "is not a regular file (a FIFO)" in reload_failures(server)[0]
        credentials_file.unlink()
        credentials_file.write_bytes(b"# padding\n" * 900_000)  # 9 MB: over the cap
        server.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: len(reload_failures(server)) == 2, 5)
        assert "is larger than" in reload_failures(server)[1]
        credentials_file.unlink()
        os.mkfifo(credentials_file)
        server.proc.send_signal(signal.SIGHUP)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(10) == 0
        assert time.monotonic() - started < 8
    finally:
        server.stop()


def test_a_fifo_at_start_up_is_one_line_not_a_hang(tmp_path: Path) -> None:
    fifo = tmp_path / "credentials.txt"
    os.mkfifo(fifo)
    done = subprocess.run(server_argv(use_pyz=True) + [
        "server", "0", "3", "--credentials", str(fifo), "--data-dir", str(tmp_path / "d"),
        "--no-admin"], capture_output=True, text=True, timeout=20, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        f"edgenet: credentials file {fifo} is not a regular file (a FIFO)"]


def test_a_reload_that_never_returns_does_not_hold_up_the_exit() -> None:
    script = textwrap.dedent("""
        import asyncio, threading
        from edgenet.server.app import _in_daemon_thread

        async def main():
            blocked = _in_daemon_thread(threading.Event().wait)  # blocks for good
            await asyncio.sleep(0.1)
            assert not blocked.done()
            blocked.cancel()

        asyncio.run(main())
        print("exited")
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=20, check=False, cwd=ROOT)
    assert (done.returncode, done.stdout.strip()) == (0, "exited"), done.stderr
