"""The ceiling: a bare asyncio server that only decodes and answers frames of the
edgenet protocol, with no state, no logging and no work. Run:
``python bench/bare_server.py [--devices N]`` (prints its port).

Without ``--devices`` every request gets a minimal ``ok``. With it, ``list_devices``
gets a reply of the same shape and size as the real server's with N devices
logged in (N - 1 entries, built once at start), so the comparison measures the
server's own work rather than the size of AED replies."""

from __future__ import annotations

import asyncio
import json
import struct
import sys

_LEN = struct.Struct(">I")


AED_DEVICES: list[bytes] = []


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
            if fields.get("type") == "list_devices" and AED_DEVICES:
                raw = raw[:-1] + b',"devices":[' + AED_DEVICES[0] + b"]}"
            writer.write(_LEN.pack(len(raw)) + raw)
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


def build_listing(devices: int) -> None:
    entries = [json.dumps({"name": f"dev{i}", "ip": "127.0.0.1", "udp_port": 20000 + i,
                           "since": 1764000000.123456, "since_text": "25 November 2026 18:00:00"},
                          separators=(",", ":")).encode() for i in range(1, devices)]
    AED_DEVICES.append(b",".join(entries))


async def main() -> None:
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--devices":
        build_listing(int(sys.argv[2]))
    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        sys.exit(0)
