"""The edge device's shell: start-up, login, then one command per line.

The same code serves a person at a terminal and a script on stdin. Lines are
read by a daemon thread (``LineReader``) one request at a time, so the event
loop keeps answering the server's pings while a read is blocked, and the
process can exit without waiting for the user. Messages for the user are plain
lines on ``stdout``; the client's own diagnostics go to structlog.

Exit status: 0 after OUT, end of input or SIGTERM (which logs out first), 1
when start-up, login or the connection fails, 130 after Ctrl-C. Running
commands is shared with the headless device (``edgenet.client.execute``).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import queue
import signal
import sys
import threading
from contextlib import suppress
from typing import Any, Protocol, TextIO

import structlog

from edgenet.client import commands as c
from edgenet.client.connection import (
    ConnectFailed,
    ReplyTimeout,
    ServerConnection,
    ServerGone,
    client_tls,
    resolve,
)
from edgenet.client.console import PromptConsole
from edgenet.client.execute import execute_command
from edgenet.client.peer import LookupFailed, PeerBindError, PeerLink
from edgenet.config import ClientConfig
from edgenet.logconfig import configure_logging
from edgenet.wire.messages import MAX_PASSWORD

log = structlog.get_logger("edgenet.client")

PROMPT = "> "
LOGOUT_TIMEOUT = 5.0

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130


class _Finish(Exception):
    """End the session with this exit status (its message is already printed)."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class LineReader:
    """Reads one line per ``read`` call on a daemon thread.

    Interactive (stdin is a terminal): ``input()`` with its prompt, ``getpass``
    for secrets. Otherwise plain ``readline`` calls; the caller prints prompts.
    ``None`` means end of input.
    """

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


class Shell:
    def __init__(self, config: ClientConfig, stdin: TextIO, stdout: TextIO) -> None:
        self.config = config
        self.out = stdout
        self.lines = LineReader(stdin, stdout, interactive=_isatty(stdin))
        # Lines that arrive by themselves (UVF) redraw the prompt when input() reads it.
        self.console = PromptConsole(stdout, redraw=self.lines.interactive
                                     and stdin is sys.stdin and stdout is sys.stdout)
        self.conn: ServerConnection | None = None
        self.link: PeerLink | None = None
        self.name: str | None = None
        self._mid_line = False  # a prompt is shown and the user has not answered yet

    # --- output ------------------------------------------------------------

    def end_line(self, force: bool = False) -> None:
        """Leave the cursor at the start of a line (after an unanswered prompt)."""
        if self._mid_line or force:
            self.out.write("\n")
            self.out.flush()
            self._mid_line = False

    def say(self, line: str) -> None:
        if self._mid_line:
            self.out.write("\n")
            self._mid_line = False
        self.out.write(line + "\n")
        self.out.flush()

    def notify(self, line: str) -> None:
        """A line that comes by itself (a file received, a transfer over) while the user
        may be typing: on a terminal the prompt and the typed text are redrawn after it."""
        if self.lines.interactive:
            self.console.notify(line, self._mid_line, PROMPT)
        else:
            self.say(line)

    def show_status(self, text: str) -> None:
        """Progress bars of running transfers (a terminal only), above the prompt."""
        self.console.set_status(text, self._mid_line, PROMPT)

    async def ask(self, prompt: str, secret: bool = False) -> str | None:
        """One line from the user, or None at end of input. Raises ServerGone if the
        connection ends while waiting (the user hears at once, not at the next command)."""
        scripted = not self.lines.interactive
        if scripted:
            self.out.write(prompt)
            self.out.flush()
        self._mid_line = True
        read = asyncio.ensure_future(self.lines.read(prompt, secret))
        waits: set[asyncio.Future[Any]] = {read}
        if self.conn is not None:
            waits.add(self.conn.closed)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not read.done():
                read.cancel()
        if not read.done() or read.cancelled():
            assert self.conn is not None
            raise ServerGone(self.conn.closed.result())
        line = read.result()
        self.console.input_done()
        if line is None:
            return None
        if scripted:
            # Echo, so a transcript of a script reads like a session; never the password.
            self.out.write(("" if secret else line) + "\n")
            self.out.flush()
        self._mid_line = False
        return line

    # --- the session -------------------------------------------------------

    async def run(self) -> int:
        try:
            return await self._session()
        except (ConnectFailed, PeerBindError, ServerGone, ReplyTimeout) as exc:
            self.say(exc.message)
            return EXIT_FAILURE
        except _Finish as fin:
            return fin.status

    async def _session(self) -> int:
        cfg = self.config
        infos = await resolve(cfg.server_host, cfg.server_port)
        self.link = PeerLink.for_client(infos[0][0], cfg)
        self.conn = await connect(cfg, infos)
        name = await self._login()
        if name is None:  # input ended before a login: nothing to say goodbye to
            await self.logout_quietly()
            self.end_line()
            return EXIT_OK
        self.name = name
        structlog.contextvars.bind_contextvars(device=name)
        await self.link.start(name, self._lookup, self.notify,
                              self.show_status if self.lines.interactive else None)
        self.say(f"Welcome to the edge network, {name}!")
        show_menu = True
        while True:
            if show_menu:
                self.say(c.MENU)
            line = await self.ask(PROMPT)
            if line is None:
                return await self._logout()
            cmd = c.parse_command(line)
            show_menu = cmd is not None
            if cmd is None:
                continue
            if isinstance(cmd, c.CommandError):
                self.say(cmd.message)
            elif isinstance(cmd, c.Logout):
                return await self._logout()
            else:
                await self._execute(line, cmd)

    async def _login(self) -> str | None:
        assert self.conn is not None and self.link is not None
        while True:
            name = await self.ask("Device name: ")
            if name is None:
                return None
            name = name.strip()
            if not name:
                continue
            problem = c.device_name_error(name)
            if problem:
                self.say(problem)
                continue
            while True:
                password = await self.ask("Password: ", secret=True)
                if password is None:
                    return None
                if len(password) > MAX_PASSWORD:
                    self.say(f"the password must be at most {MAX_PASSWORD} characters")
                    continue
                reply = await self.conn.request({"type": "login", "name": name,
                                                 "password": password,
                                                 "udp_port": self.link.port})
                if reply.ok:
                    return name
                if reply.code == "auth_failed":
                    self.say("Invalid password. Please try again")
                    continue
                self.say(reply.message)
                if reply.code == "blocked":
                    raise _Finish(EXIT_FAILURE)
                break  # any other refusal: start again from the name

    async def _logout(self) -> int:
        assert self.conn is not None
        await self._finish_transfers()
        with suppress(ServerGone, ReplyTimeout):
            await self.conn.request({"type": "logout"}, timeout=LOGOUT_TIMEOUT)
        self.say(f"Bye, {self.name}!")
        return EXIT_OK

    async def _finish_transfers(self) -> None:
        """OUT or end of input: let running UVF transfers end first (each finishes or
        times out in the engine); Ctrl-C still leaves at once."""
        if self.link is None or not self.link.running():
            return
        count = self.link.running()
        self.say(f"waiting for {count} file transfer{'s' if count != 1 else ''} to finish "
                 "(Ctrl-C to abort)")
        await self.link.drain()

    async def logout_quietly(self) -> None:
        """Best effort, bounded: used at end of input before login and after Ctrl-C."""
        if self.conn is None or self.conn.closed.done():
            return
        with suppress(ServerGone, ReplyTimeout, OSError):
            await self.conn.request({"type": "logout"}, timeout=2.0)

    async def _lookup(self, name: str) -> dict[str, Any]:
        assert self.conn is not None
        reply = await self.conn.request({"type": "lookup", "name": name})
        if reply.ok:
            return reply.fields
        raise LookupFailed(reply.code, reply.message)

    # --- commands ----------------------------------------------------------

    async def _execute(self, line: str, cmd: c.Command) -> None:
        assert self.conn is not None and self.link is not None and self.name is not None
        result = await execute_command(line, cmd, conn=self.conn, link=self.link,
                                       name=self.name, data_dir=self.config.data_dir)
        for text in result.lines:
            self.say(text)

    def interrupted(self) -> None:
        # The terminal echoed "^C" where the cursor was; the next shell prompt
        # belongs on a line of its own.
        self.end_line(force=self.lines.interactive)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.link is not None:
            await self.link.aclose()


