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


PRESENCE = [pytest.param(embedded_presence, id="embedded")]
LOCKOUTS = [pytest.param(embedded_lockouts, id="embedded")]
FILE_STORES = [pytest.param(data_dir_store, id="data-dir")]
#: Each file store with the faults its storage can be put in (same ids as FILE_STORES).
FAULTY_FILE_STORES = [pytest.param((data_dir_store, StorageFaults(
    data_dir_log_unwritable, data_dir_gone, data_dir_leftovers)), id="data-dir")]
EVENT_LOGS = [pytest.param(event_buffer, id="embedded")]
