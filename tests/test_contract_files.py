"""The behaviour every ``FileStore`` implementation must have (see tests/backends.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path

import pytest

from edgenet.server.compute import DataError, Stats
from edgenet.server.interfaces import FileStore, StoredFile
from tests.backends import FILE_STORES, BackendEnv, Opener

OpenStore = Callable[[], AbstractAsyncContextManager[FileStore]]


@pytest.fixture(params=FILE_STORES)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """``async with open_store() as store``; opened again, it holds the same files."""
    opener: Opener = request.param
    env = BackendEnv(tmp_path, request.node.name)
    return lambda: opener(env)


async def upload(store: FileStore, device: str, file_id: int, body: bytes, now: float,
                 piece: int = 3) -> StoredFile:
    up = await store.begin_upload(device, file_id)
    for i in range(0, len(body), piece):
        up.write(body[i:i + piece])
    return await up.commit(now)


async def logged(store: FileStore, log: str) -> list[tuple[str, int, int, float]]:
    records = await store.log_records(log, limit=1000)  # type: ignore[arg-type]
    return [(r.device, r.file_id, r.samples, r.time) for _, r in reversed(records)]


async def test_a_committed_upload_is_listed_logged_and_computed(open_store: OpenStore) -> None:
    async with open_store() as store:
        stored = await upload(store, "a", 1, b"1\n-5\n10\n", 100.0)
        assert stored == StoredFile("a", 1, 8, 3, 100.0)
        assert await store.get("a", 1) == stored
        assert await store.files() == [stored] and await store.files("a") == [stored]
        assert await store.files("b") == []
        stats = Stats(count=3, total=6, minimum=-5, maximum=10)
        assert await store.stats("a", 1) == stats
        # Computed once, then shown with the file.
        assert await store.get("a", 1) == replace(stored, stats=stats)
        assert await store.files("a") == [replace(stored, stats=stats)]
        assert await logged(store, "uploads") == [("a", 1, 3, 100.0)]
        assert await logged(store, "deletions") == []


async def test_a_re_upload_replaces_the_file_and_its_stats(open_store: OpenStore) -> None:
    async with open_store() as store:
        await upload(store, "a", 1, b"1\n2\n", 100.0)
        assert (await store.stats("a", 1) or Stats(0, 0, 0, 0)).total == 3
        again = await upload(store, "a", 1, b"7\n", 200.0)
        assert again == StoredFile("a", 1, 2, 1, 200.0)
        assert again.stats is None
        assert await store.stats("a", 1) == Stats(1, 7, 7, 7)
        assert await store.files() == [replace(again, stats=Stats(1, 7, 7, 7))]
        assert await logged(store, "uploads") == [("a", 1, 2, 100.0), ("a", 1, 1, 200.0)]


async def test_bad_data_and_abort_store_nothing(open_store: OpenStore) -> None:
    async with open_store() as store:
        bad = await store.begin_upload("a", 1)
        bad.write(b"1\n2\nthree\n4\n")
        with pytest.raises(DataError):
            await bad.commit(100.0)
        bad.abort()
        dropped = await store.begin_upload("a", 2)
        dropped.write(b"1\n")
        dropped.abort()
        dropped.abort()  # more than once is fine
        assert await store.get("a", 1) is None and await store.get("a", 2) is None
        assert await store.files() == [] and await logged(store, "uploads") == []
        assert await store.stats("a", 1) is None


async def test_an_upload_is_invisible_until_committed(open_store: OpenStore) -> None:
    async with open_store() as store:
        await upload(store, "a", 1, b"1\n", 100.0)
        up = await store.begin_upload("a", 1)
        up.write(b"5\n6\n")
        assert await store.stats("a", 1) == Stats(1, 1, 1, 1)  # still the old file
        await up.commit(101.0)
        assert await store.stats("a", 1) == Stats(2, 11, 5, 6)


async def test_delete_removes_and_logs(open_store: OpenStore) -> None:
    async with open_store() as store:
        stored = await upload(store, "a", 1, b"1\n2\n", 100.0)
        await upload(store, "b", 1, b"3\n", 101.0)
        assert await store.delete("a", 1, 150.0) == stored
        assert await store.get("a", 1) is None and await store.stats("a", 1) is None
        assert await store.delete("a", 1, 151.0) is None
        assert [f.device for f in await store.files()] == ["b"]
        assert await logged(store, "deletions") == [("a", 1, 2, 150.0)]


async def test_an_empty_file_has_no_stats(open_store: OpenStore) -> None:
    async with open_store() as store:
        stored = await upload(store, "a", 1, b"", 100.0)
        assert (stored.size, stored.samples) == (0, 0)
        with pytest.raises(DataError):
            await store.stats("a", 1)


async def test_everything_survives_reopening(open_store: OpenStore) -> None:
    async with open_store() as store:
        await upload(store, "a", 1, b"1\n2\n", 100.0)
        await upload(store, "a", 2, b"4\n", 101.0)
        await store.delete("a", 2, 102.0)
    async with open_store() as again:
        assert await again.files() == [StoredFile("a", 1, 4, 2, 100.0)]  # stats: not yet
        assert await again.stats("a", 1) == Stats(2, 3, 1, 2)
        assert await logged(again, "uploads") == [("a", 1, 2, 100.0), ("a", 2, 1, 101.0)]
        assert await logged(again, "deletions") == [("a", 2, 1, 102.0)]


async def test_a_cancelled_commit_is_whole_or_nothing(open_store: OpenStore) -> None:
    async with open_store() as store:
        up = await store.begin_upload("a", 1)
        up.write(b"1\n2\n" * 10_000)
        task = asyncio.create_task(up.commit(100.0))
        await asyncio.sleep(0)  # the commit has started
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        up.abort()  # what a cancelled session does on its way out
        for _ in range(200):  # the commit's disk work may still be finishing
            if await store.get("a", 1) is not None:
                break
            await asyncio.sleep(0.01)
        stored = await store.get("a", 1)
        lines = await logged(store, "uploads")
        if stored is None:
            assert lines == []
        else:
            assert stored.samples == 20_000 and lines == [("a", 1, 20_000, 100.0)]
            assert await store.stats("a", 1) == Stats(20_000, 30_000, 1, 2)
    async with open_store() as again:  # and what is on disk agrees
        assert [(f.device, f.samples) for f in await again.files()] == (
            [] if stored is None else [("a", 20_000)])


async def test_log_records_filter_and_page(open_store: OpenStore) -> None:
    async with open_store() as store:
        for i, device in enumerate(["a", "b", "a", "a", "b"]):
            await upload(store, device, i, b"1\n", 100.0 + i)
        newest = await store.log_records("uploads", limit=10)
        assert [(r.file_id, pos) for pos, r in newest] == [(4, 4), (3, 3), (2, 2), (1, 1),
                                                           (0, 0)]
        of_a = await store.log_records("uploads", limit=2, device="a")
        assert [r.file_id for _, r in of_a] == [3, 2]
        rest = await store.log_records("uploads", limit=2, device="a", before=of_a[-1][0])
        assert [r.file_id for _, r in rest] == [0]
        recent = await store.log_records("uploads", limit=10, since=102.0)
        assert [r.file_id for _, r in recent] == [4, 3, 2]
        assert await store.log_records("deletions", limit=10) == []
