"""Kicks between nodes are not lost while a node reconnects: they wait in the node's
Redis Stream, read from the last entry handled. Real Redis (the session's), two
nodes' presences in this process, the reading node's connection killed by Redis
itself (CLIENT KILL) just before another node kicks its device."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from edgenet.backends.redis_presence import RedisPresence
from edgenet.backends.redislink import RedisLink
from edgenet.server.interfaces import ActiveDevice
from tests.engines import RedisEngine


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path, redis_engine: RedisEngine) -> AsyncIterator[
        tuple[RedisPresence, RedisPresence, list[tuple[str, str]]]]:
    """Presences of nodes A (started: it reads its kicks) and B (not started) in a
    fleet of their own, and the evictions A announces."""
    prefix = f"kick{abs(hash(str(tmp_path))) % 10**8}"
    a_link = RedisLink(redis_engine.url, prefix, "node-a")
    b_link = RedisLink(redis_engine.url, prefix, "node-b")
    a, b = RedisPresence(a_link), RedisPresence(b_link)
    told: list[tuple[str, str]] = []

    def evicted(dev: ActiveDevice, reason: str) -> None:
        told.append((dev.name, reason))
    a.on_evict(evicted)
    await a.start()
    try:
        yield a, b, told
    finally:
        await a.stop()
        await b.stop()
        await a_link.close()
        await b_link.close()


async def test_a_kick_sent_while_the_node_reconnects_arrives(tmp_path: Path,
                                                            redis_engine: RedisEngine) -> None:
    async with two_nodes(tmp_path, redis_engine) as (a, b, told):
        await b.start()
        await a.join("alpha", "192.0.2.1", 9, 1.0)
        # Node A's blocking read (XREAD BLOCK on its stream) is cut by Redis: the
        # connection of A's blocking client that Redis shows running XREAD.
        mine = set()
        for _ in range(50):
            pool = a.link.blocking.connection_pool
            for conn in [*pool._in_use_connections, *pool._available_connections]:
                writer = getattr(conn, "_writer", None)
                if writer is not None:
                    host, port = writer.get_extra_info("sockname")[:2]
                    mine.add(f"{host}:{port}")
            reading = [c for c in await b.link.redis.client_list()
                       if c.get("cmd") == "xread" and c.get("addr") in mine]
            if reading:
                break
            await asyncio.sleep(0.05)
        assert len(reading) == 1, reading
        await b.link.redis.execute_command("CLIENT", "KILL", "ID", reading[0]["id"])
        # Meanwhile node B's operator kicks alpha (held by node A).
        removed = await b.evict("alpha", "disconnected")
        assert removed is not None and removed.node == "node-a"
        for _ in range(100):  # A reconnects (backoff 0.1 s) and reads what it missed
            if told:
                break
            await asyncio.sleep(0.05)
        assert told == [("alpha", "disconnected")]
        assert a.link.outages == 1  # it was delivered after A's reader reconnected
        assert await b.get("alpha") is None


async def test_a_session_kicked_while_the_node_was_cut_off_is_not_put_back(
        tmp_path: Path, redis_engine: RedisEngine) -> None:
    """The resync after an outage handles the kicks it missed before it puts its
    sessions back: node B evicted alpha while A could not read its stream (A's
    kick reader is stopped here, so the kick is certainly unread when A resyncs)."""
    async with two_nodes(tmp_path, redis_engine) as (a, b, told):
        joined = await a.join("alpha", "192.0.2.1", 9, 1.0)
        kept = await a.join("beta", "192.0.2.2", 9, 1.0)
        await a.stop()  # A hears no kick from now on
        removed = await b.evict("alpha", "disconnected")
        assert removed is not None and removed.session_id == joined.device.session_id
        assert told == []
        # The restore script alone refuses the kicked session (a kick sent after the
        # resync read the stream) and keeps the other one.
        assert await a.restore(joined.device) == "kicked"
        assert await a.restore(kept.device) == "kept"
        await a.resync()
        assert told == [("alpha", "disconnected")]
        assert await b.get("alpha") is None
        beta = await b.get("beta")
        assert beta is not None and beta.session_id == kept.device.session_id
        await a.resync()  # the kick is handled once
        assert told == [("alpha", "disconnected")]