async def connect(config: ClientConfig, infos: list[tuple[Any, ...]] | None = None
                  ) -> ServerConnection:
    """A connection to the configured server, hellos exchanged (shared by the shell and
    the headless device). Raises ConnectFailed."""
    conn = await ServerConnection.open(config.server_host, config.server_port, infos,
                                       ssl_context=client_tls(config))
    try:
        await conn.hello()
    except BaseException:
        await conn.close()
        raise
    return conn


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


class Session(Protocol):
    """What ``run_session`` drives: the shell, or a headless device."""

    async def run(self) -> int: ...

    async def logout_quietly(self) -> None: ...

    def interrupted(self) -> None: ...

    async def close(self) -> None: ...


async def run_session(session: Session) -> int:
    """Run ``session`` until it ends. Ctrl-C (SIGINT) logs out and gives 130; SIGTERM
    (a service manager stopping the device) logs out cleanly and gives 0."""
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


def run_client(config: ClientConfig, stdin: TextIO = sys.stdin,
               stdout: TextIO = sys.stdout) -> int:
    """Run the client to completion; returns the process exit status. Never raises for
    user/network errors."""
    configure_logging(config.log_format, level=logging.WARNING)
    saved_tty = _save_tty(stdin)
    shell = Shell(config, stdin, stdout)
    try:
        return asyncio.run(run_session(shell))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        _restore_tty(stdin, saved_tty)
        structlog.contextvars.unbind_contextvars("device")


def _save_tty(stream: TextIO) -> Any:
    """The terminal's modes, so that leaving while getpass or input() is blocked in
    the reader thread cannot leave echo turned off."""
    if not _isatty(stream):
        return None
    try:
        import termios

        return termios.tcgetattr(stream.fileno())
    except (ImportError, OSError, ValueError):
        return None


def _restore_tty(stream: TextIO, saved: Any) -> None:
    if saved is None:
        return
    with suppress(ImportError, OSError, ValueError):
        import termios

        termios.tcsetattr(stream.fileno(), termios.TCSADRAIN, saved)
