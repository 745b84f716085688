"""The commit order of uploads and deletions (edgenet/server/durable.py), over real
sockets and real files: a log that cannot be written fails the request and changes
nothing (the previous version is kept, SCS and a restart agree); and every state a
crash can leave in the middle of a commit or a delete opens as the old state or
the new one, logged once."""

from __future__ import annotations

import os
import time
from pathlib import Path

from structlog.testing import capture_logs

from edgenet.config import ServerConfig
from edgenet.server.logs import FileRecord
from edgenet.server.store import DataDirStore
from tests.conftest import start_server
from tests.wireclient import WireDevice


def lines(path: Path) -> list[tuple[str, int, int]]:
    if not path.exists():
        return []
    return [(r.device, r.file_id, r.samples) for r in
            (FileRecord.parse(line) for line in path.read_text().splitlines())]


def unwritable(path: Path) -> Path:
    """Replace a log by a folder (the fault an adversarial run used); returns the aside."""
    aside = path.with_name(path.name + ".aside")
    if path.exists():
        os.replace(path, aside)
    path.mkdir()
    return aside


def mend(path: Path, aside: Path) -> None:
    path.rmdir()
    if aside.exists():
        os.replace(aside, path)


async def test_a_failed_re_upload_or_delete_changes_nothing(server_config: ServerConfig) -> None:
    data = server_config.data_dir
    server = await start_server(server_config)
    try:
        dev = await WireDevice.connect(server.port)
        assert (await dev.login("alpha", "alphapass"))["type"] == "ok"
        assert (await dev.call({"type": "upload", "file_id": 1}, b"1\n2\n"))["type"] == "ok"
        aside = unwritable(data / "upload-log.txt")
        again = await dev.call({"type": "upload", "file_id": 1}, b"10\n20\n30\n")
        assert again["code"] == "storage_error", again
        fresh = await dev.call({"type": "upload", "file_id": 2}, b"5\n")
        assert fresh["code"] == "storage_error", fresh
        # What the server reports is what is on disk: the previous version, no new file.
        total = await dev.call({"type": "compute", "file_id": 1, "op": "SUM"})
        assert total["result"] == "3", total
        missing = await dev.call({"type": "compute", "file_id": 2, "op": "SUM"})
        assert missing["code"] == "not_found", missing
        assert (data / "alpha-1.txt").read_bytes() == b"1\n2\n"
        assert not (data / "alpha-2.txt").exists()
        mend(data / "upload-log.txt", aside)

        aside = unwritable(data / "deletion-log.txt")
        gone = await dev.call({"type": "delete", "file_id": 1})
        assert gone["code"] == "storage_error", gone  # not "internal"
        assert (await dev.call({"type": "compute", "file_id": 1, "op": "SUM"}))["result"] == "3"
        mend(data / "deletion-log.txt", aside)
        assert (await dev.call({"type": "delete", "file_id": 1}))["type"] == "ok"
        await dev.close()
    finally:
        await server.close()
    assert sorted(p.name for p in data.iterdir() if p.name.startswith(".")) == []
    assert lines(data / "upload-log.txt") == [("alpha", 1, 2)]
    assert lines(data / "deletion-log.txt") == [("alpha", 1, 2)]
    with capture_logs() as logs:  # a restart finds nothing to repair
        server = await start_server(server_config)
        await server.close()
    assert [e for e in logs if e["event"] == "log_repaired"] == []
    assert lines(data / "upload-log.txt") == [("alpha", 1, 2)]


def test_every_crash_state_of_a_commit_opens_as_old_or_new_logged_once(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    old = FileRecord("a", t0, 1, 2)
    # (name, files on disk, whether the new version's line was written, expected)
    states = [
        ("body written, not renamed", {".upload-a-1-00.body.tmp": b"7\n8\n9\n"}, False, "old"),
        ("keep link made", {".upload-a-1-00.body.tmp": b"7\n8\n9\n",
                            ".upload-a-1-01.keep.tmp": b"1\n2\n"}, False, "old"),
        ("renamed, not logged", {".upload-a-1-01.keep.tmp": b"1\n2\n"}, False, "new"),
        ("logged, keep link not removed", {".upload-a-1-01.keep.tmp": b"1\n2\n"}, True, "new"),
    ]
    for name, extra, logged, expected in states:
        data = tmp_path / name.replace(" ", "_").replace(",", "")
        data.mkdir()
        (data / "upload-log.txt").write_text(old.line() + (
            FileRecord("a", t0 + 60, 1, 3).line() if logged else ""))
        new_in_place = expected == "new"
        (data / "a-1.txt").write_bytes(b"7\n8\n9\n" if new_in_place else b"1\n2\n")
        for file, body in extra.items():
            (data / file).write_bytes(body)
        store = DataDirStore.open(data, time.time())
        assert sorted(p.name for p in data.iterdir()) == ["a-1.txt", "upload-log.txt"], name
        ups = lines(data / "upload-log.txt")
        if expected == "old":
            assert ups == [("a", 1, 2)] and store.repairs == [], name
        else:  # the new version, logged exactly once (by the commit or by the repair)
            assert ups == [("a", 1, 2), ("a", 1, 3)], name
            assert len(store.repairs) == (0 if logged else 1), name


def test_every_crash_state_of_a_delete_opens_as_old_or_new_logged_once(tmp_path: Path) -> None:
    t0 = 1_700_000_000.0
    up = FileRecord("a", t0, 1, 2)
    for name, in_place, logged in [("before the rename", True, False),
                                   ("renamed aside, not logged", False, False),
                                   ("logged, aside not removed", False, True)]:
        data = tmp_path / name.replace(" ", "_").replace(",", "")
        data.mkdir()
        (data / "upload-log.txt").write_text(up.line())
        if logged:
            (data / "deletion-log.txt").write_text(FileRecord("a", t0 + 60, 1, 2).line())
        if in_place:
            (data / "a-1.txt").write_bytes(b"1\n2\n")
        else:
            (data / ".upload-a-1-02.delete.tmp").write_bytes(b"1\n2\n")
        DataDirStore.open(data, t0 + 120)
        dels = lines(data / "deletion-log.txt")
        leftover = sorted(p.name for p in data.iterdir() if p.name.startswith("."))
        assert leftover == [], name
        if in_place:
            assert dels == [] and (data / "a-1.txt").exists(), name
        else:
            assert dels == [("a", 1, 2)] and not (data / "a-1.txt").exists(), name
