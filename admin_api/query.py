"""Query parameters of the admin API: limits, cursors, filters, and time formats.

Every parse error is an ``ApiError`` (400) naming the parameter, never a 500.
Cursors are opaque to clients: base64url of ``<list>:<position>``, so a cursor of
one list is refused by another.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

from aiohttp import web

from admin_api.errors import ApiError
from edgenet.numbers import NumberError, parse_ascii_float, parse_ascii_int
from edgenet.server.logs import format_timestamp, parse_timestamp

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Longest device name accepted in a filter or a path (the wire protocol's limit).
MAX_NAME = 64
MAX_EVENT_NAMES = 20

T = TypeVar("T")


def iso(t: float | None) -> str | None:
    """ISO 8601 in UTC with milliseconds, e.g. ``2024-05-01T10:31:13.250Z``."""
    if t is None:
        return None
    text = datetime.fromtimestamp(t, tz=timezone.utc).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def times(prefix: str, t: float) -> dict[str, Any]:
    """A time three ways: ISO 8601 (UTC), the logs' own format (local), Unix seconds."""
    return {prefix: iso(t), f"{prefix}_text": format_timestamp(t),
            f"{prefix}_epoch": round(t, 3)}


def limit_of(request: web.Request) -> int:
    raw = request.query.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    try:
        return parse_ascii_int(raw, 1, MAX_LIMIT, "limit")
    except NumberError:
        raise ApiError(400, "bad_limit", f"limit must be an integer from 1 to {MAX_LIMIT}"
                       ) from None


def encode_cursor(kind: str, position: int) -> str:
    raw = f"{kind}:{position}".encode("ascii")
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def cursor_of(request: web.Request, kind: str) -> int | None:
    """The position a ``cursor`` parameter stands for, or None when there is none."""
    raw = request.query.get("cursor")
    if raw is None or raw == "":
        return None
    try:
        if len(raw) > 64:
            raise ValueError
        text = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
        got_kind, _, number = text.partition(":")
        if got_kind != kind:
            raise ValueError
        return parse_ascii_int(number)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise ApiError(400, "bad_cursor", "cursor is not one this list handed out") from None


def name_param(value: str | None, what: str = "device") -> str | None:
    if value is None:
        return None
    if not value or len(value) > MAX_NAME:
        raise ApiError(400, f"bad_{what}", f"{what} must be 1 to {MAX_NAME} characters")
    return value


def event_names(request: web.Request) -> frozenset[str] | None:
    raw = request.query.getall("event", [])
    if not raw:
        return None
    names = {n.strip() for part in raw for n in part.split(",") if n.strip()}
    if not names or len(names) > MAX_EVENT_NAMES or any(len(n) > MAX_NAME for n in names):
        raise ApiError(400, "bad_event", f"event must be 1 to {MAX_EVENT_NAMES} names, "
                                         "comma-separated")
    return frozenset(names)


def since_of(request: web.Request) -> float | None:
    """``since`` as Unix seconds; it may be Unix seconds, ISO 8601 (no zone means
    UTC) or the logs' own ``dd Month yyyy hh:mm:ss`` (local time)."""
    raw = request.query.get("since")
    if raw is None:
        return None
    raw = raw.strip()
    if not raw.isascii():  # every accepted form is ASCII; int/float/fromisoformat take more
        raise ApiError(400, "bad_since", "since must be Unix seconds, ISO 8601 or "
                                         "'dd Month yyyy hh:mm:ss', in ASCII digits")
    try:
        return parse_ascii_float(raw, 0.0, None, "since")
    except NumberError:
        if raw[:1] in "-+" or raw.lower() in ("inf", "nan", "infinity"):
            raise ApiError(400, "bad_since", "since must be a non-negative finite number"
                           ) from None
    try:
        parsed = datetime.fromisoformat(raw[:-1] + "+00:00" if raw.endswith("Z") else raw)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=timezone.utc)
        return parsed.timestamp()
    except ValueError:
        pass
    try:
        return parse_timestamp(raw)
    except (ValueError, OverflowError):
        raise ApiError(400, "bad_since", "since must be Unix seconds, ISO 8601 or "
                                         "'dd Month yyyy hh:mm:ss'") from None


def page_by_offset(items: list[T], limit: int, offset: int | None, kind: str
                   ) -> tuple[list[T], dict[str, Any]]:
    """One page of a list rebuilt per request (few items, no stable positions)."""
    start = offset or 0
    page = items[start:start + limit]
    more = start + limit < len(items)
    return page, meta(limit, len(page), encode_cursor(kind, start + limit) if more else None)


def page_by_position(positioned: Iterable[tuple[int, T]], limit: int, kind: str
                     ) -> tuple[list[T], dict[str, Any]]:
    """One page from ``(position, item)`` pairs, newest first; the next cursor is the
    position of the last item returned (the next page holds positions below it)."""
    page: list[T] = []
    last = 0
    it: Iterator[tuple[int, T]] = iter(positioned)
    for position, item in it:
        if len(page) == limit:
            return page, meta(limit, len(page), encode_cursor(kind, last))
        page.append(item)
        last = position
    return page, meta(limit, len(page), None)


def meta(limit: int, count: int, next_cursor: str | None) -> dict[str, Any]:
    return {"limit": limit, "count": count, "has_next": next_cursor is not None,
            "next_cursor": next_cursor}
