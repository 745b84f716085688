"""TransferEndpoint over real loopback UDP (127.0.0.1, OS-chosen ports)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from edgenet.rudp import TransferError, TransferEvent, TransferOptions
from edgenet.rudp import packet as pk
from edgenet.rudp import sidecar as sc
from edgenet.rudp.endpoint import TransferEndpoint
from tests.filedata import bench_uvf, make_file, sha

pytestmark = pytest.mark.timeout(60)


def visible(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def kept_partial(directory: Path, sender: str = "alpha", filename: str = "big.bin") -> list[str]:
    """The names a stopped transfer leaves for a resume (its partial file and record), after
    checking the record says what was received; no final file, no temp file."""
    key = sc.partial_key(sender, filename)
    record = sc.decode((directory / sc.sidecar_name(key)).read_bytes())
    partial = directory / sc.partial_name(key)
    assert (record.sender, record.filename) == (sender, filename)
    assert record.ranges == ((0, partial.stat().st_size),) and record.prefix >= 1_000_000
    assert partial.stat().st_mode & 0o777 == 0o600
    return sorted([sc.partial_name(key), sc.sidecar_name(key)])


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Callable[..., object]]:
    """Factory of bound endpoints, all closed at the end."""
    endpoints: list[TransferEndpoint] = []

    async def make(name: str, **kwargs: Any) -> TransferEndpoint:
        host = str(kwargs.pop("host", "127.0.0.1"))
        ep = await TransferEndpoint.bind(host, 0, tmp_path / name, **kwargs)
        endpoints.append(ep)
        return ep

    yield make
    for ep in endpoints:
        await ep.close()


async def test_50mb_file_arrives_intact(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "video.mp4", 50 * 10**6)
    events: list[TransferEvent] = []
    alpha = await pair("alpha")  # type: ignore[misc]
    beta = await pair("beta", on_event=events.append)  # type: ignore[misc]
    sent = await asyncio.wait_for(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"), 30)
    assert sent == src.stat().st_size
    saved = tmp_path / "beta" / "alpha_video.mp4"
    assert sha(saved) == sha(src)
    assert visible(tmp_path / "beta") == ["alpha_video.mp4"]  # no temp file left
    kinds = [e.kind for e in events if e.kind != "progress"]
    assert kinds == ["incoming_started", "incoming_done"]
    done = next(e for e in events if e.kind == "incoming_done")
    assert done.path == saved and done.peer_name == "alpha" and done.size == sent
    assert await alpha.wait_idle(2) and await beta.wait_idle(2)
    assert alpha.active_transfers() == beta.active_transfers() == 0


async def test_50mb_through_5_percent_loss_relay(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    bench = bench_uvf()
    src = make_file(tmp_path / "big.bin", 50 * 10**6, seed=2)
    alpha = await pair("alpha")  # type: ignore[misc]
    beta = await pair("beta")  # type: ignore[misc]
    relay, relay_port = bench.start_relay(beta.port, 0.05, seed=3)
    try:
        sent = await asyncio.wait_for(alpha.send_file(("127.0.0.1", relay_port), src, "alpha"), 40)
    finally:
        bench.stop_process(relay)
    out = relay.stdout.read()
    assert sent == src.stat().st_size
    assert sha(tmp_path / "beta" / "alpha_big.bin") == sha(src)
    assert "DROPPED" in out and int(out.split()[-1]) > 1000  # loss really was injected
    assert alpha.stats.retransmissions > 0
    assert visible(tmp_path / "beta") == ["alpha_big.bin"]


async def _wait_for_part(directory: Path, min_size: int, timeout: float = 10.0) -> None:
    for _ in range(int(timeout / 0.002)):
        parts = (
            [p for p in directory.iterdir() if p.name.endswith(".part")]
            if directory.exists()
            else []
        )
        if parts and parts[0].stat().st_size >= min_size:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("transfer never started")


async def test_receiver_killed_mid_transfer(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "big.bin", 50 * 10**6)
    opts = TransferOptions(idle_timeout=1.5)
    alpha = await pair("alpha", options=opts)  # type: ignore[misc]
    beta = await pair("beta", options=opts)  # type: ignore[misc]
    task = asyncio.ensure_future(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"))
    await _wait_for_part(tmp_path / "beta", 1_000_000)
    loop = asyncio.get_running_loop()
    await beta.close(notify_peers=False)  # abrupt: the sender hears nothing more
    killed = loop.time()
    with pytest.raises(TransferError) as info:
        await asyncio.wait_for(task, 10)
    assert info.value.code == "timeout"
    assert loop.time() - killed < 1.5 + 1.0
    # Neither a final file nor the temp file: the part received, kept for a resume.
    assert visible(tmp_path / "beta") == kept_partial(tmp_path / "beta")
    assert alpha.active_transfers() == 0


async def test_receiver_closing_tells_sender(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "big.bin", 50 * 10**6)
    alpha = await pair("alpha")  # type: ignore[misc]
    beta = await pair("beta")  # type: ignore[misc]
    task = asyncio.ensure_future(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"))
    await _wait_for_part(tmp_path / "beta", 1_000_000)
    await beta.close()
    with pytest.raises(TransferError) as info:
        await asyncio.wait_for(task, 5)
    assert info.value.code == "closed" and "peer" in info.value.message
    assert visible(tmp_path / "beta") == kept_partial(tmp_path / "beta")


async def test_sender_killed_receiver_cleans_up(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    src = make_file(tmp_path / "big.bin", 50 * 10**6)
    opts = TransferOptions(idle_timeout=1.0)
    events: list[TransferEvent] = []
    alpha = await pair("alpha", options=opts)  # type: ignore[misc]
    beta = await pair("beta", options=opts, on_event=events.append)  # type: ignore[misc]
    task = asyncio.ensure_future(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"))
    await _wait_for_part(tmp_path / "beta", 1_000_000)
    await alpha.close(notify_peers=False)
    with pytest.raises(TransferError):
        await task
    assert await beta.wait_idle(3.0)
    failed = [e for e in events if e.kind == "incoming_failed"]
    assert failed and failed[0].code == "timeout"
    assert visible(tmp_path / "beta") == kept_partial(tmp_path / "beta")


async def test_existing_file_gets_numbered_name(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    src = make_file(tmp_path / "notes.txt", 10_000)
    alpha = await pair("alpha")  # type: ignore[misc]
    beta = await pair("beta")  # type: ignore[misc]
    (tmp_path / "beta" / "alpha_notes.txt").write_bytes(b"keep me")
    for _ in range(2):
        await asyncio.wait_for(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"), 10)
    assert (tmp_path / "beta" / "alpha_notes.txt").read_bytes() == b"keep me"
    assert visible(tmp_path / "beta") == [
        "alpha_notes (1).txt",
        "alpha_notes (2).txt",
        "alpha_notes.txt",
    ]
    assert (tmp_path / "beta" / "alpha_notes (2).txt").read_bytes() == src.read_bytes()


async def test_empty_file(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = tmp_path / "empty"
    src.write_bytes(b"")
    alpha = await pair("alpha")  # type: ignore[misc]
    beta = await pair("beta")  # type: ignore[misc]
    assert await asyncio.wait_for(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"), 10) == 0
    assert (tmp_path / "beta" / "alpha_empty").read_bytes() == b""


BAD_OFFERS = [
    ("alpha", "../escape.txt"),
    ("alpha", "/etc/passwd"),
    ("alpha", "a/b"),
    ("alpha", "a\\b"),
    ("alpha", ""),
    ("alpha", "."),
    ("alpha", ".."),
    ("alpha", "bell\x07.txt"),
    ("alpha", "x" * 250),  # the saved name alpha_xxx... is over 255 bytes
    ("", "file.txt"),
    ("..", "file.txt"),
    ("a/b", "file.txt"),
    ("al\npha", "file.txt"),
    ("alpha", "C:evil.txt"),
]


async def test_unsafe_names_are_refused(tmp_path: Path, pair: Callable[..., object]) -> None:
    beta = await pair("beta")  # type: ignore[misc]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(5)
        for i, (sender, name) in enumerate(BAD_OFFERS):
            offer = pk.Offer(
                1000 + i, 10, 1400, hashlib.sha256(b"0123456789").digest(), sender, name, 0
            )
            s.sendto(pk.encode_offer(offer), ("127.0.0.1", beta.port))
            reply = pk.decode((await asyncio.to_thread(s.recvfrom, 2048))[0])
            assert isinstance(reply, pk.Abort) and reply.transfer_id == 1000 + i, (sender, name)
            assert reply.code == "bad_name", (sender, name, reply)
    assert beta.stats.offers_refused == len(BAD_OFFERS)
    assert visible(tmp_path / "beta") == []
    assert visible(tmp_path) == ["beta"]  # nothing written outside the data dir either


async def test_sender_side_name_checks(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "ok.bin", 10)
    alpha = await pair("alpha")  # type: ignore[misc]
    for bad in ("", "a/b", "..", "x\x00"):
        with pytest.raises(TransferError) as info:
            await alpha.send_file(("127.0.0.1", 9), src, bad)
        assert info.value.code == "bad_name"
    with pytest.raises(TransferError) as info:
        await alpha.send_file(("127.0.0.1", 9), tmp_path / "missing.bin", "alpha")
    assert info.value.code == "unreadable"


async def test_too_large_and_busy_are_reported_to_sender(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    src = make_file(tmp_path / "f.bin", 100_000)
    alpha = await pair("alpha")  # type: ignore[misc]
    small = await pair("small", options=TransferOptions(max_file_size=50_000))  # type: ignore[misc]
    full = await pair("full", options=TransferOptions(max_incoming=0))  # type: ignore[misc]
    with pytest.raises(TransferError) as info:
        await asyncio.wait_for(alpha.send_file(("127.0.0.1", small.port), src, "alpha"), 10)
    assert info.value.code == "too_large" and "50000" in info.value.message
    with pytest.raises(TransferError) as info:
        await asyncio.wait_for(alpha.send_file(("127.0.0.1", full.port), src, "alpha"), 10)
    assert info.value.code == "busy"
    assert visible(tmp_path / "small") == visible(tmp_path / "full") == []


async def test_no_answer_times_out(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "f.bin", 1000)
    alpha = await pair("alpha", options=TransferOptions(idle_timeout=0.5, initial_rto=0.1))  # type: ignore[misc]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as hole:
        hole.bind(("127.0.0.1", 0))
        with pytest.raises(TransferError) as info:
            await asyncio.wait_for(alpha.send_file(hole.getsockname(), src, "alpha"), 5)
        assert info.value.code == "timeout"
        offers = 0
        hole.setblocking(False)
        while True:
            try:
                offers += isinstance(pk.decode(hole.recv(2048)), pk.Offer)
            except BlockingIOError:
                break
        assert offers >= 2  # the offer was retransmitted


async def test_third_party_datagrams_are_counted_and_harmless(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    src = make_file(tmp_path / "f.bin", 20 * 10**6)
    alpha = await pair("alpha")  # type: ignore[misc]
    rogue = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rogue.bind(("127.0.0.1", 0))
    rng = random.Random(5)
    injected = {"bursts": 0}

    def inject(tid: int, beta_port: int) -> None:
        for i in range(20):
            rogue.sendto(rng.randbytes(rng.randrange(0, 1500)), ("127.0.0.1", beta_port))
            rogue.sendto(b"UV\x09\x03" + rng.randbytes(30), ("127.0.0.1", beta_port))  # bad version
            rogue.sendto(
                pk.encode_data(pk.Data(tid, i, 0, b"\xee" * 1400)), ("127.0.0.1", beta_port)
            )
            rogue.sendto(
                pk.encode_ack(pk.Ack(tid, 10**6, 10**6, 0, 0, ())), ("127.0.0.1", alpha.port)
            )
            rogue.sendto(pk.encode_data(pk.Data(tid ^ 1, i, 0, b"x")), ("127.0.0.1", beta_port))
        injected["bursts"] += 1

    def on_event(ev: TransferEvent) -> None:
        if ev.kind == "incoming_started":
            inject(int(ev.transfer_id, 16), beta_port)

    beta = await pair("beta", on_event=on_event)  # type: ignore[misc]
    beta_port = beta.port
    try:
        sent = await asyncio.wait_for(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"), 30)
    finally:
        rogue.close()
    assert injected["bursts"] == 1
    assert sent == src.stat().st_size
    assert sha(tmp_path / "beta" / "alpha_f.bin") == sha(src)
    assert beta.stats.dropped_wrong_peer >= 20
    assert alpha.stats.dropped_wrong_peer >= 20
    assert beta.stats.dropped_unknown >= 20
    assert beta.stats.dropped_bad_version >= 20
    assert (
        beta.stats.dropped_malformed + beta.stats.dropped_unknown + beta.stats.dropped_bad_version
        >= 40
    )


async def test_concurrent_transfers_both_directions(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    alpha = await pair("alpha")  # type: ignore[misc]
    beta = await pair("beta")  # type: ignore[misc]
    gamma = await pair("gamma")  # type: ignore[misc]
    eps = {"alpha": alpha, "beta": beta, "gamma": gamma}
    plan = [
        ("alpha", "beta"),
        ("beta", "alpha"),
        ("gamma", "alpha"),
        ("alpha", "gamma"),
        ("gamma", "beta"),
        ("alpha", "beta"),
    ]
    jobs = []
    sources = {}
    for i, (frm, to) in enumerate(plan):
        src = make_file(tmp_path / f"file{i}.bin", 3_000_000 + i * 1000, seed=i)
        sources[(frm, to, i)] = src
        jobs.append(eps[frm].send_file(("127.0.0.1", eps[to].port), src, frm))
    results = await asyncio.wait_for(asyncio.gather(*jobs), 30)
    assert results == [3_000_000 + i * 1000 for i in range(len(plan))]
    for (frm, to, i), src in sources.items():
        assert sha(tmp_path / to / f"{frm}_file{i}.bin") == sha(src)
    for ep in eps.values():
        assert await ep.wait_idle(2)


async def test_ipv6_socket_serves_ipv4_and_ipv6_peers(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    src = make_file(tmp_path / "f.bin", 2_000_000)
    try:
        dual = await pair("dual", host="::")  # type: ignore[misc]
    except OSError:
        pytest.skip("cannot bind ::")
    v4 = await pair("v4")  # type: ignore[misc]
    assert (
        await asyncio.wait_for(v4.send_file(("127.0.0.1", dual.port), src, "four"), 10) == 2_000_000
    )
    assert (
        await asyncio.wait_for(dual.send_file(("127.0.0.1", v4.port), src, "dual"), 10) == 2_000_000
    )
    try:
        v6 = await pair("v6", host="::1")  # type: ignore[misc]
    except OSError:
        pytest.skip("no ::1")
    assert await asyncio.wait_for(v6.send_file(("::1", dual.port), src, "six"), 10) == 2_000_000
    assert sorted(visible(tmp_path / "dual")) == ["four_f.bin", "six_f.bin"]
    assert sha(tmp_path / "v4" / "dual_f.bin") == sha(src)


async def test_plain_socket_path_without_gso_gro(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    src = make_file(tmp_path / "f.bin", 5_000_000)
    opts = TransferOptions(use_gso=False, use_gro=False)
    alpha = await pair("alpha", options=opts)  # type: ignore[misc]
    beta = await pair("beta", options=opts)  # type: ignore[misc]
    assert (
        await asyncio.wait_for(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"), 20)
        == 5_000_000
    )
    assert sha(tmp_path / "beta" / "alpha_f.bin") == sha(src)


async def test_large_chunk_option(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "f.bin", 5_000_000 + 7)
    alpha = await pair("alpha", options=TransferOptions(chunk_size=8192))  # type: ignore[misc]
    beta = await pair("beta")  # type: ignore[misc]
    assert (
        await asyncio.wait_for(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"), 20)
        == 5_000_007
    )
    assert sha(tmp_path / "beta" / "alpha_f.bin") == sha(src)


async def test_adopts_a_bound_socket(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "f.bin", 1_000_000)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    adopted = await TransferEndpoint.from_socket(sock, tmp_path / "adopted")
    try:
        assert adopted.port == port
        alpha = await pair("alpha")  # type: ignore[misc]
        assert (
            await asyncio.wait_for(alpha.send_file(("127.0.0.1", port), src, "alpha"), 10)
            == 1_000_000
        )
        assert sha(tmp_path / "adopted" / "alpha_f.bin") == sha(src)
    finally:
        await adopted.close()
    assert sock.fileno() == -1  # closed with the endpoint


async def test_bind_taken_port_raises_oserror(tmp_path: Path, pair: Callable[..., object]) -> None:
    alpha = await pair("alpha")  # type: ignore[misc]
    with pytest.raises(OSError):
        await TransferEndpoint.bind("127.0.0.1", alpha.port, tmp_path / "other")


async def test_cancelled_send_aborts_receiver(tmp_path: Path, pair: Callable[..., object]) -> None:
    src = make_file(tmp_path / "big.bin", 50 * 10**6)
    alpha = await pair("alpha")  # type: ignore[misc]
    events: list[TransferEvent] = []
    beta = await pair("beta", on_event=events.append)  # type: ignore[misc]
    task = asyncio.ensure_future(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"))
    await _wait_for_part(tmp_path / "beta", 1_000_000)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await beta.wait_idle(3)
    assert [e.code for e in events if e.kind == "incoming_failed"] == ["cancelled"]
    assert visible(tmp_path / "beta") == kept_partial(tmp_path / "beta")


async def test_a_new_sender_resumes_the_part_a_killed_one_left(
    tmp_path: Path, pair: Callable[..., object]
) -> None:
    src = make_file(tmp_path / "big.bin", 30 * 10**6)
    opts = TransferOptions(idle_timeout=1.0)
    events: list[TransferEvent] = []
    alpha = await pair("alpha", options=opts)  # type: ignore[misc]
    beta = await pair("beta", options=opts, on_event=events.append)  # type: ignore[misc]
    task = asyncio.ensure_future(alpha.send_file(("127.0.0.1", beta.port), src, "alpha"))
    await _wait_for_part(tmp_path / "beta", 3_000_000)
    await alpha.close(notify_peers=False)  # as a kill -9: the receiver hears nothing more
    with pytest.raises(TransferError):
        await task
    assert await beta.wait_idle(5.0)
    kept = kept_partial(tmp_path / "beta")
    again = await pair("alpha2", options=opts)  # type: ignore[misc]
    sent = await asyncio.wait_for(again.send(("127.0.0.1", beta.port), src, "alpha"), 30)
    assert sent.size == 30 * 10**6 and 3_000_000 <= sent.resumed_at < sent.size
    assert sha(tmp_path / "beta" / "alpha_big.bin") == sha(src)
    assert visible(tmp_path / "beta") == ["alpha_big.bin"]  # the partial and record are gone
    assert kept and beta.stats.transfers_resumed == 1
    done = [e for e in events if e.kind == "incoming_done"]
    assert done[-1].resumed_at == sent.resumed_at


if sys.platform != "linux":  # pragma: no cover - the suite targets Linux CI
    pytestmark = [pytestmark, pytest.mark.skip("loopback tests tuned for Linux")]  # type: ignore[list-item]
_ = os
