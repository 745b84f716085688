"""Run one parsed device command against the server and say how it went.

Shared by the interactive shell and the headless device: both call
``execute_command`` and get a ``CommandResult``; neither repeats the requests
or the wording. Raises ServerGone or ReplyTimeout when the connection fails
(that is the session's problem, not the command's). ``lookup_peer`` is UVF's
question to the server, for the peer link.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from edgenet.client import commands as c
from edgenet.client.connection import ServerLink
from edgenet.client.datagen import data_file_name, write_data_file
from edgenet.client.errors import refusal_text
from edgenet.client.peer import LookupFailed, PeerLink
from edgenet.client.rendezvous import lookup_fields
from edgenet.client.resume import resumed_percent
from edgenet.client.results import (
    LOCAL_IO,
    NO_LOCAL_FILE,
    USAGE,
    UVF_FAILED,
    CommandResult,
)
from edgenet.wire import messages as m

T = TypeVar("T")

NOT_FOUND = "the file does not exist at the server side"
NO_UPLOAD_FILE = "the file to be uploaded does not exist"


def command_text(line: str) -> str:
    """The command as shown in results: its words, single-spaced."""
    return " ".join(line.split())


def usage_failure(line: str, err: c.CommandError) -> CommandResult:
    return CommandResult.failure(command_text(line), USAGE, err.message)


async def execute_command(line: str, cmd: c.Command, *, server: ServerLink, peers: PeerLink,
                          name: str, data_dir: Path, wait_transfer: bool = False
                          ) -> CommandResult:
    """Run ``cmd`` (parsed from ``line``; not Logout) for the device ``name``.

    ``wait_transfer``: a UVF's result is the end of its transfer (headless runs,
    whose exit status must say whether the file arrived), not its start."""
    shown = command_text(line)
    if isinstance(cmd, c.GenerateData):
        return await _generate(shown, cmd, name, data_dir)
    if isinstance(cmd, c.UploadData):
        return await _upload(shown, cmd, server, name, data_dir)
    if isinstance(cmd, c.ComputeStat):
        computed = await server.compute(cmd.file_id, cmd.op)
        if isinstance(computed, m.ErrorReply):
            return _server_failure(shown, computed)
        return CommandResult.success(
            shown, f"the {cmd.op} of file {cmd.file_id} is {computed.result}",
            file_id=cmd.file_id, op=cmd.op, result=computed.result)
    if isinstance(cmd, c.DeleteData):
        deleted = await server.delete(cmd.file_id)
        if isinstance(deleted, m.ErrorReply):
            return _server_failure(shown, deleted)
        return CommandResult.success(
            shown, f"file with ID of {cmd.file_id} has been successfully removed "
                   "from the central server", file_id=cmd.file_id, samples=deleted.samples)
    if isinstance(cmd, c.ListDevices):
        listed = await server.list_devices()
        if isinstance(listed, m.ErrorReply):
            return _server_failure(shown, listed)
        lines = [f"{d.name}; {d.ip}; {d.udp_port}; active since {d.since_text}"
                 for d in listed.devices]
        return CommandResult.success(shown, "\n".join(lines) or "no other active edge devices",
                                     devices=[d.to_fields() for d in listed.devices])
    if isinstance(cmd, c.SendFile):
        # Interactive and stdin-scripted: returns once the transfer has started; the
        # link announces its end. Headless (wait_transfer): the result is the end.
        started = await peers.start_send(cmd.device, cmd.filename,
                                         announce_end=not wait_transfer)
        if not started.ok:
            return CommandResult.failure(shown, started.code or UVF_FAILED, started.text)
        if not wait_transfer or started.outcome is None:
            return CommandResult.success(shown, started.text, **started.data)
        end = await started.outcome
        if not end.ok:
            return CommandResult.failure(shown, end.code or UVF_FAILED, end.text)
        return CommandResult.success(shown, end.text, size=end.size, path=end.path,
                                     **({"resumed_from": end.resumed_at} if end.resumed_at
                                        else {}), **started.data)
    raise AssertionError(f"not a command to execute: {cmd!r}")


async def lookup_peer(server: ServerLink, name: str) -> dict[str, Any]:
    """Where ``name`` listens (the ``connect`` or ``lookup`` reply's fields, by the
    server's version); raises LookupFailed."""
    located = await lookup_fields(server, name)
    if isinstance(located, m.ErrorReply):
        raise LookupFailed(located.code, refusal_text(located))
    return m.reply_to_fields(located)


def _server_failure(shown: str, refusal: m.ErrorReply) -> CommandResult:
    return CommandResult.failure(shown, refusal.code or "refused",
                                 NOT_FOUND if refusal.code == "not_found"
                                 else refusal_text(refusal))


async def _generate(shown: str, cmd: c.GenerateData, name: str, data_dir: Path) -> CommandResult:
    path = data_dir / data_file_name(name, cmd.file_id)
    try:
        # Off the loop (a large amount takes seconds and pings must still be
        # answered), on a daemon thread that Ctrl-C can stop and never waits for.
        await in_thread(write_data_file, path, cmd.amount)
    except OSError as exc:
        return CommandResult.failure(shown, LOCAL_IO,
                                     f"cannot write {path}: {(exc.strerror or str(exc)).lower()}")
    return CommandResult.success(shown, "data generation done", file_id=cmd.file_id,
                                 samples=cmd.amount, path=str(path))


async def _upload(shown: str, cmd: c.UploadData, server: ServerLink, name: str,
                  data_dir: Path) -> CommandResult:
    fname = data_file_name(name, cmd.file_id)
    path = data_dir / fname
    if not path.is_file():
        return CommandResult.failure(shown, NO_LOCAL_FILE, NO_UPLOAD_FILE)
    try:
        uploaded = await server.upload(cmd.file_id, path)
    except FileNotFoundError:
        return CommandResult.failure(shown, NO_LOCAL_FILE, NO_UPLOAD_FILE)
    except PermissionError as exc:
        return CommandResult.failure(shown, LOCAL_IO,
                                     f"cannot read {fname}: {(exc.strerror or str(exc)).lower()}")
    if isinstance(uploaded, m.ErrorReply):
        return CommandResult.failure(shown, uploaded.code or "refused", refusal_text(uploaded))
    resumed = uploaded.resumed_from or 0
    how = f", resumed at {resumed_percent(resumed, uploaded.bytes)} %" if resumed else ""
    return CommandResult.success(
        shown, f"file {fname} has been uploaded ({uploaded.samples} samples{how})",
        file_id=cmd.file_id, samples=uploaded.samples, bytes=uploaded.bytes,
        **({"resumed_from": resumed} if resumed else {}))


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
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
