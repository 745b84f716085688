"""A headless edge device: log in without prompts, run commands, maybe stay.

``--name`` with a password from ``--password-file`` or ``$EDGENET_PASSWORD``;
``--run``/``--script`` commands run in order (each checked before the server is
contacted), each result printed as text or, with ``--json``, as one JSON
object; then logout. ``--stay`` keeps the device logged in to receive UVF
files: when the link drops (server restart, network) it reconnects with
exponential backoff and jitter and logs in again, while the UDP endpoint stays
bound, so transfers to it keep working. A login refused for now rather than for
good (``service_unavailable``: a fleet's Redis is down or busy; ``server_busy``)
is tried again with the same backoff, at start too; without ``--stay`` it exits 4
(the server cannot serve), not 3 (the credentials are fine). A takeover (the same
name logged in elsewhere) ends it: two devices fighting over one name would never
settle.

Exit statuses are in ``edgenet.client.options`` (0, 2 usage, 3 auth, 4 server
unreachable or lost, 5 a command failed).
"""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Any, TextIO

import structlog

from edgenet.client import commands as c
from edgenet.client.backoff import RETRYABLE_CODES, Backoff
from edgenet.client.connection import ServerLink
from edgenet.client.dial import connect, resolve
from edgenet.client.errors import ConnectFailed, ReplyTimeout, ServerGone, refusal_text
from edgenet.client.execute import execute_command, lookup_peer
from edgenet.client.lifecycle import EXIT_INTERRUPTED, run_session
from edgenet.client.options import (
    EXIT_AUTH,
    EXIT_COMMAND_FAILED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    HeadlessConfig,
)
from edgenet.client.peer import LookupFailed, PeerBindError, PeerLink
from edgenet.client.rendezvous import join_rendezvous
from edgenet.client.results import CommandResult, ResultPrinter
from edgenet.config import ClientConfig
from edgenet.logconfig import configure_logging
from edgenet.wire import messages as m

log = structlog.get_logger("edgenet.client")

#: Failures of a UED that a new try may mend (the link, the server, the file changed).
RETRIED_UPLOAD_CODES = frozenset({"storage_error", "service_unavailable", "bad_checksum",
                                  "resume_mismatch", "shutdown"})
#: Without a heartbeat interval from the server, check the link this often (seconds).
DEFAULT_LIVENESS = 10.0


