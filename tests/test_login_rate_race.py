"""Issue 12, item 12: ``--login-rate`` holds under concurrency.

With hashed credentials a password check runs in a worker thread, so guesses
from one address overlap. The attempt must be counted before the check, in one
step with the decision to judge it: of 30 concurrent guesses on 30 names from
one address with ``--login-rate 5``, at most 5 are judged and the rest are
refused ``rate_limited``. Through a real server process over loopback.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

from edgenet.server.passwords import hash_password
from tests.conftest import ServerProcess, server_argv
from tests.wireclient import WireDevice

NAMES = [f"dev{i:02d}" for i in range(30)]
RATE = 5
#: Slow enough that 30 checks overlap in the worker threads (about 50 ms each).
ITERATIONS = 100_000


async def _guess_all(port: int) -> Counter[str]:
    devices = await asyncio.gather(*(WireDevice.connect(port) for _ in NAMES))
    try:
        replies = await asyncio.gather(*(d.login(n, "wrong-guess") for d, n in zip(devices, NAMES)))
    finally:
        await asyncio.gather(*(d.close() for d in devices))
    return Counter(str(r.get("code", r.get("type"))) for r in replies)


def test_concurrent_guesses_from_one_address_are_held_to_the_login_rate(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.txt"
    creds.write_text("".join(f"{n} {hash_password('right-' + n, ITERATIONS)}\n" for n in NAMES))
    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--no-admin",
        "--login-rate", str(RATE)], data)
    try:
        counts = asyncio.run(_guess_all(server.port))
        judged = counts["auth_failed"] + counts["blocked"]
        assert judged <= RATE, counts
        assert judged >= 1, counts
        assert counts["rate_limited"] == len(NAMES) - judged, counts
        # Events are written at the end of the server loop's turn, after the replies.
        deadline = time.monotonic() + 5
        while True:
            events = [e.get("event") for e in server.read_events()]
            if events.count("login_rate_limited") >= len(NAMES) - judged \
                    and events.count("login_failed") >= judged or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert events.count("login_failed") == judged
        assert events.count("login_rate_limited") == len(NAMES) - judged
        assert server.proc.poll() is None
    finally:
        server.stop()


async def _right_then_wrong(port: int) -> tuple[list[str], str]:
    # Correct logins give their token back: after 10 of them (twice the rate),
    # concurrently, a guess is still judged rather than refused.
    devices = await asyncio.gather(*(WireDevice.connect(port) for _ in range(10)))
    try:
        oks = []
        for batch in (devices[:RATE - 1], devices[RATE - 1:2 * (RATE - 1)]):
            replies = await asyncio.gather(*(d.login(NAMES[i], "right-" + NAMES[i])
                                             for i, d in enumerate(batch)))
            oks += [str(r.get("type")) for r in replies]
        probe = await WireDevice.connect(port)
        reply = await probe.login(NAMES[-1], "wrong-guess")
        await probe.close()
    finally:
        await asyncio.gather(*(d.close() for d in devices))
    return oks, str(reply.get("code"))


def test_correct_logins_do_not_use_up_the_login_rate(tmp_path: Path) -> None:
    creds = tmp_path / "credentials.txt"
    creds.write_text("".join(f"{n} {hash_password('right-' + n, ITERATIONS)}\n" for n in NAMES))
    data = tmp_path / "server"
    data.mkdir()
    server = ServerProcess(server_argv() + [
        "server", "0", "3", "--host", "127.0.0.1", "--credentials", str(creds),
        "--data-dir", str(data), "--log-format", "json", "--no-admin",
        "--login-rate", str(RATE)], data)
    try:
        oks, probe = asyncio.run(_right_then_wrong(server.port))
        assert oks == ["ok"] * (2 * (RATE - 1)), oks
        assert probe == "auth_failed"
    finally:
        server.stop()


def test_reserve_takes_the_token_at_once_and_refund_gives_it_back() -> None:
    from edgenet.server.limits import LoginRateLimiter
    lim = LoginRateLimiter(3)
    assert [lim.reserve("192.0.2.1", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert lim.reserve("192.0.2.1", 0.0) == 20.0  # none left: one comes back in 60/3 s
    lim.refund("192.0.2.1", 0.0)
    assert lim.reserve("192.0.2.1", 0.0) == 0.0
    assert lim.reserve("192.0.2.2", 0.0) == 0.0  # another address has its own bucket
    assert LoginRateLimiter(0).reserve("192.0.2.1", 0.0) == 0.0
