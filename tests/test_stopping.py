"""``stop_loop`` ends a background loop even when a cancel is lost inside a library
call (as one was, inside redis-py, under load: a fleet node's shutdown then waited
for ever)."""

from __future__ import annotations

import asyncio

from edgenet.server.stopping import stop_loop


class Loop:
    def __init__(self) -> None:
        self.stopped = False
        self.rounds = 0
        self.swallowed = 0

    async def run(self) -> None:
        while not self.stopped:
            self.rounds += 1
            try:
                await asyncio.sleep(0.01)  # stands for a call that loses a cancel
            except asyncio.CancelledError:
                self.swallowed += 1  # lost: the loop goes on
            await asyncio.sleep(0.01)


async def test_a_loop_that_loses_its_cancel_still_stops() -> None:
    owner = Loop()
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0.05)
    await asyncio.wait_for(stop_loop(task, owner), 5)
    assert task.done() and owner.stopped
    # A cancel alone would not have ended it: this loop swallows the first one.
    again = Loop()
    lone = asyncio.create_task(again.run())
    await asyncio.sleep(0.005)
    lone.cancel()
    done, _ = await asyncio.wait({lone}, timeout=0.3)
    assert not done and again.swallowed == 1
    await stop_loop(lone, again)
    assert lone.done()


async def test_a_plain_loop_stops_at_the_first_cancel() -> None:
    owner = Loop()
    owner.run = lambda: asyncio.sleep(3600)  # type: ignore[method-assign]
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0)
    await asyncio.wait_for(stop_loop(task, owner), 1)
    assert task.cancelled()
