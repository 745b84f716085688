"""The headless device's command-line options, and their checks.

Kept apart from ``headless`` (which runs the device) so that building the
parser imports nothing heavy. The password never comes from the command line:
``--password-file`` (refused if group or others may read it) or the
environment variable ``EDGENET_PASSWORD``.
"""

from __future__ import annotations

import argparse
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from edgenet.config import option_default
from edgenet.numbers import NumberError, parse_ascii_float, parse_ascii_int
from edgenet.textfile import TextFileError, read_small_text
from edgenet.wire.messages import MAX_PASSWORD

PASSWORD_ENV = "EDGENET_PASSWORD"
#: A --script file larger than this is a mistake, not a list of commands.
MAX_SCRIPT_BYTES = 1 << 20

# Exit statuses of a headless device (documented in README and --help).
EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_COMMAND_FAILED = 5

EXIT_HELP = ("exit status with --name: 0 every command succeeded; 2 usage; 3 authentication "
             "refused, blocked or replaced; 4 server unreachable or lost, or unable to log in "
             "for now (service_unavailable); 5 a command failed")


class HeadlessUsageError(ValueError):
    """A headless option is wrong; the message is one line for the user."""


@dataclass(frozen=True)
class HeadlessConfig:
    name: str
    password: str = field(repr=False)
    #: Command lines, in order (from --run or --script).
    commands: tuple[str, ...] = ()
    as_json: bool = False
    stay: bool = False
    keep_going: bool = False
    #: Longest wait between reconnection attempts with --stay (seconds).
    reconnect_max: float = 30.0
    #: Tries of a failed UED after the first (each resumes where the server holds the
    #: file), with backoff between them.
    upload_retries: int = 5


def add_options(cli: argparse.ArgumentParser) -> None:
    group = cli.add_argument_group(
        "headless device", "Log in without prompts, run commands, exit. " + EXIT_HELP)
    group.add_argument("--name", metavar="NAME",
                       help="device name; log in without prompting (headless)")
    group.add_argument("--password-file", metavar="FILE",
                       help="file whose first line is the password (mode 600; refused if "
                            f"group or others can read it); else ${PASSWORD_ENV}")
    group.add_argument("--run", metavar="COMMANDS",
                       help='commands separated by ";", e.g. "EDG 1 100; UED 1; SCS 1 SUM"')
    group.add_argument("--script", metavar="FILE",
                       help="file with one command per line (# comments, blank lines skipped)")
    group.add_argument("--json", action="store_true",
                       help="print one JSON object per result on stdout")
    group.add_argument("--stay", action="store_true",
                       help="stay logged in after the commands (to receive UVF files), "
                            "reconnecting when the link drops, until SIGTERM")
    group.add_argument("--keep-going", action="store_true",
                       help="run the remaining commands after one fails (the exit status "
                            "still names the first failure)")
    longest = option_default(HeadlessConfig.reconnect_max)
    group.add_argument("--reconnect-max", default=longest, metavar="SECONDS",
                       help="longest wait between reconnection attempts with --stay "
                            f"(default {longest})")
    retries = option_default(HeadlessConfig.upload_retries)
    group.add_argument("--upload-retries", default=retries, metavar="N",
                       help="try a UED that failed (link lost, server restarted) again up to "
                            f"N times, reconnecting and resuming each time (default {retries}; "
                            "0: no retry)")


def read_password_file(path: Path) -> str:
    """The first line of ``path``; refused when group or others can read the file."""
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRGRP | stat.S_IROTH):
            raise HeadlessUsageError(
                f"refusing password file {path}: group or others can read it "
                f"(mode {stat.S_IMODE(st.st_mode):04o}); run chmod 600 {path}")
        raw = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise HeadlessUsageError(f"password file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise HeadlessUsageError(f"cannot read password file {path}: {reason.lower()}") from None
    return raw.splitlines()[0] if raw else ""


def split_run(text: str) -> list[str]:
    return [part.strip() for part in text.split(";") if part.strip()]


def read_script(path: Path) -> list[str]:
    try:
        text = read_small_text(path, "script", MAX_SCRIPT_BYTES)
    except TextFileError as exc:
        raise HeadlessUsageError(str(exc)) from None
    lines = (line.strip() for line in text.splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def headless_config(args: argparse.Namespace, environ: Mapping[str, str] | None = None
                    ) -> HeadlessConfig | None:
    """The headless settings, or None for the interactive/stdin shell.
    Raises HeadlessUsageError (exit status 2)."""
    from edgenet.client.commands import CommandError, Logout, device_name_error, parse_command

    environ = os.environ if environ is None else environ
    name = getattr(args, "name", None)
    run, script = getattr(args, "run", None), getattr(args, "script", None)
    flags = [opt for opt, on in (("--run", run is not None), ("--script", script is not None),
                                 ("--stay", args.stay), ("--json", args.json),
                                 ("--keep-going", args.keep_going),
                                 ("--password-file", args.password_file is not None)) if on]
    if name is None:
        if flags:
            raise HeadlessUsageError(f"{flags[0]} needs --name (a headless device)")
        return None
    problem = device_name_error(name)
    if problem:
        raise HeadlessUsageError(f"--name: {problem}")
    if run is not None and script is not None:
        raise HeadlessUsageError("give --run or --script, not both")
    if args.password_file is not None:
        password = read_password_file(Path(args.password_file))
    elif PASSWORD_ENV in environ:
        password = environ[PASSWORD_ENV]
    else:
        raise HeadlessUsageError(
            f"--name needs a password: --password-file FILE or ${PASSWORD_ENV}")
    if not password:
        raise HeadlessUsageError("the password is empty")
    if len(password) > MAX_PASSWORD:
        raise HeadlessUsageError(f"the password must be at most {MAX_PASSWORD} characters")
    commands = split_run(run) if run is not None else (
        read_script(Path(script)) if script is not None else [])
    # Every command is checked before the server is contacted: a typo costs nothing.
    for index, line in enumerate(commands, 1):
        cmd = parse_command(line)
        if isinstance(cmd, CommandError):
            raise HeadlessUsageError(f"command {index} ({line}): {cmd.message}")
        if isinstance(cmd, Logout) and index != len(commands):
            raise HeadlessUsageError(f"command {index} (OUT) must be the last one")
    try:
        reconnect_max = parse_ascii_float(str(args.reconnect_max).strip(), 0.0, None,
                                          "--reconnect-max", lo_open=True)
    except NumberError:
        raise HeadlessUsageError(
            f"Invalid --reconnect-max: {args.reconnect_max}. It must be a positive number"
        ) from None
    text = str(getattr(args, "upload_retries", HeadlessConfig.upload_retries)).strip()
    try:
        upload_retries = parse_ascii_int(text, 0, 999, "--upload-retries")
    except NumberError:
        raise HeadlessUsageError(f"Invalid --upload-retries: {text[:40]}. It must be a whole "
                                 "number from 0 to 999") from None
    return HeadlessConfig(name=name, password=password, commands=tuple(commands),
                          as_json=bool(args.json), stay=bool(args.stay),
                          keep_going=bool(args.keep_going), reconnect_max=reconnect_max,
                          upload_retries=upload_retries)
