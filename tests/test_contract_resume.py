"""What every ``FileStore`` does with checked, resumable uploads (protocol version 3):
the data dir keeps partials, a fleet's S3 store keeps none (it always answers offset 0),
and both store exactly the file described by its SHA-256, or nothing."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from edgenet.server.interfaces import (
    EMPTY_SHA256,
    ChecksumMismatch,
    FileStore,
    ResumePoint,
    ResumeRefused,
    ResumeRequest,
    StoredFile,
)
from tests.backends import FILE_STORES, BackendEnv, Opener

OpenStore = Callable[[], AbstractAsyncContextManager[FileStore]]
BODY = b"".join(b"%d\n" % i for i in range(20_000))


@pytest.fixture(params=FILE_STORES)
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    opener: Opener = request.param
    env = BackendEnv(tmp_path, request.node.name)
    return lambda: opener(env)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def send(store: FileStore, body: bytes, offset: int = 0, whole: bytes | None = None,
               piece: int = 4096) -> StoredFile:
    whole = body if whole is None else whole
    up = await store.begin_upload("a", 1, ResumeRequest(offset, sha(whole), len(whole)))
    for i in range(offset, len(body), piece):
        up.write(body[i:i + piece])
    return await up.commit(100.0)


async def test_a_checked_upload_is_stored_as_a_plain_one(open_store: OpenStore) -> None:
    async with open_store() as store:
        assert await store.resume_point("a", 1, len(BODY), 99.0) == ResumePoint(0, EMPTY_SHA256)
        stored = await send(store, BODY)
        assert stored == StoredFile("a", 1, len(BODY), 20_000, 100.0)
        assert await store.get("a", 1) == stored
        point = await store.resume_point("a", 1, len(BODY), 101.0)
        assert (point.offset, point.sha256) == (0, EMPTY_SHA256)  # nothing partial is left


async def test_a_wrong_checksum_stores_nothing(open_store: OpenStore) -> None:
    async with open_store() as store:
        await send(store, b"1\n2\n")
        up = await store.begin_upload("a", 1, ResumeRequest(0, sha(b"7\n"), 2))
        up.write(b"8\n")
        with pytest.raises(ChecksumMismatch):
            await up.commit(101.0)
        up.abort()
        stored = await store.get("a", 1)
        assert stored is not None and stored.samples == 2  # the old version stays
        short = await store.begin_upload("a", 2, ResumeRequest(0, sha(b"1\n2\n"), 4))
        short.write(b"1\n")
        with pytest.raises(ChecksumMismatch):
            await short.commit(102.0)
        assert await store.get("a", 2) is None


async def test_a_cut_upload_resumes_where_the_store_says(open_store: OpenStore) -> None:
    async with open_store() as store:
        up = await store.begin_upload("a", 1, ResumeRequest(0, sha(BODY), len(BODY)))
        up.write(BODY[:50_000])
        up.abort()
        point = await store.resume_point("a", 1, len(BODY), 101.0)
        # Whatever the store kept (the S3 store: nothing), it is a prefix of what was sent.
        assert 0 <= point.offset <= 50_000 and point.sha256 == sha(BODY[:point.offset])
        assert await store.get("a", 1) is None
        stored = await send(store, BODY, point.offset)
        assert (stored.size, stored.samples) == (len(BODY), 20_000)


async def test_an_offset_the_store_does_not_hold_is_refused(open_store: OpenStore) -> None:
    async with open_store() as store:
        with pytest.raises(ResumeRefused) as refused:
            await store.begin_upload("a", 1, ResumeRequest(10, sha(BODY), len(BODY)))
        assert refused.value.code == "resume_mismatch" and refused.value.message
        await asyncio.sleep(0)
        assert await store.get("a", 1) is None
