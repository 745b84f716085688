"""The client's standard input: a reader thread, and the terminal's modes kept safe.

``LineReader`` reads one line per ``read`` call on a daemon thread, so the event
loop keeps answering the server's pings while a read is blocked, and the process
can exit without waiting for the user. Interactive (stdin is a terminal):
``input()`` with its prompt, ``getpass`` for secrets; otherwise plain ``readline``
calls and the caller prints prompts. ``save_tty``/``restore_tty`` put the
terminal's modes back when the client leaves while getpass or input() is blocked
in the thread, so echo cannot stay turned off.
"""

from __future__ import annotations

import asyncio
import getpass
import queue
import sys
import threading
from contextlib import suppress
from typing import Any, TextIO


class LineReader:
    """One line per ``read`` call; ``None`` means end of input."""

    def __init__(self, stdin: TextIO, stdout: TextIO, interactive: bool) -> None:
        self._stdin = stdin
        self._stdout = stdout
        self.interactive = interactive
        # input() only works on the process's own streams.
        self._use_input = stdin is sys.stdin and stdout is sys.stdout
        #: At most one pending request: the shell reads one line at a time.
        self._requests: queue.SimpleQueue[tuple[asyncio.AbstractEventLoop,
                                                asyncio.Future[str | None], str, bool]]
        self._requests = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    async def read(self, prompt: str, secret: bool = False) -> str | None:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[str | None] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edgenet-stdin", daemon=True)
            self._thread.start()
        self._requests.put((loop, fut, prompt, secret))
        return await fut

    def _run(self) -> None:
        while True:
            loop, fut, prompt, secret = self._requests.get()
            try:
                line = self._read_one(prompt, secret)
            except (EOFError, OSError, ValueError, UnicodeDecodeError):
                line = None
            try:
                loop.call_soon_threadsafe(_set_result, fut, line)
            except RuntimeError:  # the loop is gone: nobody is waiting any more
                return

    def _read_one(self, prompt: str, secret: bool) -> str | None:
        if self.interactive:
            if secret:
                return getpass.getpass(prompt)
            if self._use_input:
                return input(prompt)
            self._stdout.write(prompt)
            self._stdout.flush()
        raw = self._stdin.readline()
        if not raw:
            return None
        return raw.rstrip("\r\n")


def _set_result(fut: asyncio.Future[str | None], line: str | None) -> None:
    if not fut.done():
        fut.set_result(line)


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def save_tty(stream: TextIO) -> Any:
    """The terminal's modes (None when ``stream`` is not a terminal)."""
    if not isatty(stream):
        return None
    try:
        import termios

        return termios.tcgetattr(stream.fileno())
    except (ImportError, OSError, ValueError):
        return None


def restore_tty(stream: TextIO, saved: Any) -> None:
    if saved is None:
        return
    with suppress(ImportError, OSError, ValueError):
        import termios

        termios.tcsetattr(stream.fileno(), termios.TCSADRAIN, saved)
