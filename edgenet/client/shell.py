"""The edge device's shell: start-up, login, then one command per line.

The same code serves a person at a terminal and a script on stdin. Lines are
read by a daemon thread (``LineReader``) one request at a time, so the event
loop keeps answering the server's pings while a read is blocked, and the
process can exit without waiting for the user. Messages for the user are plain
lines on ``stdout``; the client's own diagnostics go to structlog.

Exit status: 0 after OUT or end of input, 1 when start-up, login or the
connection fails, 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import queue
import signal
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from typing import Any, TextIO, TypeVar

import structlog

from edgenet.client import commands as c
from edgenet.client.connection import (
    ConnectFailed,
    ReplyTimeout,
    ServerConnection,
    ServerGone,
    resolve,
)
from edgenet.client.datagen import data_file_name, write_data_file
from edgenet.client.peer import LookupFailed, PeerBindError, PeerLink, send_file
from edgenet.config import ClientConfig
from edgenet.logconfig import configure_logging
from edgenet.wire.messages import MAX_PASSWORD

log = structlog.get_logger("edgenet.client")
T = TypeVar("T")

PROMPT = "> "
LOGOUT_TIMEOUT = 5.0
NOT_FOUND = "the file does not exist at the server side"

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
        self.link = PeerLink.bind(infos[0][0], cfg.udp_port, cfg.data_dir)
        self.conn = await ServerConnection.open(cfg.server_host, cfg.server_port, infos)
        await self.conn.hello()
        name = await self._login()
        if name is None:  # input ended before a login: nothing to say goodbye to
            await self.logout_quietly()
            self.end_line()
            return EXIT_OK
        self.name = name
        structlog.contextvars.bind_contextvars(device=name)
        await self.link.start(name, self._lookup, self.say)
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
                await self._execute(cmd)

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
        with suppress(ServerGone, ReplyTimeout):
            await self.conn.request({"type": "logout"}, timeout=LOGOUT_TIMEOUT)
        self.say(f"Bye, {self.name}!")
        return EXIT_OK

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

    async def _execute(self, cmd: c.Command) -> None:
        assert self.conn is not None and self.link is not None and self.name is not None
        conn = self.conn
        if isinstance(cmd, c.GenerateData):
            await self._generate(cmd)
        elif isinstance(cmd, c.UploadData):
            await self._upload(cmd)
        elif isinstance(cmd, c.ComputeStat):
            reply = await conn.request({"type": "compute", "file_id": cmd.file_id, "op": cmd.op})
            if reply.ok:
                self.say(f"the {cmd.op} of file {cmd.file_id} is {reply.fields.get('result')}")
            else:
                self.say(NOT_FOUND if reply.code == "not_found" else reply.message)
        elif isinstance(cmd, c.DeleteData):
            reply = await conn.request({"type": "delete", "file_id": cmd.file_id})
            if reply.ok:
                self.say(f"file with ID of {cmd.file_id} has been successfully removed "
                         "from the central server")
            else:
                self.say(NOT_FOUND if reply.code == "not_found" else reply.message)
        elif isinstance(cmd, c.ListDevices):
            reply = await conn.request({"type": "list_devices"})
            if not reply.ok:
                self.say(reply.message)
                return
            devices = reply.fields.get("devices")
            if not isinstance(devices, list) or not devices:
                self.say("no other active edge devices")
            for d in devices or ():
                if isinstance(d, dict):
                    self.say(f"{d.get('name')}; {d.get('ip')}; {d.get('udp_port')}; "
                             f"active since {d.get('since_text')}")
        elif isinstance(cmd, c.SendFile):
            self.say(await send_file(self.link, cmd.device, cmd.filename))

    async def _generate(self, cmd: c.GenerateData) -> None:
        assert self.name is not None
        path = self.config.data_dir / data_file_name(self.name, cmd.file_id)
        try:
            # Off the loop (a large amount takes seconds and pings must still be
            # answered), on a daemon thread that Ctrl-C can stop and never waits for.
            await _in_thread(write_data_file, path, cmd.amount)
        except OSError as exc:
            self.say(f"cannot write {path}: {(exc.strerror or str(exc)).lower()}")
            return
        self.say("data generation done")

    async def _upload(self, cmd: c.UploadData) -> None:
        assert self.name is not None and self.conn is not None
        fname = data_file_name(self.name, cmd.file_id)
        path = self.config.data_dir / fname
        if not path.is_file():
            self.say("the file to be uploaded does not exist")
            return
        try:
            reply = await self.conn.upload(cmd.file_id, path)
        except FileNotFoundError:
            self.say("the file to be uploaded does not exist")
            return
        except PermissionError as exc:
            self.say(f"cannot read {fname}: {(exc.strerror or str(exc)).lower()}")
            return
        if reply.ok:
            self.say(f"file {fname} has been uploaded ({reply.fields.get('samples')} samples)")
        else:
            self.say(reply.message)

    async def close(self) -> None:
        if self.conn is not None:
            await self.conn.close()
        if self.link is not None:
            self.link.close()


async def _in_thread(fn: Callable[..., T], *args: Any) -> T:
    """Run ``fn(*args, stop=event)`` on a daemon thread. If the caller is cancelled,
    set ``stop`` and give the thread a moment to clean up before re-raising."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[T] = loop.create_future()
    stop = threading.Event()

    def deliver(ok: bool, value: Any) -> None:
        if not fut.done():
            if ok:
                fut.set_result(value)
            else:
                fut.set_exception(value)

    def work() -> None:
        try:
            outcome: tuple[bool, Any] = (True, fn(*args, stop=stop))
        except Exception as exc:  # noqa: BLE001 (handed to the awaiting task, which decides)
            outcome = (False, exc)
        with suppress(RuntimeError):  # the loop is gone: nobody is waiting any more
            loop.call_soon_threadsafe(deliver, *outcome)

    threading.Thread(target=work, name="edgenet-worker", daemon=True).start()
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        stop.set()
        await asyncio.wait({fut}, timeout=2.0)
        if fut.done() and not fut.cancelled():
            fut.exception()  # retrieved: the stop is expected, not worth a warning
        raise


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


async def _main(shell: Shell) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(shell.run())
    interrupted = False

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        task.cancel()

    handler = False
    with suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        handler = True
    try:
        return await task
    except asyncio.CancelledError:
        if not interrupted:
            raise
        await shell.logout_quietly()
        # The terminal echoed "^C" where the cursor was; the next shell prompt
        # belongs on a line of its own.
        shell.end_line(force=shell.lines.interactive)
        return EXIT_INTERRUPTED
    finally:
        if handler:
            loop.remove_signal_handler(signal.SIGINT)
        await shell.close()


def run_client(config: ClientConfig, stdin: TextIO = sys.stdin,
               stdout: TextIO = sys.stdout) -> int:
    """Run the client to completion; returns the process exit status. Never raises for
    user/network errors."""
    configure_logging(config.log_format, level=logging.WARNING)
    saved_tty = _save_tty(stdin)
    shell = Shell(config, stdin, stdout)
    try:
        return asyncio.run(_main(shell))
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
