"""Talking to the admin API over HTTP (aiohttp's client), with every failure turned
into one ``AdminError`` carrying the line to print and the exit status.

Exit statuses: 1 the server refused (a conflict, too many streams), 2 usage (a bad
parameter the server named), 3 authentication refused, 4 server unreachable (or not
an edgenet admin API), 5 not found.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncGenerator, Mapping
from typing import Any

import aiohttp
from typing_extensions import Self

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_UNREACHABLE = 4
EXIT_NOT_FOUND = 5

#: Largest page the API hands out (its MAX_LIMIT).
PAGE = 1000
#: Pages read for one listing at most (1,000,000 records), so a loop always ends.
MAX_PAGES = 1000


class AdminError(Exception):
    """One line for stderr and the exit status it means."""

    def __init__(self, message: str, status: int, code: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def error_for(http_status: int, body: Any, url: str) -> AdminError:
    """The AdminError for a non-2xx answer."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return AdminError(f"{url} answered HTTP {http_status} without an edgenet error "
                          "(is it the admin API?)", EXIT_UNREACHABLE)
    code, message = str(err.get("code", "")), str(err.get("message", ""))
    if http_status == 401:
        return AdminError("authentication refused: the token is missing or wrong "
                          "(set EDGENET_ADMIN_TOKEN or --token-file)", EXIT_AUTH, code)
    if http_status == 403:
        return AdminError(f"refused: {message}", EXIT_AUTH, code)
    if http_status == 404:
        return AdminError(message, EXIT_NOT_FOUND, code)
    if http_status == 400:
        return AdminError(f"{code}: {message}", EXIT_USAGE, code)
    return AdminError(f"{code or 'error'}: {message}", EXIT_REFUSED, code)


class AdminClient:
    """One connection pool to one admin API; use as ``async with AdminClient(...)``."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        self.base = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Self:
        self._session = aiohttp.ClientSession(
            headers=self.headers, timeout=aiohttp.ClientTimeout(total=self.timeout),
            auto_decompress=True)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "use AdminClient in 'async with'"
        return self._session

    async def call(self, method: str, path: str,
                   params: Mapping[str, str] | None = None) -> Any:
        """The JSON body of a 2xx answer; anything else raises AdminError."""
        url = self.base + path
        try:
            async with self.session.request(method, url, params=params or None) as resp:
                raw = await resp.read()
                body = _json(raw)
                if resp.status >= 300:
                    raise error_for(resp.status, body, self.base)
                if body is None:
                    raise AdminError(f"{self.base} did not answer JSON (is it the admin API?)",
                                     EXIT_UNREACHABLE)
                return body
        except AdminError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            raise unreachable(self.base, exc) from None

    async def pages(self, path: str, params: Mapping[str, str], limit: int | None
                    ) -> list[Any]:
        """Every record of a list (following ``next_cursor``), or the first ``limit``."""
        out: list[Any] = []
        query = dict(params)
        for _ in range(MAX_PAGES):
            want = PAGE if limit is None else min(PAGE, limit - len(out))
            query["limit"] = str(want)
            body = await self.call("GET", path, query)
            out.extend(body.get("data", []))
            meta = body.get("meta") or {}
            if not meta.get("has_next") or (limit is not None and len(out) >= limit):
                break
            query["cursor"] = str(meta.get("next_cursor"))
        return out

    async def stream(self, path: str, params: Mapping[str, str],
                     last_id: str | None) -> AsyncGenerator[bytes, None]:
        """The raw chunks of a server-sent event stream (no total timeout)."""
        headers = {"Accept": "text/event-stream"}
        if last_id:
            headers["Last-Event-ID"] = last_id
        timeout = aiohttp.ClientTimeout(total=None, connect=self.timeout,
                                        sock_read=SSE_SILENCE)
        url = self.base + path
        try:
            async with self.session.get(url, params=params or None, headers=headers,
                                        timeout=timeout) as resp:
                if resp.status >= 300:
                    raise error_for(resp.status, _json(await resp.read()), self.base)
                async for chunk in resp.content.iter_any():
                    yield chunk
        except AdminError:
            raise
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise unreachable(self.base, exc) from None


#: Seconds without a byte before a stream is taken as dead (the server sends a
#: keep-alive comment every 15 s).
SSE_SILENCE = 45.0


def unreachable(base: str, exc: BaseException) -> AdminError:
    if isinstance(exc, asyncio.TimeoutError):
        reason = "no answer in time"
    elif isinstance(exc, aiohttp.ClientConnectorError):
        err = exc.os_error
        # asyncio words a refused connection "Connect call failed (...)": say what it is.
        reason = os.strerror(err.errno).lower() if err.errno else str(err)
    elif isinstance(exc, aiohttp.InvalidURL):
        return AdminError(f"invalid --url {base}", EXIT_USAGE)
    else:
        reason = str(exc) or type(exc).__name__
    return AdminError(f"cannot reach the admin API at {base}: {reason}", EXIT_UNREACHABLE)


def _json(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except ValueError:
        return None
