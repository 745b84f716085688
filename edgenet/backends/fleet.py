"""Fleet mode: one node's shared state over Redis (and S3), opened and run with its server.

``Fleet`` is made from the ``ServerConfig`` before the server starts (its event
log goes into the logging chain at once); ``Fleet.open`` is the server's backend
opener (``EdgeServer(open_backends=...)``): it reaches Redis, takes this node's
lease, clears what an earlier run of this node left, and returns the Redis
presence and lockouts and the S3 file store (or the data dir's, without
``--files``). ``install`` adds its start and stop to the server's hooks: the
readiness check of ``/healthz``, the logs' mirror, and an ordered stop (the lease
is given up last, after every device has left).
"""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from edgenet.backends.leases import NodeIdInUse, NodeLease
from edgenet.backends.logmirror import LogMirror
from edgenet.backends.redis_events import RedisEventLog
from edgenet.backends.redis_lockouts import RedisLockouts
from edgenet.backends.redis_presence import RedisPresence
from edgenet.backends.redislink import UNAVAILABLE, RedisLink, safe_url
from edgenet.config import ServerConfig
from edgenet.server.interfaces import Backends, BackendStartError, BackendUnavailable, FileStore
from edgenet.server.options import split_files_url
from edgenet.server.store import DataDirStore

if TYPE_CHECKING:
    from edgenet.backends.s3link import S3Link
    from edgenet.server.app import EdgeServer

log = structlog.get_logger("edgenet.fleet")

#: Objects older than this that no metadata names are removed at start-up.
ORPHAN_AGE = 600.0
#: Seconds between two looks at the Redis link's health.
HEALTH_PERIOD = 0.2
#: Seconds a starting node waits for Redis to answer before it gives up (exit 1).
START_WAIT = 5.0


def node_name(config: ServerConfig) -> str:
    """``--node-id``, or the host name and the device port (the pid when the OS picks it)."""
    if config.node_id:
        return config.node_id
    host = socket.gethostname().split(".")[0] or "node"
    return f"{host}:{config.port}" if config.port else f"{host}:pid{os.getpid()}"


class Fleet:
    def __init__(self, config: ServerConfig) -> None:
        assert config.redis_url is not None
        self.config = config
        self.node = node_name(config)
        self.events = RedisEventLog(self.node)
        self.link: RedisLink | None = None
        self.lease: NodeLease | None = None
        self.presence: RedisPresence | None = None
        self.s3: S3Link | None = None
        self.files: FileStore | None = None
        self.mirror: LogMirror | None = None
        self._health_task: asyncio.Task[None] | None = None

    async def open(self, config: ServerConfig, now: float) -> Backends:
        link = self.link = RedisLink(config.redis_url or "", config.redis_prefix, self.node,
                                     max_connections=config.redis_max_connections,
                                     pool_timeout=config.redis_pool_timeout)
        try:
            await link.check()
        except BackendUnavailable:
            # A Redis that is slow to answer (a loaded box, a fail-over) gets a few
            # seconds: the link's watcher keeps trying with backoff meanwhile.
            deadline = asyncio.get_running_loop().time() + START_WAIT
            while not link.ready() and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.05)
            if not link.ready():
                await link.close()
                raise BackendStartError(f"cannot reach Redis at {safe_url(link.url)}") from None
        self.lease = NodeLease(link, config.lease)
        try:
            await self.lease.acquire()
        except NodeIdInUse as exc:
            await link.close()
            raise BackendStartError(str(exc)) from None
        presence = self.presence = RedisPresence(link)
        await presence.resync()  # entries an earlier run of this node left
        await presence.start()
        await self.events.attach(link)
        self.files = await self._open_files(config, link, now)
        log.info("fleet_joined", node=self.node, lease=config.lease,
                 files=config.files_url or "data dir (not shared)")
        return Backends(presence=presence,
                        lockouts=RedisLockouts(link, config.max_attempts, config.block_seconds),
                        files=self.files)

    async def _open_files(self, config: ServerConfig, link: RedisLink, now: float) -> FileStore:
        if not config.files_url:
            log.warning("fleet_files_local", hint="without --files each node keeps its own "
                                                  "files; give --files s3://... to share them")
            return await asyncio.to_thread(DataDirStore.open, config.data_dir, now)
        from edgenet.backends.s3_store import S3FileStore
        from edgenet.backends.s3link import S3Link, S3SetupError, credentials_from

        bucket, prefix = split_files_url(config.files_url)
        try:
            creds = credentials_from(os.environ)
        except S3SetupError as exc:
            raise BackendStartError(str(exc)) from None
        s3 = self.s3 = S3Link(bucket, prefix, config.s3_endpoint, config.s3_region, creds)
        await s3.open()
        if not await self._s3_answers(s3):
            await s3.close()
            raise BackendStartError(f"cannot reach the S3 bucket {bucket} at "
                                    f"{config.s3_endpoint or 'AWS'}")
        store = await asyncio.to_thread(S3FileStore.open, link, s3, Path(config.data_dir))
        asyncio.get_running_loop().create_task(self._sweep(store))
        return store

    @staticmethod
    async def _s3_answers(s3: S3Link) -> bool:
        """S3 answers a HEAD of the bucket; a store slow to answer (a loaded box, one
        that is still starting) gets START_WAIT seconds of tries, as Redis does."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_WAIT
        while True:
            try:
                await s3.check()
                return True
            except BackendUnavailable:
                if loop.time() >= deadline:
                    return False
            await asyncio.sleep(0.25)

    async def _sweep(self, store: object) -> None:
        from edgenet.backends.s3_store import S3FileStore

        assert isinstance(store, S3FileStore)
        try:
            await store.sweep_orphans(ORPHAN_AGE)
        except BackendUnavailable:
            log.info("s3_sweep_skipped", reason="unreachable")

    async def _watch_redis(self, server: EdgeServer) -> None:
        """``redis_unavailable`` in ``/healthz`` (not ready) while Redis does not answer.
        (S3 is watched as any file store is, through ``FileStore.check``.)"""
        health = server.state.health
        while True:
            if self.link is not None and not self.link.ready():
                health.report("redis_unavailable", UNAVAILABLE, server.clock(), ready=False)
            else:
                health.clear("redis_unavailable")
            await asyncio.sleep(HEALTH_PERIOD)

    def install(self, server: EdgeServer) -> None:
        server.on_start.append(self._start)
        server.on_stop.append(self._stop)

    async def _start(self, server: EdgeServer) -> None:
        state = server.state
        self._health_task = asyncio.get_running_loop().create_task(self._watch_redis(server))
        assert self.presence is not None
        logs = None
        if self.config.files_url:
            from edgenet.backends.s3_store import S3FileStore

            assert isinstance(self.files, S3FileStore)
            logs = self.files
        self.mirror = LogMirror(self.config.data_dir, logs, self.presence, state.device_log)
        self.mirror.start()

    async def _stop(self, server: EdgeServer) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        if self.mirror is not None:
            await self.mirror.stop()
        if self.presence is not None:
            await self.presence.stop()
        if self.lease is not None:
            await self.lease.release()
        await self.events.close()
        if self.s3 is not None:
            await self.s3.close()
        if self.link is not None:
            await self.link.close()
        log.info("fleet_left", node=self.node)
