"""One side of the upload benchmark, run as its own process.

    python bench/upload_peer.py ued HOST PORT FILE        # UED through the real client code
    python bench/upload_peer.py raw-send HOST PORT FILE   # raw TCP copy, sender
    python bench/upload_peer.py raw-recv DIR              # raw TCP copy, receiver (prints its port)

Prints the seconds from the first byte sent to the acknowledgement.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path

CHUNK = 256 * 1024


async def ued(host: str, port: int, path: Path) -> float:
    from edgenet.client.dial import open_link
    from edgenet.wire import messages as m

    link = await open_link(host, port)
    await link.hello()
    login = await link.login("dev0", "pw0", 1)
    assert isinstance(login, m.LoginOk), login
    t0 = time.perf_counter()
    uploaded = await link.upload(1, path, timeout=600)
    elapsed = time.perf_counter() - t0
    assert isinstance(uploaded, m.UploadOk), uploaded
    await link.close()
    return elapsed


async def raw_send(host: str, port: int, path: Path) -> float:
    reader, writer = await asyncio.open_connection(host, port)
    t0 = time.perf_counter()
    size = path.stat().st_size
    writer.write(size.to_bytes(8, "big"))
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            writer.write(chunk)
            await writer.drain()
    assert await reader.readexactly(1) == b"k"
    elapsed = time.perf_counter() - t0
    writer.close()
    return elapsed


async def raw_recv(folder: Path) -> None:
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        size = int.from_bytes(await reader.readexactly(8), "big")
        target = folder / "raw-copy.bin"
        with target.open("wb") as fh:
            left = size
            while left:
                chunk = await reader.read(min(CHUNK, left))
                if not chunk:
                    raise ConnectionError("short")
                fh.write(chunk)
                left -= len(chunk)
            fh.flush()
            os.fsync(fh.fileno())
        writer.write(b"k")
        await writer.drain()
        writer.close()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.wait_for(done.wait(), 600)
    server.close()


def main() -> None:
    mode = sys.argv[1]
    if mode == "ued":
        print(asyncio.run(ued(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))))
    elif mode == "raw-send":
        print(asyncio.run(raw_send(sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))))
    else:
        asyncio.run(raw_recv(Path(sys.argv[2])))


if __name__ == "__main__":
    main()
