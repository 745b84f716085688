"""Hostile datagrams at a UVF receiver (and sender) while a real transfer runs: random
bytes, valid-looking datagrams of every type with random transfer ids, and datagrams
carrying the real transfer id from another address. The file still arrives
byte-identical and nothing else is left in the receiver's folder."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import socket
from pathlib import Path

import pytest

from edgenet.rudp import TransferEvent, TransferOptions
from edgenet.rudp import packet as pk
from edgenet.rudp.endpoint import TransferEndpoint
from tests.filedata import sha

pytestmark = pytest.mark.timeout(60)


def hostile_datagram(rng: random.Random, real_tid: int | None) -> bytes:
    r = rng.random()
    tid = real_tid if (real_tid is not None and rng.random() < 0.4) else rng.getrandbits(64)
    if r < 0.25:
        return rng.randbytes(rng.randint(0, 1500))
    if r < 0.35:  # a valid header, then garbage
        return pk.HEADER.pack(pk.MAGIC, pk.VERSION, rng.randint(0, 12), tid) + \
            rng.randbytes(rng.randint(0, 200))
    if r < 0.40:  # another version
        return pk.HEADER.pack(pk.MAGIC, rng.randint(2, 255), 3, tid) + rng.randbytes(40)
    kind = rng.randrange(8)
    try:
        if kind == 0:
            return pk.encode(pk.Offer(tid, rng.randint(0, 2**40), 1400, rng.randbytes(32),
                                      "evil", rng.choice(["x.bin", "../../etc/passwd", ".hidden",
                                                          "a" * 200]), 0))
        if kind == 1:
            return pk.encode(pk.Data(tid, rng.randint(0, 20_000), 0, rng.randbytes(1400)))
        if kind == 2:
            return pk.encode(pk.Ack(tid, rng.randint(0, 2**32 - 1), rng.randint(0, 2**32 - 1),
                                    0, 0, ()))
        if kind == 3:
            return pk.encode(pk.Fin(tid, 0))
        if kind == 4:
            return pk.encode(pk.Done(tid, "evil.bin"))
        if kind == 5:
            return pk.encode(pk.Close(tid))
        if kind == 6:
            return pk.encode(pk.Abort(tid, "evil", "stop it"))
        return pk.encode(pk.Accept(tid, rng.randint(0, 2**32 - 1), 0))
    except (ValueError, pk.PacketError):
        return rng.randbytes(30)


async def test_hostile_datagrams_during_a_transfer(tmp_path: Path) -> None:
    rng = random.Random(3)
    src = tmp_path / "data.bin"
    src.write_bytes(rng.randbytes(50 * 10**6))
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def on_event(ev: TransferEvent) -> None:
        if ev.kind == "incoming_started" and ev.peer_name and not started.done() \
                and ev.filename == "data.bin":
            started.set_result(ev.transfer_id)

    opts = TransferOptions(idle_timeout=3.0)
    alpha = await TransferEndpoint.bind("127.0.0.1", 0, tmp_path / "alpha", options=opts)
    beta = await TransferEndpoint.bind("127.0.0.1", 0, tmp_path / "beta", options=opts,
                                       on_event=on_event)
    attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    attacker.setblocking(False)
    attacker.bind(("127.0.0.1", 0))
    sent = 0
    try:
        transfer = asyncio.ensure_future(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"))
        tid_hex = await asyncio.wait_for(started, 10)
        real_tid = int(tid_hex, 16) if tid_hex else None
        for burst in range(2000):
            if transfer.done():
                break
            for _ in range(100):
                target = beta.port if rng.random() < 0.8 else alpha.port
                with contextlib.suppress(OSError):  # a full buffer or a refusal: the next one
                    attacker.sendto(hostile_datagram(rng, real_tid), ("127.0.0.1", target))
                    sent += 1
            await asyncio.sleep(0)
        size = await asyncio.wait_for(transfer, 40)
        assert size == src.stat().st_size
        assert sent >= 2000, sent
        assert beta.stats.dropped_malformed + beta.stats.dropped_bad_version \
            + beta.stats.dropped_unknown + beta.stats.dropped_wrong_peer > 0
        saved = tmp_path / "beta" / "alpha_data.bin"
        assert sha(saved) == sha(src)
    finally:
        attacker.close()
        await alpha.close()
        await beta.close()
    # Nothing but the real file is left (hostile offers never became files).
    assert sorted(os.listdir(tmp_path / "beta")) == ["alpha_data.bin"]
