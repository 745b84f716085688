"""Log lines are batched per turn of the event loop, and none is lost."""

from __future__ import annotations

import asyncio
import io
import json

import pytest
import structlog

from edgenet.logconfig import LineBatcher, configure_logging


@pytest.fixture(autouse=True)
def _structlog_defaults() -> object:
    """configure_logging caches loggers on first use: the tests after these must get
    structlog's defaults back (``capture_logs`` works on uncached loggers)."""
    yield
    structlog.reset_defaults()


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, s: str) -> int:
        self.writes += 1
        return super().write(s)

    def isatty(self) -> bool:
        return False


async def test_one_write_per_loop_turn() -> None:
    stream = CountingStream()
    configure_logging("json", stream=stream)
    log = structlog.get_logger("t")
    for i in range(50):
        log.info("command", n=i)
    assert stream.writes == 0  # not yet: at the end of this turn of the loop
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert stream.writes == 1
    lines = stream.getvalue().splitlines()
    assert [json.loads(x)["n"] for x in lines] == list(range(50))


def test_without_a_loop_lines_are_written_at_once() -> None:
    stream = CountingStream()
    configure_logging("json", stream=stream)
    structlog.get_logger("t").warning("alone", x=1)
    assert json.loads(stream.getvalue())["event"] == "alone"


def test_flush_on_demand_and_bounded_pending() -> None:
    stream = CountingStream()
    b = LineBatcher(stream)
    for i in range(2000):  # no loop: written at once
        b.add(str(i))
    assert stream.getvalue().splitlines() == [str(i) for i in range(2000)]
