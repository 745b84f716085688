"""The implementations of each state interface that the behavioural suites
(tests/test_contract_*.py) run against.

Each list holds one ``pytest.param`` per implementation: a function of a
``BackendEnv`` returning an async context manager that yields the implementation
(opened on the env's place, so that a second one opened on the same env sees
the same data). Adding a backend (a fleet's Redis or S3 one) is one line in each
list; a backend that needs an engine gives its param a skip mark when the engine
is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgenet.server.events import EventBuffer
from edgenet.server.interfaces import EventLog, FileStore, Lockouts, Presence
from edgenet.server.lockouts import LockoutTracker
from edgenet.server.presence import ActiveDevices
from edgenet.server.store import DataDirStore

T = TypeVar("T")


@dataclass(frozen=True)
class BackendEnv:
    """Where and how a backend is opened for one test."""

    #: A folder of the test's own (a data dir, or a place for an engine's files).
    place: Path
    #: A prefix that keeps this test's keys apart in a shared engine.
    namespace: str
    max_attempts: int = 3
    block_seconds: float = 10.0
    #: The clock of the event log's ``ts``.
    clock: Callable[[], float] = time.time


Opener = Callable[[BackendEnv], AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def embedded_presence(env: BackendEnv) -> AsyncIterator[Presence]:
    yield ActiveDevices()


@contextlib.asynccontextmanager
async def embedded_lockouts(env: BackendEnv) -> AsyncIterator[Lockouts]:
    yield LockoutTracker(env.max_attempts, env.block_seconds)


@contextlib.asynccontextmanager
async def data_dir_store(env: BackendEnv) -> AsyncIterator[FileStore]:
    yield DataDirStore.open(env.place / "data", time.time())


@contextlib.asynccontextmanager
async def event_buffer(env: BackendEnv) -> AsyncIterator[EventLog]:
    yield EventBuffer(capacity=100, max_subscribers=2, clock=env.clock)


@dataclass(frozen=True)
class StorageFaults:
    """Real faults a file store's storage can be put in (no mocks), for the contract
    suite: each is a context manager that breaks the storage and mends it on exit."""

    #: The upload or deletion log cannot be written (``"uploads"``/``"deletions"``).
    log_unwritable: Callable[[BackendEnv, str], AbstractContextManager[None]]
    #: The storage is gone altogether (then it comes back as it was).
    storage_gone: Callable[[BackendEnv], AbstractContextManager[None]]
    #: Names of half-written or temporary objects left in the storage.
    leftovers: Callable[[BackendEnv], list[str]]


@contextlib.contextmanager
def data_dir_log_unwritable(env: BackendEnv, log: str) -> Iterator[None]:
    """The log file replaced by a folder (as an adversarial run did)."""
    path = env.place / "data" / ("upload-log.txt" if log == "uploads" else "deletion-log.txt")
    aside = env.place / f"{path.name}.aside"
    if path.exists():
        os.replace(path, aside)
    path.mkdir()
    try:
        yield
    finally:
        path.rmdir()
        if aside.exists():
            os.replace(aside, path)


@contextlib.contextmanager
def data_dir_gone(env: BackendEnv) -> Iterator[None]:
    data = env.place / "data"
    aside = env.place / "data.aside"
    os.replace(data, aside)
    try:
        yield
    finally:
        os.replace(aside, data)


def data_dir_leftovers(env: BackendEnv) -> list[str]:
    return sorted(p.name for p in (env.place / "data").iterdir() if p.name.startswith("."))


def fleet_prefix(env: BackendEnv) -> str:
    """A Redis key prefix of this test's own (the same for every opening on one env)."""
    digest = hashlib.sha1(f"{env.place}|{env.namespace}".encode()).hexdigest()[:12]
    return f"t{digest}"


@contextlib.asynccontextmanager
async def redis_link(env: BackendEnv, node: str = "node-a") -> AsyncIterator[Any]:
    from edgenet.backends.redislink import RedisLink
    from tests.engines import ENGINES

    link = RedisLink(ENGINES.redis().url, fleet_prefix(env), node)
    try:
        yield link
    finally:
        await link.close()


@contextlib.asynccontextmanager
async def redis_presence(env: BackendEnv) -> AsyncIterator[Presence]:
    from edgenet.backends.redis_presence import RedisPresence

    async with redis_link(env) as link:
        presence = RedisPresence(link)
        await presence.start()
        try:
            yield presence
        finally:
            await presence.stop()


@contextlib.asynccontextmanager
async def redis_lockouts(env: BackendEnv) -> AsyncIterator[Lockouts]:
    from edgenet.backends.redis_lockouts import RedisLockouts

    async with redis_link(env) as link:
        yield RedisLockouts(link, env.max_attempts, env.block_seconds)


@contextlib.asynccontextmanager
async def redis_events(env: BackendEnv) -> AsyncIterator[EventLog]:
    from edgenet.backends.redis_events import RedisEventLog

    async with redis_link(env) as link:
        log = RedisEventLog("node-a", capacity=100, max_subscribers=2, clock=env.clock)
        await log.attach(link)
        try:
            yield log
        finally:
            await log.close()


@contextlib.asynccontextmanager
async def s3_store(env: BackendEnv) -> AsyncIterator[FileStore]:
    from edgenet.backends.s3_store import S3FileStore
    from edgenet.backends.s3link import S3Link
    from tests.engines import BUCKET, ENGINES, S3_KEY, S3_SECRET

    weed = ENGINES.seaweed()
    async with redis_link(env) as link:
        s3 = S3Link(BUCKET, fleet_prefix(env), weed.endpoint, "us-east-1",
                    {"aws_access_key_id": S3_KEY, "aws_secret_access_key": S3_SECRET})
        await s3.open()
        try:
            yield S3FileStore.open(link, s3, env.place / "spool")
        finally:
            await s3.close()


PRESENCE = [pytest.param(embedded_presence, id="embedded"),
            pytest.param(redis_presence, id="redis")]
LOCKOUTS = [pytest.param(embedded_lockouts, id="embedded"),
            pytest.param(redis_lockouts, id="redis")]
FILE_STORES = [pytest.param(data_dir_store, id="data-dir"),
               pytest.param(s3_store, id="s3+redis")]
EVENT_LOGS = [pytest.param(event_buffer, id="embedded"),
              pytest.param(redis_events, id="redis")]
#: Each file store with the faults its storage can be put in (same ids as FILE_STORES).
FAULTY_FILE_STORES = [pytest.param((data_dir_store, StorageFaults(
    data_dir_log_unwritable, data_dir_gone, data_dir_leftovers)), id="data-dir")]
