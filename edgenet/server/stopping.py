"""Stopping a background loop that reads shared state, for sure and in bounded time.

A cancel alone is not enough for a loop that calls a fleet's Redis: one that lands
while a call waits for the connection pool was seen lost inside redis-py under load
(the loop went on, and the shutdown waited for it for ever). So the loop checks its
owner's ``stopped`` flag too, and the cancel is repeated, a bounded number of times,
until the task ends.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, Protocol

#: Tries, and seconds each waits for the task to end after its cancel.
TRIES, WAIT = 20, 0.5


class Stoppable(Protocol):
    stopped: bool


async def stop_loop(task: asyncio.Task[Any], owner: Stoppable) -> None:
    owner.stopped = True
    for _ in range(TRIES):
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=WAIT)
        if done:
            break
    if task.done() and not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()
