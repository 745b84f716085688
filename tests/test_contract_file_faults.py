"""What every ``FileStore`` promises when its storage fails (see tests/backends.py):
a failed commit or delete changes nothing, now and after reopening; a fault while a
body streams is raised by ``commit``; storage that goes away is reported by
``check`` and opened again when it comes back."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path

import pytest

from edgenet.server.compute import Stats
from edgenet.server.interfaces import FileStore, StoredFile
from tests.backends import FAULTY_FILE_STORES, BackendEnv, Opener, StorageFaults
from tests.test_contract_files import logged, upload

OpenStore = Callable[[], AbstractAsyncContextManager[FileStore]]


@pytest.fixture(params=FAULTY_FILE_STORES)
def faulty(request: pytest.FixtureRequest, tmp_path: Path
           ) -> tuple[OpenStore, StorageFaults, BackendEnv]:
    opener: Opener
    opener, faults = request.param
    env = BackendEnv(tmp_path, request.node.name)
    return (lambda: opener(env)), faults, env


async def snapshot(store: FileStore) -> tuple[list[StoredFile], list[object], list[object]]:
    """Files (without their cached statistics) and both logs."""
    return (sorted((replace(f, stats=None) for f in await store.files()),
                   key=lambda f: (f.device, f.file_id)),
            await logged(store, "uploads"), await logged(store, "deletions"))


async def test_a_failed_commit_changes_nothing(
        faulty: tuple[OpenStore, StorageFaults, BackendEnv]) -> None:
    open_store, faults, env = faulty
    async with open_store() as store:
        await upload(store, "a", 1, b"1\n2\n", 100.0)
        assert await store.stats("a", 1) == Stats(2, 3, 1, 2)
        before = await snapshot(store)
        with faults.log_unwritable(env, "uploads"):
            with pytest.raises(OSError):
                await upload(store, "a", 1, b"70\n80\n90\n", 200.0)  # a re-upload
            with pytest.raises(OSError):
                await upload(store, "a", 2, b"5\n", 201.0)  # a new fileID
            # The previous version is the one listed, computed and logged; no new file.
            assert await store.stats("a", 1) == Stats(2, 3, 1, 2)
            assert await store.get("a", 2) is None and await store.stats("a", 2) is None
            assert await snapshot(store) == before
        assert faults.leftovers(env) == []
        assert await store.stats("a", 1) == Stats(2, 3, 1, 2)
    async with open_store() as again:  # and the storage agrees
        assert [(f.device, f.file_id, f.samples) for f in await again.files()] == [("a", 1, 2)]
        assert await again.stats("a", 1) == Stats(2, 3, 1, 2)
        assert await logged(again, "uploads") == before[1]
        # The same upload, once the log is writable, is stored and logged once.
        stored = await upload(again, "a", 1, b"70\n80\n90\n", 300.0)
        assert stored.samples == 3 and await again.stats("a", 1) == Stats(3, 240, 70, 90)
        assert await logged(again, "uploads") == [*before[1], ("a", 1, 3, 300.0)]


async def test_a_failed_delete_changes_nothing(
        faulty: tuple[OpenStore, StorageFaults, BackendEnv]) -> None:
    open_store, faults, env = faulty
    async with open_store() as store:
        await upload(store, "a", 1, b"4\n5\n", 100.0)
        before = await snapshot(store)
        with faults.log_unwritable(env, "deletions"):
            with pytest.raises(OSError):
                await store.delete("a", 1, 150.0)
            assert await store.stats("a", 1) == Stats(2, 9, 4, 5)
            assert (await snapshot(store))[:2] == before[:2]
            assert await logged(store, "deletions") == []
        assert faults.leftovers(env) == []
    async with open_store() as again:
        assert await again.stats("a", 1) == Stats(2, 9, 4, 5)
        assert await logged(again, "deletions") == []
        deleted = await again.delete("a", 1, 160.0)
        assert deleted is not None and deleted.samples == 2
        assert await again.get("a", 1) is None
        assert await logged(again, "deletions") == [("a", 1, 2, 160.0)]
    async with open_store() as third:
        assert await third.files() == [] and await logged(third, "deletions") == [
            ("a", 1, 2, 160.0)]


async def test_storage_that_goes_away_is_reported_and_opened_again(
        faulty: tuple[OpenStore, StorageFaults, BackendEnv]) -> None:
    open_store, faults, env = faulty
    async with open_store() as store:
        await upload(store, "a", 1, b"3\n", 100.0)
        assert (await store.check(101.0)).problem is None
        with faults.storage_gone(env):
            status = await store.check(102.0)
            assert status.problem is not None and status.message
            up = await store.begin_upload("a", 2)  # never raises for a fault...
            up.write(b"1\n2\n")
            with pytest.raises(OSError):
                await up.commit(103.0)  # ...the commit does
            for call in (store.stats("a", 1), store.delete("a", 1, 104.0), store.files()):
                with pytest.raises(OSError):
                    await call
            assert (await store.check(105.0)).problem is not None  # still gone
        status = await store.check(106.0)
        assert status.problem is None and status.reopened
        assert [(f.file_id, f.samples) for f in await store.files()] == [(1, 1)]
        assert await store.stats("a", 1) == Stats(1, 3, 3, 3)
        assert await logged(store, "uploads") == [("a", 1, 1, 100.0)]
        await upload(store, "a", 2, b"8\n", 107.0)
        assert (await store.check(108.0)) == type(status)()  # nothing to report
        assert faults.leftovers(env) == []
