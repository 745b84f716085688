"""The partial files a UVF receiver keeps for a resume, on a real disk (a tmp dir): park,
claim and sweep, and what an edited record, a truncated partial, an expiry, another file
and the budget do to them."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from edgenet.rudp import names, partials
from edgenet.rudp import sidecar as sc

DATA = random.Random(1).randbytes(100_000)
SHA = hashlib.sha256(DATA).hexdigest()
NOW = 1_000_000.0
DAY = 86_400.0


def park(data_dir: Path, held: int, *, sender: str = "alpha", filename: str = "f.bin",
         kept_at: float = NOW, budget: int = 10**9, tid: int = 1) -> partials.Parked:
    temp = data_dir / names.temp_name(tid)
    temp.write_bytes(DATA[: held + 500])  # more than was known written: cut back on park
    temp.chmod(0o600)
    record = sc.PartialRecord(sender, filename, SHA, len(DATA), ((0, held),), kept_at)
    return partials.park(open(temp, "r+b"), temp, data_dir, record, budget=budget,
                         max_age=DAY)


def claim(data_dir: Path, *, sha: str = SHA, chunk: int = 1000, now: float = NOW + 60,
          sender: str = "alpha", tid: int = 2) -> partials.Claim:
    return partials.claim(data_dir, data_dir / names.temp_name(tid), sender=sender,
                          filename="f.bin", sha256=sha, size=len(DATA), chunk_size=chunk,
                          max_age=DAY, now=now)


def key() -> str:
    return sc.partial_key("alpha", "f.bin")


def test_park_then_claim_gives_the_held_prefix_and_its_digest(tmp_path: Path) -> None:
    assert park(tmp_path, 40_500).kept
    partial = tmp_path / sc.partial_name(key())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [sc.partial_name(key()), sc.sidecar_name(key())])
    assert partial.read_bytes() == DATA[:40_500] and partial.stat().st_mode & 0o777 == 0o600
    got = claim(tmp_path)
    assert got.file is not None and got.note == ""
    assert got.held == 40_000  # whole chunks of the new transfer
    assert got.digest is not None and got.digest.digest() == hashlib.sha256(DATA[:40_000]).digest()
    got.file.close()
    assert [p.name for p in tmp_path.iterdir()] == [names.temp_name(2)]  # taken over, whole
    assert (tmp_path / names.temp_name(2)).read_bytes() == DATA[:40_000]


@pytest.mark.parametrize(("change", "why"), [
    (lambda d: d.update(sha256="0" * 64), "the file changed"),
    (lambda d: d.update(kept_at=NOW - 2 * DAY), "expired"),
    (lambda d: d.update(kept_at=NOW + DAY), "expired"),  # from the future: not trusted
    (lambda d: d.update(ranges=[[0, 10**9]]), "does not fit"),
    (lambda d: d.update(ranges=[[0, 5], [3, 9]]), "does not fit"),
    (lambda d: d.update(ranges=[[0, 1]] * 65), "more than 64"),
    (lambda d: d.update(size=True), "size is not"),
    (lambda d: d.update(sender="mallory"), "names another sender"),
    (lambda d: d.update(version=2), "not a version-1 record"),
    (lambda d: d.pop("sha256"), "SHA-256 is not"),
])
def test_an_edited_record_is_refused_in_one_line_and_both_files_go(
        tmp_path: Path, change, why: str) -> None:  # type: ignore[no-untyped-def]
    park(tmp_path, 40_000)
    path = tmp_path / sc.sidecar_name(key())
    doc = json.loads(path.read_bytes())
    change(doc)
    path.write_text(json.dumps(doc))
    got = claim(tmp_path)
    assert got.file is None and got.held == 0
    assert why in got.note and got.note.endswith("starting over") and "\n" not in got.note
    assert list(tmp_path.iterdir()) == []


def test_garbage_and_oversized_records_are_refused(tmp_path: Path) -> None:
    for raw in (b"\xff\xfe not json", b"[]", b" " * (sc.MAX_SIDECAR_BYTES + 1)):
        park(tmp_path, 40_000)
        (tmp_path / sc.sidecar_name(key())).write_bytes(raw)
        got = claim(tmp_path)
        assert got.file is None and "damaged" in got.note
        assert list(tmp_path.iterdir()) == []


def test_a_partial_truncated_on_disk_starts_over(tmp_path: Path) -> None:
    park(tmp_path, 40_000)
    os.truncate(tmp_path / sc.partial_name(key()), 12_345)
    got = claim(tmp_path)
    assert got.file is None
    assert got.note == ("the partial file is shorter on disk (12345 bytes) than its record "
                        "says (40000); starting over")
    assert list(tmp_path.iterdir()) == []


def test_nothing_to_claim_and_another_sender(tmp_path: Path) -> None:
    assert claim(tmp_path) == partials.Claim(None, 0, None, "")
    park(tmp_path, 40_000)
    assert claim(tmp_path, sender="gamma") == partials.Claim(None, 0, None, "")
    assert len(list(tmp_path.iterdir())) == 2  # alpha's part is still there for alpha


def test_the_budget_removes_the_oldest_and_refuses_one_alone_over_it(tmp_path: Path) -> None:
    assert park(tmp_path, 30_000, filename="old.bin", kept_at=NOW).kept
    assert park(tmp_path, 30_000, filename="mid.bin", kept_at=NOW + 1).kept
    parked = park(tmp_path, 30_000, filename="new.bin", kept_at=NOW + 2, budget=70_000)
    assert parked.kept
    old = sc.partial_name(sc.partial_key("alpha", "old.bin"))
    assert parked.removed == ((old, "over the budget for partial files"),)
    alone = park(tmp_path, 80_000, filename="huge.bin", budget=70_000, tid=9)
    assert not alone.kept and "over the budget" in alone.note
    assert not (tmp_path / names.temp_name(9)).exists()
    assert len(list(tmp_path.iterdir())) == 4  # mid and new, each a partial and a record


def test_sweep_removes_expired_damaged_and_orphaned_partials(tmp_path: Path) -> None:
    park(tmp_path, 10_000, filename="fresh.bin", kept_at=NOW)
    park(tmp_path, 10_000, filename="broken.bin", kept_at=NOW)
    park(tmp_path, 10_000, filename="stale.bin", kept_at=NOW)
    stale = tmp_path / sc.sidecar_name(sc.partial_key("alpha", "stale.bin"))
    stale.write_text(stale.read_text().replace(f"{NOW}", f"{NOW - 2 * DAY}"))
    broken = sc.partial_key("alpha", "broken.bin")
    (tmp_path / sc.sidecar_name(broken)).write_text("{")
    orphan = tmp_path / sc.partial_name("ab" * 16)
    orphan.write_bytes(b"x")
    os.utime(orphan, (NOW - 3600, NOW - 3600))
    young_orphan = tmp_path / sc.partial_name("cd" * 16)  # a park between its two writes
    young_orphan.write_bytes(b"x")
    os.utime(young_orphan, (NOW, NOW))
    received = tmp_path / "alpha_f.partial"  # a received file is never touched
    received.write_bytes(b"mine")
    removed = dict(partials.sweep(tmp_path, max_age=DAY, budget=10**9, now=NOW + 10))
    assert removed == {
        sc.partial_name(sc.partial_key("alpha", "stale.bin")): "expired",
        sc.partial_name(broken): "the record is damaged (the record is not valid JSON)",
        orphan.name: "no record of the partial file",
    }
    fresh = sc.partial_key("alpha", "fresh.bin")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [sc.partial_name(fresh), sc.sidecar_name(fresh), young_orphan.name, received.name])
    # A lowered budget, at the next start-up: the oldest go until the rest fit.
    assert partials.sweep(tmp_path, max_age=DAY, budget=0, now=NOW + 10) == [
        (sc.partial_name(fresh), "over the budget for partial files")]


def test_partial_names_are_never_saved_names() -> None:
    k = sc.partial_key("alpha", "f.bin")
    for name in (sc.partial_name(k), sc.sidecar_name(k), sc.sidecar_new_name(k)):
        assert "_" not in name and sc.key_of(name) == k
        assert not names.is_temp_name(name)  # the stale-temp sweep leaves them alone
    assert sc.key_of("alpha_" + sc.partial_name(k)) is None
    assert sc.coalesce([(5, 9), (0, 3), (3, 4), (8, 12), (20, 20)]) == ((0, 4), (5, 12))
    assert len(sc.coalesce([(i * 2, i * 2 + 1) for i in range(100)])) == sc.MAX_RANGES
