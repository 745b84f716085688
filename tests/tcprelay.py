"""A TCP relay for tests of cut links: it forwards loopback connections to a server,
counts the bytes each connection sent towards it, and can cut the first connection
after N bytes (closing both sides) or hold it after N bytes (forwarding no more until
told); and sample data files for uploads."""

from __future__ import annotations

import asyncio
import contextlib
import random
from pathlib import Path


class TcpRelay:
    def __init__(self, upstream_port: int, cut_after: int | None = None,
                 hold_after: int | None = None) -> None:
        #: Where connections go (a test may change it: a server restarted elsewhere).
        self.upstream_port = upstream_port
        self.cut_after = cut_after
        self.hold_after = hold_after
        #: Bytes each connection (in order) sent towards the server.
        self.sent: list[int] = []
        self.held = asyncio.Event()
        self._release = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    async def start(self) -> TcpRelay:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def drop_all(self) -> None:
        """Close every connection now, both sides."""
        for w in list(self._writers):
            w.transport.abort()

    async def close(self) -> None:
        self.drop_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = len(self.sent)
        self.sent.append(0)
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_w))
        first = index == 0

        async def towards_server() -> None:
            while data := await reader.read(65536):
                limit = self.cut_after if first else None
                hold = self.hold_after if first else None
                if limit is not None and self.sent[index] + len(data) >= limit:
                    data = data[:limit - self.sent[index]]
                    up_w.write(data)
                    self.sent[index] += len(data)
                    await up_w.drain()
                    await asyncio.sleep(0.2)  # it reaches the server before the cut
                    return
                if hold is not None and self.sent[index] + len(data) >= hold:
                    up_w.write(data)
                    self.sent[index] += len(data)
                    await up_w.drain()
                    self.held.set()
                    await self._release.wait()
                    continue
                up_w.write(data)
                self.sent[index] += len(data)
                await up_w.drain()

        async def towards_device() -> None:
            while data := await up_r.read(65536):
                writer.write(data)
                await writer.drain()

        tasks = {asyncio.ensure_future(towards_server()), asyncio.ensure_future(towards_device())}
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await t
            for w in (writer, up_w):
                w.transport.abort()
                self._writers.discard(w)


def sample_file(path: Path, size: int, seed: int = 1) -> Path:
    """About ``size`` bytes of valid samples (one integer per line), fast to make: a
    block of random lines, repeated, each copy led by its own number, so that no two
    stretches of the file are alike."""
    rng = random.Random(seed)
    block = b"".join(b"%d\n" % rng.randint(-99999, 99999) for _ in range(100_003))
    path.parent.mkdir(parents=True, exist_ok=True)
    written = 0
    with open(path, "wb") as fh:
        copy = 0
        while written < size:
            piece = b"%d\n" % (copy * 7919 + seed) + block
            fh.write(piece)
            written += len(piece)
            copy += 1
    return path
