"""The ceiling: a bare asyncio server that only decodes and answers frames of the
edgenet protocol (hello, login, and an ``ok`` for every request), with no state,
no logging and no work. Run: ``python bench/bare_server.py`` (prints its port)."""

from __future__ import annotations

import asyncio
import json
import struct
import sys

_LEN = struct.Struct(">I")


async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            head = await reader.readexactly(4)
            (n,) = _LEN.unpack(head)
            fields = json.loads(await reader.readexactly(n))
            body = fields.get("body", 0)
            if body:
                await reader.readexactly(body)
            if fields.get("type") == "hello":
                reply = {"type": "hello", "version": 1, "server": "bare", "heartbeat": 10}
            else:
                reply = {"type": "ok", "id": fields.get("id")}
            raw = json.dumps(reply, separators=(",", ":")).encode()
            writer.write(_LEN.pack(len(raw)) + raw)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
