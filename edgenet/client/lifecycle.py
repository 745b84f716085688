"""A device session's life from start to exit status, shared by the shell and the
headless device: signals, the logout on the way out, and closing what it opened.

``run_session`` runs a ``Session`` (the shell, or a headless device) to its end.
Ctrl-C (SIGINT) logs out and gives 130; SIGTERM (a service manager stopping the
device) logs out cleanly and gives 0; either way the session is closed.
"""

from __future__ import annotations

import asyncio
import signal
from contextlib import suppress
from typing import Final, Protocol

import structlog

log = structlog.get_logger("edgenet.client")

EXIT_OK: Final = 0
EXIT_INTERRUPTED: Final = 130


class Session(Protocol):
    """What ``run_session`` drives."""

    async def run(self) -> int: ...

    async def logout_quietly(self) -> None: ...

    def interrupted(self) -> None: ...

    async def close(self) -> None: ...


async def run_session(session: Session) -> int:
    """Run ``session`` until it ends; returns the exit status."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(session.run())
    stopped_by: signal.Signals | None = None

    def on_signal(sig: signal.Signals) -> None:
        nonlocal stopped_by
        if stopped_by is None:
            stopped_by = sig
            task.cancel()

    handled = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, on_signal, sig)
            handled.append(sig)
    try:
        return await task
    except asyncio.CancelledError:
        if stopped_by is None:
            raise
        await session.logout_quietly()
        if stopped_by == signal.SIGTERM:
            log.info("stopped", signal="SIGTERM")
            return EXIT_OK
        session.interrupted()
        return EXIT_INTERRUPTED
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)
        await session.close()
