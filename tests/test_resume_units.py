"""The resume pieces on their own: the ledger's budget and expiry, checkpoints, the
data dir's partial area (kept across reopening, swept when broken or expired), the
device's choice of offset, and the version-3 messages."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path

import pytest

from edgenet.client.resume import hash_file, resume_offset, resumed_percent
from edgenet.server.compute import SampleValidator
from edgenet.server.interfaces import ResumeRequest
from edgenet.server.partialdir import PARTIAL_DIR, PartialArea
from edgenet.server.partials import Checkpoint, PartialLedger, ResumeLimits
from edgenet.server.resumeopts import ResumeOptionError, parse_size
from edgenet.server.store import DataDirStore
from edgenet.wire import messages as m

BODY = b"".join(b"%d\n" % i for i in range(300_000))  # about 2 MB


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cp(device: str = "a", file_id: int = 1, token: str = "0" * 16, size: int = 100,
       offset: int = 10, updated: float = 1000.0) -> Checkpoint:
    return Checkpoint(device, file_id, token, size, offset, sha(b"x" * offset), 3, 4, b"12",
                      updated)


def test_the_ledger_keeps_each_device_and_all_within_budget() -> None:
    ledger = PartialLedger(ResumeLimits(1.0, device_budget=100, total_budget=150))
    assert ledger.reserve(("a", 1), "1" * 16, 60) is None
    assert ledger.reserve(("a", 2), "2" * 16, 50) is not None  # a: 110 > 100
    assert ledger.held("a") == 60 and ledger.held() == 60  # the refusal changed nothing
    assert ledger.reserve(("b", 1), "3" * 16, 90) is None
    why = ledger.reserve(("c", 1), "4" * 16, 1)
    assert why is not None and "in all" in why  # 151 > 150
    # A new upload of the same file replaces its partial (the old one's room is freed).
    assert ledger.reserve(("a", 1), "5" * 16, 60) is None and ledger.held("a") == 60
    assert ledger.release(("a", 1), "1" * 16) is False  # not the owner any more
    assert ledger.release(("a", 1), "5" * 16) is True and ledger.held() == 90


def test_checkpoints_are_recorded_only_for_their_owner_and_expire() -> None:
    ledger = PartialLedger(ResumeLimits(hours=1.0))
    assert ledger.reserve(("a", 1), "0" * 16, 100) is None
    assert ledger.record(cp()) is True and ledger.get(("a", 1)) == cp()
    assert ledger.record(cp(token="f" * 16)) is False
    assert ledger.expired(1000.0 + 3599) == [] and ledger.expired(1000.0 + 3601) == [cp()]
    assert PartialLedger(ResumeLimits(hours=0)).refusal(("a", 1), 1) is not None


def test_a_checkpoint_round_trips_and_bad_ones_are_refused() -> None:
    assert Checkpoint.from_json(cp().to_json()) == cp()
    good = json.loads(cp().to_json())
    for key, bad in (("offset", 101), ("token", "zz"), ("sha256", "0"), ("tail", "0a"),
                     ("samples", -1), ("format", 2), ("device", "")):
        with pytest.raises(ValueError):
            Checkpoint.from_json(json.dumps({**good, key: bad}).encode())
    with pytest.raises(ValueError):
        Checkpoint.from_json(b"\xff")


def test_a_validator_resumed_from_its_state_ends_as_one_that_never_stopped() -> None:
    whole = SampleValidator()
    whole.feed(BODY)
    first = SampleValidator()
    first.feed(BODY[:1001])  # mid-line
    again = SampleValidator.resume(*first.state())
    again.feed(BODY[1001:])
    assert again.finish() == whole.finish() == 300_000 and again.bytes == len(BODY)


async def cut(store: DataDirStore, upto: int) -> None:
    up = await store.begin_upload("a", 1, ResumeRequest(0, sha(BODY), len(BODY)))
    for i in range(0, upto, 65536):
        up.write(BODY[i:min(upto, i + 65536)])
    up.abort()
    await store.settle(("a", 1))


async def test_a_cut_upload_is_kept_across_reopening_and_resumed(tmp_path: Path) -> None:
    store = DataDirStore.open(tmp_path, time.time())
    await cut(store, 1_000_001)
    point = await store.resume_point("a", 1, len(BODY), time.time())
    assert point.offset == 1_000_001 and point.sha256 == sha(BODY[:1_000_001])
    assert not (tmp_path / "a-1.txt").exists()
    again = DataDirStore.open(tmp_path, time.time())  # a restart
    assert again.partial_sweep.kept and again.partial_sweep.removed == []
    assert await again.resume_point("a", 1, len(BODY), time.time()) == point
    up = await again.begin_upload("a", 1, ResumeRequest(point.offset, sha(BODY), len(BODY)))
    up.write(BODY[point.offset:])
    stored = await up.commit(time.time())
    assert (stored.samples, stored.size) == (300_000, len(BODY))
    assert (tmp_path / "a-1.txt").read_bytes() == BODY
    assert list((tmp_path / PARTIAL_DIR).iterdir()) == []


async def test_the_sweep_removes_broken_and_expired_partials_only(tmp_path: Path) -> None:
    store = DataDirStore.open(tmp_path, time.time())
    await cut(store, 500_000)
    area = PartialArea(tmp_path)
    (area.folder / "0123456789abcdef.part").write_bytes(b"1\n")  # no checkpoint
    (area.folder / "fedcba9876543210.json").write_bytes(b"{")  # no part, bad
    (area.folder / "notes.txt").write_bytes(b"?")
    swept = area.sweep(time.time(), 3600.0)
    assert len(swept.kept) == 1 and swept.expired == 0
    assert sorted(r["file"] for r in swept.removed) == [
        "0123456789abcdef.part", "fedcba9876543210.json", "notes.txt"]
    kept = swept.kept[0]
    assert sorted(p.name for p in area.folder.iterdir()) == [f"{kept.token}.json",
                                                            f"{kept.token}.part"]
    # A part that lost bytes since its checkpoint cannot be resumed: removed.
    with open(area.part(kept.token), "r+b") as fh:
        fh.truncate(10)
    assert area.sweep(time.time(), 3600.0).kept == []
    await cut(store, 500_000)
    assert area.sweep(time.time() + 7200, 3600.0).expired == 1
    assert list(area.folder.iterdir()) == []


async def test_a_damaged_part_is_refused_and_dropped(tmp_path: Path) -> None:
    store = DataDirStore.open(tmp_path, time.time())
    await cut(store, 500_000)
    (part,) = (tmp_path / PARTIAL_DIR).glob("*.part")
    with open(part, "r+b") as fh:
        fh.write(b"9")  # the same length, other bytes
    from edgenet.server.interfaces import ResumeRefused

    # After a restart (no hash of it kept in memory) the part is read and checked.
    store = DataDirStore.open(tmp_path, time.time())
    with pytest.raises(ResumeRefused) as refused:
        await store.begin_upload("a", 1, ResumeRequest(500_000, sha(BODY), len(BODY)))
    assert refused.value.code == "resume_mismatch"
    await store.settle(("a", 1))
    assert (await store.resume_point("a", 1, len(BODY), time.time())).offset == 0


def test_the_device_resumes_only_a_file_that_starts_with_the_part(tmp_path: Path) -> None:
    path = tmp_path / "f.txt"
    path.write_bytes(BODY)
    digest = hash_file(path, 1000)
    assert digest.sha256 == sha(BODY) and digest.prefix_sha256 == sha(BODY[:1000])
    assert resume_offset(1000, sha(BODY[:1000]), digest) == 1000
    assert resume_offset(1000, sha(b"other"), digest) == 0  # the file changed
    assert resume_offset(len(BODY) + 1, sha(BODY), hash_file(path, len(BODY) + 1)) == 0
    assert resume_offset(0, sha(b""), hash_file(path, 0)) == 0
    assert resumed_percent(73, 100) == 73 and resumed_percent(1, 3) == 33


def test_version_3_messages_round_trip_and_are_checked() -> None:
    up = m.Upload(3, 5, 10, 90, sha(b"x"))
    assert m.parse_request(m.request_to_fields(up), 10) == up
    assert m.parse_request({"type": "upload", "id": 3, "file_id": 5}, 10) == m.Upload(3, 5, 10)
    ask = m.UploadOffset(4, 5, 100)
    assert m.parse_request(m.request_to_fields(ask)) == ask
    for bad in ({"type": "upload", "id": 1, "file_id": 1, "offset": 5},
                {"type": "upload", "id": 1, "file_id": 1, "sha256": "ABC"},
                {"type": "upload_offset", "id": 1, "file_id": 1}):
        with pytest.raises(m.MessageError):
            m.parse_request(bad)
    ok = m.UploadOffsetOk(4, 5, 90, sha(b"x"))
    assert m.parse_reply(m.reply_to_fields(ok), ask) == ok
    done = m.UploadOk(3, 5, 7, 100, 90)
    assert m.parse_reply(m.reply_to_fields(done), up) == done
    assert "resumed_from" not in m.reply_to_fields(m.UploadOk(3, 5, 7, 100))


def test_sizes_take_units() -> None:
    assert parse_size("4GiB", "--x") == 4 * 2**30 and parse_size("512 MiB", "--x") == 2**29
    assert parse_size("1.5G", "--x") == 3 * 2**29 and parse_size("1000", "--x") == 1000
    assert parse_size("2MB", "--x") == 2_000_000
    for bad in ("", "-1", "4 XB", "١٢", "1e9", "99999999999999999999"):
        with pytest.raises(ResumeOptionError):
            parse_size(bad, "--resume-budget")
