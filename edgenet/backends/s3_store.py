"""The fleet's ``FileStore``: data files in S3-compatible storage, their metadata and
logs in Redis.

An upload streams (validated) into a spool file in the node's data dir; its
``commit`` sends the spool to a new object, ``<prefix>/<device>/<fileID>/<upload>.txt``
(one object per upload, so a re-upload never overwrites the version still
listed), then commits in one Lua script: the file's metadata (``files``, field
``<device>/<fileID>``) points at the new object and the upload is appended to
``log:uploads``. That script is the one point of truth: before it, nothing is
visible (an object without metadata is an orphan, removed later by
``sweep_orphans``); after it, the file is listed, logged once and readable.
The object it replaced is deleted afterwards. A delete is one script too
(metadata gone and ``log:deletions`` appended), then the object is deleted.

S3 unreachable: ``commit``, ``stats`` and ``delete`` raise ``BackendUnavailable``
and nothing changed (the spool is dropped, the metadata untouched). Statistics
are computed once per stored version from the object (streamed, exact integers)
and kept in its metadata only if that version is still the one listed.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any, BinaryIO

import structlog

from edgenet.backends.redislink import RedisLink
from edgenet.backends.s3link import S3Link
from edgenet.server.compute import DataError, SampleValidator, Stats, StatsScanner
from edgenet.server.checksum import ChecksummedUpload
from edgenet.server.interfaces import (
    BackendUnavailable,
    LogName,
    PendingUpload,
    ResumePoint,
    ResumeRefused,
    ResumeRequest,
    StorageStatus,
    StoredFile,
)
from edgenet.server.logs import FileRecord

log = structlog.get_logger("edgenet.fleet")

SPOOL_PREFIX = ".upload-"
#: Log records read from Redis per round trip while paging a log.
LOG_PAGE = 1000

# Each script writes the log first: a script that fails half-way is not rolled back,
# so the one write that can fail on its own (a log key of the wrong type) goes first.
# KEYS: files, log:uploads. ARGV: field, entry, record. Returns the entry replaced.
_COMMIT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
redis.call('RPUSH', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return old
"""
# KEYS: files, log:deletions. ARGV: field, time. Returns the entry deleted.
_DELETE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return false end
local e = cjson.decode(old)
redis.call('RPUSH', KEYS[2], cjson.encode({device = e.device, file_id = e.file_id,
  samples = e.samples, time = tonumber(ARGV[2])}))
