"""The ``edgenet admin`` command line: its sub-commands and options (argparse only,
so ``edgenet --help`` stays fast; the HTTP client is imported when a command runs).
"""

from __future__ import annotations

import argparse

from edgenet.config import ServerConfig

#: The admin API of a server on this machine with the default admin host and port.
DEFAULT_URL = f"http://{ServerConfig.admin_host}:{ServerConfig.admin_port}"
TOKEN_ENV = "EDGENET_ADMIN_TOKEN"
URL_ENV = "EDGENET_ADMIN_URL"

COMMANDS = ("devices", "device", "kick", "lockouts", "unblock", "files", "logs", "events",
            "reload-credentials", "health")

_EPILOG = f"""\
The token comes from ${TOKEN_ENV} or --token-file, never from the command line.
Output: a table on a terminal, JSON otherwise (or with --json; JSON lines with
events --follow). Exit status: 0 ok, 1 the server refused the change, 2 usage,
3 authentication refused, 4 server unreachable, 5 not found."""


class _RefuseToken(argparse.Action):
    """``--token`` exists only to say where the token goes instead."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: object, option_string: str | None = None) -> None:
        parser.error(f"the admin token is never taken from the command line (it shows in ps): "
                     f"set {TOKEN_ENV} or use --token-file FILE")


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    """The options every sub-command takes, before or after its name."""
    default = (lambda value: value) if top else (lambda value: argparse.SUPPRESS)
    g = parser.add_argument_group("connection and output")
    g.add_argument("--url", default=default(None), metavar="URL",
                   help=f"the admin API (default ${URL_ENV} or {DEFAULT_URL})")
    g.add_argument("--token-file", default=default(None), metavar="FILE",
                   help=f"file holding the admin token (mode 600); default ${TOKEN_ENV}")
    g.add_argument("--token", nargs="?", action=_RefuseToken, help=argparse.SUPPRESS)
    out = g.add_mutually_exclusive_group()
    out.add_argument("--json", dest="output", action="store_const", const="json",
                     default=default("auto"), help="JSON output, even on a terminal")
    out.add_argument("--table", dest="output", action="store_const", const="table",
                     default=default("auto"), help="a table, even when not on a terminal")
    g.add_argument("--timeout", default=default("10"), metavar="SECONDS",
                   help="give up on a request after this long (default 10)")


def add_admin_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``admin`` and its sub-commands to the top-level parser's sub-parsers."""
    adm = sub.add_parser("admin", help="operate a running server through its admin API",
                         description="Operate a running edgenet server through its admin HTTP "
                                     "API.", epilog=_EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    _common(adm, top=True)
    cmds = adm.add_subparsers(dest="admin_command", metavar="{" + ",".join(COMMANDS) + "}")
    cmds.required = True

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, help=help_text, description=help_text[:1].upper()
                            + help_text[1:] + ".")
        _common(p, top=False)
        return p

    p = command("devices", "list the active devices")
    _limit(p, None)
    p.add_argument("--since", metavar="TIME", help="only devices logged in since TIME")
    p = command("device", "show one active device")
    p.add_argument("name", metavar="NAME")
    p = command("kick", "disconnect a device (it is told, and leaves the active list)")
    p.add_argument("name", metavar="NAME")
    p = command("lockouts", "list names with failed logins, and blocks with the time left")
    _limit(p, None)
    p = command("unblock", "lift a name's block and forget its failures")
    p.add_argument("name", metavar="NAME")
    p = command("files", "list the stored data files")
    p.add_argument("--device", metavar="NAME", help="only this device's files")
    p.add_argument("--since", metavar="TIME", help="only files uploaded since TIME")
    _limit(p, None)
    p = command("logs", "show a log: uploads, deletions or devices (edge-device-log.txt)")
    p.add_argument("log", choices=("uploads", "deletions", "devices"))
    p.add_argument("--device", metavar="NAME", help="only this device's records")
    p.add_argument("--since", metavar="TIME", help="only records from TIME on")
    _limit(p, 100)
    p = command("events", "show the server's recent events, or follow them live")
    p.add_argument("--follow", "-f", action="store_true",
                   help="stream new events as they happen (reconnects when the link drops)")
    p.add_argument("--event", metavar="E,...", help="only these event names, comma-separated")
    p.add_argument("--device", metavar="NAME", help="only this device's events")
    p.add_argument("--since", metavar="TIME", help="only events from TIME on (not with --follow)")
    _limit(p, 100)
    command("reload-credentials", "re-read the server's credentials file (as SIGHUP does)")
    command("health", "check that the server's admin API answers")


def _limit(parser: argparse.ArgumentParser, default: int | None) -> None:
    shown = "all" if default is None else str(default)
    parser.add_argument("--limit", default=None if default is None else str(default),
                        metavar="N", help=f"at most N records, newest first (default {shown})")
