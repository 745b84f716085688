"""``edgenet admin``: each sub-command as one or a few admin API calls, printed as a
table for a person or JSON for a program, with the exit status the failure means."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from edgenet.admin import render as r
from edgenet.admin.client import EXIT_USAGE, AdminClient, AdminError
from edgenet.admin.options import DEFAULT_URL, TOKEN_ENV, URL_ENV
from edgenet.numbers import NumberError, parse_ascii_float, parse_ascii_int
from edgenet.textfile import TextFileError, read_secret_file

_RELATIVE = re.compile(r"^([0-9]{1,9})(s|m|min|h|d)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "min": 60, "h": 3600, "d": 86400}


def _usage(message: str) -> AdminError:
    return AdminError(message, EXIT_USAGE)


def resolve_token(args: argparse.Namespace, environ: dict[str, str]) -> str | None:
    if args.token_file:
        try:
            token = read_secret_file(Path(args.token_file), "token file")
        except TextFileError as exc:
            raise _usage(str(exc)) from None
        if not token:
            raise _usage(f"token file {args.token_file} is empty")
        return token
    return environ.get(TOKEN_ENV, "").strip() or None


def resolve_url(args: argparse.Namespace, environ: dict[str, str]) -> str:
    url = (args.url or environ.get(URL_ENV) or DEFAULT_URL).strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _usage(f"invalid --url {url!r}: give http://HOST:PORT")
    return url.rstrip("/")


def _positive(text: str, what: str) -> float:
    try:
        return parse_ascii_float(text.strip(), 0.0, None, what, lo_open=True)
    except NumberError:
        raise _usage(f"invalid {what} {text!r}: it must be a positive number") from None


def _limit(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return parse_ascii_int(text, 1, None, "--limit")
    except NumberError:
        raise _usage(f"invalid --limit {text!r}: it must be a whole number of at least 1"
                     ) from None


def since_param(text: str | None, now: float) -> str | None:
    """``--since``: what the API takes (Unix seconds, ISO 8601, the logs' format), or a
    relative time ago: ``90s``, ``10m``, ``2h``, ``1d``."""
    if text is None:
        return None
    if not text.isascii():  # every form the API takes is ASCII; refuse "٣h" here, as usage
        raise _usage(f"invalid --since {text!r}: give 90s, 10m, 2h, 1d, Unix seconds or "
                     "ISO 8601, in ASCII digits")
    m = _RELATIVE.match(text.strip())
    if m:
        return f"{max(0.0, now - int(m.group(1)) * _UNIT_SECONDS[m.group(2)]):.3f}"
    return text


def _name(text: str) -> str:
    if not text or len(text) > 64:
        raise _usage("NAME must be 1 to 64 characters")
    return quote(text, safe="")


def _params(**values: str | None) -> dict[str, str]:
    return {k: v for k, v in values.items() if v is not None}


class Output:
    """Where results go: a table on a terminal, JSON otherwise (or as asked)."""

    def __init__(self, mode: str) -> None:
        self.json = mode == "json" or (mode == "auto" and not sys.stdout.isatty())
        self.width = shutil.get_terminal_size((120, 24)).columns if not self.json else 0

    def rows(self, rows: list[dict[str, Any]], columns: Any, empty: str) -> None:
        if self.json:
            print(r.dumps(rows))
        elif not rows:
            print(empty)
        else:
            print(r.table(rows, columns(rows, time.time()), self.width))

    def one(self, data: Any, line: str) -> None:
        print(r.dumps(data) if self.json else line)

    def event(self, entry: dict[str, Any]) -> None:
        print(r.dumps_line(entry) if self.json else r.event_line(entry), flush=True)


async def _dispatch(args: argparse.Namespace, api: AdminClient, out: Output) -> int:
    cmd = args.admin_command
    now = time.time()
    limit = _limit(getattr(args, "limit", None))
    since = since_param(getattr(args, "since", None), now)
    if cmd == "health":
        t0 = time.monotonic()
        body = await api.call("GET", "/healthz")
        ms = (time.monotonic() - t0) * 1000
        out.one({**body, "url": api.base, "ms": round(ms, 1)},
                f"{body.get('status', '?')}: {api.base} answers ({ms:.0f} ms)")
    elif cmd == "devices":
        rows = await api.pages("/api/v1/devices", _params(since=since), limit)
        out.rows(rows, r.device_columns, "no device is active")
    elif cmd == "device":
        data = (await api.call("GET", f"/api/v1/devices/{_name(args.name)}"))["data"]
        out.one(data, r.record(data, now))
    elif cmd == "kick":
        data = (await api.call("DELETE", f"/api/v1/devices/{_name(args.name)}"))["data"]
        out.one(data, f"disconnected {data.get('name', args.name)}")
    elif cmd == "lockouts":
        rows = await api.pages("/api/v1/lockouts", {}, limit)
        out.rows(rows, r.lockout_columns, "no failed logins are recorded")
    elif cmd == "unblock":
        data = (await api.call("DELETE", f"/api/v1/lockouts/{_name(args.name)}"))["data"]
        what = "lifted the block on" if data.get("blocked") else "forgot the failed logins of"
        out.one(data, f"{what} {data.get('name', args.name)} "
                      f"({data.get('failures', 0)} failures)")
    elif cmd == "files":
        rows = await api.pages("/api/v1/files", _params(device=args.device, since=since), limit)
        out.rows(rows, r.file_columns, "no stored file")
    elif cmd == "logs":
        rows = await api.pages(f"/api/v1/logs/{args.log}",
                               _params(device=args.device, since=since), limit)
        if args.log != "devices":
            rows.reverse()  # the newest N, in time order as in the file
        columns = r.device_log_columns if args.log == "devices" else r.file_log_columns
        out.rows(rows, columns, f"the {args.log} log is empty")
    elif cmd == "events":
        params = _params(device=args.device, event=args.event)
        if args.follow:
            if since is not None:
                raise _usage("--since does not go with --follow")
            from edgenet.admin.follow import follow

            return await follow(api, params, out.event)
        rows = await api.pages("/api/v1/events", {**params, **_params(since=since)}, limit)
        rows.reverse()  # oldest first: the newest at the bottom, as --follow goes on
        out.rows(rows, r.event_columns, "no event")
    elif cmd == "reload-credentials":
        data = (await api.call("POST", "/api/v1/credentials/reload"))["data"]
        out.one(data, f"reloaded: {data.get('devices')} devices, "
                      f"added {_names(data.get('added'))}, removed {_names(data.get('removed'))},"
                      f" disconnected {_names(data.get('disconnected'))}")
    return 0


def _names(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value)) if value else "none"
    return str(value if value is not None else "none")


def run_admin(args: argparse.Namespace, environ: dict[str, str] | None = None) -> int:
    env = dict(os.environ if environ is None else environ)
    try:
        url = resolve_url(args, env)
        token = resolve_token(args, env)
        timeout = _positive(args.timeout, "--timeout")
        out = Output(args.output)

        async def run() -> int:
            async with AdminClient(url, token, timeout) as api:
                return await _dispatch(args, api, out)

        return asyncio.run(run())
    except AdminError as exc:
        print(f"edgenet admin: {exc.message}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (``| head``) went away: stop quietly, as other tools do.
        sys.stderr.close()
        return 0