redis.call('HDEL', KEYS[1], ARGV[1])
return old
"""
# KEYS: files. ARGV: field, upload, entry with stats. Stores it only for that upload.
_SET_STATS = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if not cur or cjson.decode(cur).upload ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""


def _field(device: str, file_id: int) -> str:
    return f"{device}/{file_id}"


def _entry(stored: StoredFile, key: str, upload: str) -> str:
    entry: dict[str, Any] = {"device": stored.device, "file_id": str(stored.file_id),
                             "size": stored.size, "samples": stored.samples,
                             "uploaded_at": repr(stored.uploaded_at), "key": key,
                             "upload": upload}
    if stored.stats is not None:
        s = stored.stats
        entry["stats"] = [str(s.count), str(s.total), str(s.minimum), str(s.maximum)]
    return json.dumps(entry, separators=(",", ":"))


def _stored(text: str) -> tuple[StoredFile, str, str]:
    """(the file, its object key, its upload id) from a metadata entry."""
    e = json.loads(text)
    stats = None
    if e.get("stats"):
        count, total, lo, hi = (int(v) for v in e["stats"])
        stats = Stats(count, total, lo, hi)
    return (StoredFile(str(e["device"]), int(e["file_id"]), int(e["size"]), int(e["samples"]),
                       float(e["uploaded_at"]), stats), str(e["key"]), str(e["upload"]))


def _record(text: str) -> FileRecord:
    v = json.loads(text)
    return FileRecord(str(v["device"]), float(v["time"]), int(v["file_id"]), int(v["samples"]))


class S3Upload:
    """One upload: validated as it streams into a spool file, sent to S3 on commit."""

    def __init__(self, store: S3FileStore, device: str, file_id: int) -> None:
        self._store = store
        self.device = device
        self.file_id = file_id
        self._validator = SampleValidator()
        self._error: DataError | OSError | None = None
        self.spool = store.spool_dir / (f"{SPOOL_PREFIX}{device}-{file_id}-"
                                        f"{secrets.token_hex(4)}.tmp")
        self._committing = False
        self._fh: BinaryIO | None = None
        try:
            self._fh = self.spool.open("wb")
        except OSError as exc:  # raised by commit, as a fault while streaming is
            self._error = exc

    def write(self, chunk: bytes) -> None:
        if self._error is not None:
            return
        try:
            self._validator.feed(chunk)
            assert self._fh is not None
            self._fh.write(chunk)
        except (DataError, OSError) as exc:
            self._error = exc
            self._drop()

    async def commit(self, now: float) -> StoredFile:
        try:
            if self._error is not None:
                raise self._error
            samples = self._validator.finish()
            assert self._fh is not None
            self._fh.close()
        except (DataError, OSError):
            self._drop()
            raise
        self._committing = True
        stored = StoredFile(self.device, self.file_id, self._validator.bytes, samples, now)
        # Shielded: once sent, the commit completes (or fails) whatever the caller does.
        task = asyncio.get_running_loop().create_task(self._store._commit(self.spool, stored))
        return await asyncio.shield(task)

    def abort(self) -> None:
        if not self._committing:
            self._drop()

    def _drop(self) -> None:
        if self._fh is not None and not self._fh.closed:
            self._fh.close()
        self.spool.unlink(missing_ok=True)


class S3FileStore:
    def __init__(self, link: RedisLink, s3: S3Link, spool_dir: Path) -> None:
        self.link = link
        self.s3 = s3
        self.spool_dir = spool_dir
        self._files = link.key("files")
        self._logs = {"uploads": link.key("log", "uploads"),
                      "deletions": link.key("log", "deletions")}
        r = link.redis
        self._commit_script = r.register_script(_COMMIT)
        self._delete_script = r.register_script(_DELETE)
        self._stats_script = r.register_script(_SET_STATS)

    @classmethod
    def open(cls, link: RedisLink, s3: S3Link, spool_dir: Path) -> S3FileStore:
        """Make the store; spool files a crash left are removed (blocking, small)."""
        spool_dir.mkdir(parents=True, exist_ok=True)
        for stale in spool_dir.glob(f"{SPOOL_PREFIX}*.tmp"):
            stale.unlink(missing_ok=True)
        return cls(link, s3, spool_dir)

    async def check(self, now: float) -> StorageStatus:
        """S3 answers (a HEAD of the bucket), or the problem ``s3_unavailable``."""
        try:
            await self.s3.check()
        except BackendUnavailable as exc:
            return StorageStatus("s3_unavailable", exc.message)
        return StorageStatus()

    async def finish_background(self, timeout: float) -> bool:
        return True  # every upload's work is its caller's (no partials are kept)

    async def begin_upload(self, device: str, file_id: int,
                           resume: ResumeRequest | None = None) -> PendingUpload:
        # A fleet keeps no partial uploads: a checked upload always starts from 0.
        if resume is None:
            return S3Upload(self, device, file_id)
        if resume.offset:
            raise ResumeRefused("resume_mismatch", "this server keeps no partial uploads "
                                "(fleet mode); upload the file from the start")
        return ChecksummedUpload(S3Upload(self, device, file_id), resume.sha256, resume.size)

    async def resume_point(self, device: str, file_id: int, size: int, now: float
                           ) -> ResumePoint:
        return ResumePoint()  # start over: fleet mode does not resume

    async def _commit(self, spool: Path, stored: StoredFile) -> StoredFile:
        upload = secrets.token_hex(8)
        key = self.s3.object_key(stored.device, stored.file_id, upload)
        try:
            await self.s3.put_file(key, spool, stored.size)
        finally:
            spool.unlink(missing_ok=True)
        record = json.dumps({"device": stored.device, "file_id": stored.file_id,
                             "samples": stored.samples, "time": stored.uploaded_at},
                            separators=(",", ":"))
        # The commit. When Redis fails here, whether the script ran is unknown: the
        # object stays; if nothing lists it, it is an orphan that ``sweep_orphans`` removes.
        old = await self.link.run(lambda r: self._commit_script(
            keys=[self._files, self._logs["uploads"]],
            args=[_field(stored.device, stored.file_id), _entry(stored, key, upload), record]))
        if old:
            await self._forget_object(_stored(old)[1])
        return stored

    async def _forget_object(self, key: str) -> None:
        try:
            await self.s3.delete(key)
        except BackendUnavailable:
            log.warning("s3_object_left", key=key, reason="S3 unreachable; swept later")

    async def get(self, device: str, file_id: int) -> StoredFile | None:
        text = await self.link.run(lambda r: r.hget(self._files, _field(device, file_id)))
        return _stored(text)[0] if text else None

    async def files(self, device: str | None = None) -> list[StoredFile]:
        entries = await self.link.run(lambda r: r.hgetall(self._files))
        found = [_stored(t)[0] for t in entries.values()]
        found.sort(key=lambda f: (f.uploaded_at, f.device, f.file_id))
        return [f for f in found if device is None or f.device == device]

    async def stats(self, device: str, file_id: int) -> Stats | None:
        field = _field(device, file_id)
        text = await self.link.run(lambda r: r.hget(self._files, field))
        if not text:
            return None
        stored, key, upload = _stored(text)
        if stored.stats is not None:
            return stored.stats
        scanner = StatsScanner()
        found = await self.s3.scan(key, scanner.feed)
        if not found:
            return None  # deleted meanwhile
        stats = scanner.finish()  # DataError: no sample
        await self.link.run(lambda r: self._stats_script(
            keys=[self._files], args=[field, upload, _entry(replace(stored, stats=stats), key,
                                                             upload)]))
        return stats

    async def delete(self, device: str, file_id: int, now: float) -> StoredFile | None:
        # S3 must answer before anything changes: a delete while it is unreachable is
        # refused, not committed with its object left behind.
        await self.s3.check()
        old = await self.link.run(lambda r: self._delete_script(
            keys=[self._files, self._logs["deletions"]],
            args=[_field(device, file_id), repr(now)]))
        if not old:
            return None
        stored, key, _ = _stored(old)
        await self._forget_object(key)
        return stored

    async def log_records(self, log: LogName, *, limit: int, before: int | None = None,
                          device: str | None = None, since: float | None = None
                          ) -> list[tuple[int, FileRecord]]:
        key = self._logs[log]
        total = int(await self.link.run(lambda r: r.llen(key)))
        end = total if before is None or before > total else before
        out: list[tuple[int, FileRecord]] = []
        while end > 0 and len(out) < limit:
            start = max(0, end - LOG_PAGE)
            page = await self._lrange(key, start, end)
            for offset in range(len(page) - 1, -1, -1):
                rec = _record(page[offset])
                if (device is None or rec.device == device) and (since is None
                                                                 or rec.time >= since):
                    out.append((start + offset, rec))
                    if len(out) == limit:
                        break
            end = start
        return out

    async def _lrange(self, key: str, start: int, stop: int) -> list[str]:
        return list(await self.link.run(lambda r: r.lrange(key, start, stop - 1)))

    async def log_length(self, log: LogName) -> int:
        return int(await self.link.run(lambda r: r.llen(self._logs[log])))

    async def log_range(self, log: LogName, start: int, stop: int) -> list[FileRecord]:
        return [_record(t) for t in await self._lrange(self._logs[log], start, stop)]

    async def sweep_orphans(self, older_than: float) -> int:
        """Delete objects under the prefix that no metadata names and that are older
        than ``older_than`` seconds (a crash between the object and its commit)."""
        entries = await self.link.run(lambda r: r.hgetall(self._files))
        listed = {_stored(t)[1] for t in entries.values()}
        removed = 0
        for key in await self.s3.keys_older_than(older_than):
            if key not in listed:
                await self.s3.delete(key)
                removed += 1
        if removed:
            log.info("s3_orphans_removed", count=removed)
        return removed