class _LoginRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class HeadlessDevice:
    def __init__(self, config: ClientConfig, headless: HeadlessConfig, out: TextIO,
                 err: TextIO) -> None:
        self.config = config
        self.headless = headless
        self.printer = ResultPrinter(out, headless.as_json)
        self.err = err
        self.server: ServerLink | None = None
        self.peers: PeerLink | None = None
        self.logged_in = False

    # --- reporting ---------------------------------------------------------

    def _fail(self, result: CommandResult, summary: str) -> None:
        self.printer.result(result)
        self.err.write(f"edgenet: {summary}\n")
        self.err.flush()

    # --- the session -------------------------------------------------------

    async def run(self) -> int:
        cfg, name = self.config, self.headless.name
        try:
            infos = await resolve(cfg.server_host, cfg.server_port)
            self.peers = PeerLink.for_client(infos[0][0], cfg)
            self.server = await connect(cfg, infos, login=self._credentials())
        except PeerBindError as exc:
            self.err.write(f"edgenet: {exc.message}\n")
            return EXIT_USAGE
        except ConnectFailed as exc:
            self._fail(CommandResult.failure("connect", "unreachable", exc.message), exc.message)
            return EXIT_UNREACHABLE
        try:
            await self._login(self.server)
        except _LoginRefused as exc:
            if exc.code in RETRYABLE_CODES and self.headless.stay:
                # Not now, rather than no: a device that stays keeps trying.
                await self.server.close()
                self._retrying(exc)
                status = await self._reconnect(Backoff(cap=self.headless.reconnect_max))
                if status is not None:
                    return status
            elif exc.code in RETRYABLE_CODES:  # the server cannot serve now: not an auth failure
                self._fail(CommandResult.failure("login", exc.code, exc.message),
                           f"login as {name} not possible now: {exc.message}")
                return EXIT_UNREACHABLE
            else:
                self._fail(CommandResult.failure("login", exc.code, exc.message),
                           f"login as {name} refused: {exc.message}")
                return EXIT_AUTH
        except (ServerGone, ReplyTimeout) as exc:
            if not self.headless.stay:
                self._fail(CommandResult.failure("login", "unreachable", exc.message),
                           exc.message)
                return EXIT_UNREACHABLE
            # Gone before its answer (a restart): a device that stays comes back.
            await self.server.close()
            log.warning("connection_lost", reason=exc.message)
            status = await self._reconnect(Backoff(cap=self.headless.reconnect_max))
            if status is not None:
                return status
        structlog.contextvars.bind_contextvars(device=name)
        await self.peers.start(name, self._lookup, self._announce)
        try:
            try:
                await join_rendezvous(self.server, self.peers)
            except (ServerGone, ReplyTimeout):
                if not self.headless.stay:
                    raise
                # The link dropped between the login and the rendezvous (a restart): the
                # stay below sees it closed and reconnects.
            status, out = await self._run_commands()
            if self.headless.stay and not out and (status == EXIT_OK or self.headless.keep_going):
                stay_status = await self._stay()
                status = status or stay_status
        except (ServerGone, ReplyTimeout) as exc:
            self._fail(CommandResult.failure("session", "unreachable", exc.message),
                       f"the connection to the server failed: {exc.message}")
            return EXIT_UNREACHABLE
        if status != EXIT_AUTH:
            await self.peers.drain()  # UVF transfers started by --run finish (or time out)
            await self._logout()
        return status

    def _credentials(self) -> tuple[str, str, int]:
        """What the login sends: it goes with the hello (one round trip for both)."""
        assert self.peers is not None
        return self.headless.name, self.headless.password, self.peers.port

    async def _login(self, server: ServerLink) -> None:
        reply = await server.login(*self._credentials())
        if isinstance(reply, m.ErrorReply):
            raise _LoginRefused(reply.code or "refused", refusal_text(reply))
        self.logged_in = True
        self.printer.result(CommandResult.success(
            "login", f"Welcome to the edge network, {self.headless.name}!",
            name=self.headless.name, session=reply.session, udp_port=self.peers.port))
        log.info("logged_in", udp_port=self.peers.port)

    async def _run_commands(self) -> tuple[int, bool]:
        """Run the configured commands; returns (exit status, whether OUT was given)."""
        assert self.server is not None and self.peers is not None
        status = EXIT_OK
        for index, line in enumerate(self.headless.commands, 1):
            cmd = c.parse_command(line)
            if cmd is None or isinstance(cmd, c.CommandError):  # checked at start-up
                continue
            if isinstance(cmd, c.Logout):
                return status, True
            if isinstance(cmd, c.UploadData):
                result = await self._upload(line, cmd)
            else:
                result = await execute_command(line, cmd, server=self.server, peers=self.peers,
                                               name=self.headless.name,
                                               data_dir=self.config.data_dir,
                                               wait_transfer=True)
            if result.ok:
                self.printer.result(result)
                continue
            self._fail(result, f"command {index} ({result.command}) failed: {result.text}")
            status = status or (EXIT_UNREACHABLE if result.code == "unreachable"
                                else EXIT_COMMAND_FAILED)
            if not self.headless.keep_going:
                break
        return status, False

    async def _upload(self, line: str, cmd: c.UploadData) -> CommandResult:
        """UED, tried again (``--upload-retries``, with backoff) when the link or the
        server failed it: each try reconnects if need be and resumes where the server
        holds the file. Only an acknowledged upload is a success."""
        backoff = Backoff(base=0.5, cap=10.0)
        tries = self.headless.upload_retries + 1
        for attempt in range(1, tries + 1):
            failure: CommandResult | None = None
            try:
                if self.server is None or self.server.closed.done():
                    await self._reconnect_once()
                assert self.server is not None and self.peers is not None
                result = await execute_command(line, cmd, server=self.server, peers=self.peers,
                                               name=self.headless.name,
                                               data_dir=self.config.data_dir)
                if result.ok or result.code not in RETRIED_UPLOAD_CODES:
                    return result
                failure = result
            except _LoginRefused as exc:
                return CommandResult.failure(line, exc.code, f"login as {self.headless.name} "
                                             f"refused: {exc.message}")
            except (ServerGone, ReplyTimeout, ConnectFailed) as exc:
                if self.server is not None and not self.server.closed.done():
                    await self.server.close()  # a reply that did not come: start afresh
                self.logged_in = False
                failure = CommandResult.failure(line, "unreachable", exc.message)
            note = self.server.resume_note if self.server is not None else None
            if attempt == tries:
                if note and failure.code == "unreachable":
                    failure = CommandResult.failure(line, failure.code,
                                                    f"{failure.text}; {note}")
                return failure
            delay = backoff.next_delay()
            self.printer.notice(f"{' '.join(line.split())} failed: {failure.text}; trying "
                                f"again in {delay:.1f} s ({attempt + 1} of {tries})"
                                + (f"; {note}" if note else ""),
                                event="upload_retry", attempt=attempt + 1, reason=failure.text)
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reconnect_once(self) -> None:
        """Connect and log in again, once. Raises ConnectFailed, ServerGone, ReplyTimeout;
        a refused login raises _LoginRefused."""
        server = await connect(self.config, login=self._credentials())
        try:
            await self._login(server)
            assert self.peers is not None
            await join_rendezvous(server, self.peers)
        except BaseException:
            await server.close()
            raise
        self.server = server

    async def _stay(self) -> int:
        """Stay logged in until SIGTERM; reconnect whenever the link drops. Returns
        only when staying is over for good (replaced, or the login now refused)."""
        backoff = Backoff(cap=self.headless.reconnect_max)
        while True:
            assert self.server is not None
            reason = await self._watch(self.server)
            kind = self.server.notice_kind
            self.logged_in = False
            await self.server.close()
            if kind == "replaced":
                self._fail(CommandResult.failure("stay", "replaced", reason), reason)
                return EXIT_AUTH
            log.warning("connection_lost", reason=reason)
            self.printer.notice(f"connection lost: {reason}; reconnecting", event="disconnected",
                                reason=reason)
            status = await self._reconnect(backoff)
            if status is not None:
                return status
            backoff.reset()

    async def _reconnect(self, backoff: Backoff) -> int | None:
        """Until logged in again (None) or refused for good (an exit status)."""
        while True:
            delay = backoff.next_delay()
            log.info("reconnecting", delay=round(delay, 3), attempt=backoff.attempt)
            await asyncio.sleep(delay)
            try:
                server = await connect(self.config, login=self._credentials())
            except ConnectFailed as exc:
                log.info("reconnect_failed", error=exc.message)
                continue
            try:
                await self._login(server)
                assert self.peers is not None
                await join_rendezvous(server, self.peers)
            except (ServerGone, ReplyTimeout) as exc:
                log.info("reconnect_failed", error=exc.message)
                await server.close()
                continue
            except _LoginRefused as exc:
                await server.close()
                if exc.code == "blocked":  # someone else tripped the lockout: it ends
                    log.warning("reconnect_blocked", error=exc.message)
                    continue
                if exc.code in RETRYABLE_CODES:  # the fleet's Redis is down or busy: it ends
                    self._retrying(exc)
                    continue
                self._fail(CommandResult.failure("login", exc.code, exc.message),
                           f"login as {self.headless.name} refused: {exc.message}")
                return EXIT_AUTH
            self.server = server
            log.info("reconnected")
            return None

    def _retrying(self, exc: _LoginRefused) -> None:
        """A login refused for now (``service_unavailable``): said once per refusal; the
        caller backs off and tries again."""
        log.warning("login_unavailable", code=exc.code, error=exc.message)
        self.printer.notice(f"login as {self.headless.name} not possible now: {exc.message}; "
                            "trying again", event="login_unavailable", code=exc.code,
                            reason=exc.message)

    async def _watch(self, server: ServerLink) -> str:
        """Wait until ``server`` is over; returns why. A server that vanished without
        closing (power cut, cable pulled) is noticed by pinging it once an interval."""
        interval = server.heartbeat or DEFAULT_LIVENESS
        while True:
            done, _ = await asyncio.wait({server.closed}, timeout=interval)
            if done:
                return server.closed.result()
            try:
                await server.ping(timeout=interval * 1.5)
            except ReplyTimeout:
                return f"no answer from the server within {interval * 1.5:g} seconds"
            except ServerGone as exc:
                return exc.message

    async def _logout(self) -> None:
        if self.server is None or self.server.closed.done() or not self.logged_in:
            return
        await self.server.logout()
        self.logged_in = False
        self.printer.result(CommandResult.success(
            "logout", f"Bye, {self.headless.name}!", name=self.headless.name))

    async def _lookup(self, name: str) -> dict[str, Any]:
        # The current connection, whichever it is after reconnects.
        if self.server is None:
            raise LookupFailed("not_connected", "not connected to the server")
        return await lookup_peer(self.server, name)

    def _announce(self, line: str) -> None:
        self.printer.notice(line, event="peer")

    # --- what run_session needs --------------------------------------------

    async def logout_quietly(self) -> None:
        """On SIGTERM/SIGINT: bounded, so the server's active list is right at once."""
        if self.server is None or self.server.closed.done() or not self.logged_in:
            return
        await self.server.logout(timeout=2.0)
        self.logged_in = False

    def interrupted(self) -> None:
        pass

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()
        if self.peers is not None:
            await self.peers.aclose()


def run_headless(config: ClientConfig, headless: HeadlessConfig, stdout: TextIO = sys.stdout,
                 stderr: TextIO = sys.stderr) -> int:
    """Run a headless device to completion; returns the process exit status."""
    configure_logging(config.log_format, level=logging.INFO)
    device = HeadlessDevice(config, headless, stdout, stderr)
    try:
        return asyncio.run(run_session(device))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        structlog.contextvars.unbind_contextvars("device")
