"""The edge device's shell: start-up, login, then one command per line.

The same code serves a person at a terminal and a script on stdin. Lines come from
``terminal.LineReader`` (a thread, so pings are answered while a read blocks); the
login dialogue is ``login``; the session's signals and exit are ``lifecycle``;
commands run through ``execute`` (shared with the headless device). Messages for
the user are plain lines on ``stdout``; the client's own diagnostics go to structlog.

Exit status: 0 after OUT, end of input or SIGTERM (which logs out first), 1
when start-up, login or the connection fails, 130 after Ctrl-C.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TextIO

import structlog

from edgenet.client import commands as c
from edgenet.client.connection import ServerLink
from edgenet.client.console import PromptConsole
from edgenet.client.dial import connect, resolve
from edgenet.client.errors import ConnectFailed, ReplyTimeout, ServerGone
from edgenet.client.execute import execute_command, lookup_peer
from edgenet.client.lifecycle import EXIT_INTERRUPTED, EXIT_OK, run_session
from edgenet.client.login import LoginBlocked, login_dialogue
from edgenet.client.peer import PeerBindError, PeerLink
from edgenet.client.rendezvous import join_rendezvous
from edgenet.client.terminal import LineReader, isatty, restore_tty, save_tty
from edgenet.config import ClientConfig
from edgenet.logconfig import configure_logging

log = structlog.get_logger("edgenet.client")

PROMPT = "> "
EXIT_FAILURE = 1


class Shell:
    def __init__(self, config: ClientConfig, stdin: TextIO, stdout: TextIO) -> None:
        self.config = config
        self.out = stdout
        self.lines = LineReader(stdin, stdout, interactive=isatty(stdin))
        # Lines that arrive by themselves (UVF) redraw the prompt when input() reads it.
        self.console = PromptConsole(stdout, redraw=self.lines.interactive
                                     and stdin is sys.stdin and stdout is sys.stdout)
        self.server: ServerLink | None = None
        self.peers: PeerLink | None = None
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
        if self.server is not None:
            waits.add(self.server.closed)
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not read.done():
                read.cancel()
        if not read.done() or read.cancelled():
            assert self.server is not None
            raise ServerGone(self.server.closed.result())
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
        except LoginBlocked:
            return EXIT_FAILURE

    async def _session(self) -> int:
        cfg = self.config
        infos = await resolve(cfg.server_host, cfg.server_port)
        self.peers = PeerLink.for_client(infos[0][0], cfg)
        self.server = server = await connect(cfg, infos)
        name = await login_dialogue(self.ask, self.say, server, self.peers.port)
        if name is None:  # input ended before a login: nothing to say goodbye to
            await self.logout_quietly()
            self.end_line()
            return EXIT_OK
        self.name = name
        structlog.contextvars.bind_contextvars(device=name)
        await self.peers.start(name, lambda target: lookup_peer(server, target), self.notify,
                              self.show_status if self.lines.interactive else None)
        await join_rendezvous(server, self.peers)
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

    async def _logout(self) -> int:
        assert self.server is not None
        await self._finish_transfers()
        await self.server.logout()
        self.say(f"Bye, {self.name}!")
        return EXIT_OK

    async def _finish_transfers(self) -> None:
        """OUT or end of input: let running UVF transfers end first (each finishes or
        times out in the engine); Ctrl-C still leaves at once."""
        if self.peers is None or not self.peers.running():
            return
        count = self.peers.running()
        self.say(f"waiting for {count} file transfer{'s' if count != 1 else ''} to finish "
                 "(Ctrl-C to abort)")
        await self.peers.drain()

    async def logout_quietly(self) -> None:
        """Best effort, bounded: used at end of input before login and after Ctrl-C."""
        if self.server is not None:
            await self.server.logout(timeout=2.0)

    # --- commands ----------------------------------------------------------

    async def _execute(self, line: str, cmd: c.Command) -> None:
        assert self.server is not None and self.peers is not None and self.name is not None
        result = await execute_command(line, cmd, server=self.server, peers=self.peers,
                                       name=self.name, data_dir=self.config.data_dir)
        for text in result.lines:
            self.say(text)

    def interrupted(self) -> None:
        # The terminal echoed "^C" where the cursor was; the next shell prompt
        # belongs on a line of its own.
        self.end_line(force=self.lines.interactive)

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self.peers is not None:
            await self.peers.aclose()


def run_client(config: ClientConfig, stdin: TextIO = sys.stdin,
               stdout: TextIO = sys.stdout) -> int:
    """Run the client to completion; returns the process exit status. Never raises for
    user/network errors."""
    configure_logging(config.log_format, level=logging.WARNING)
    saved_tty = save_tty(stdin)
    shell = Shell(config, stdin, stdout)
    try:
        return asyncio.run(run_session(shell))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        restore_tty(stdin, saved_tty)
        structlog.contextvars.unbind_contextvars("device")
