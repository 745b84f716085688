"""Handlers of the admin API. They read and change the server's state through its
interfaces (``ServerState``: presence, lockouts, files, events) and ask the server
for what only it does (disconnect, reload), on the event loop, without blocking
I/O: no file is read per request (the page and the OpenAPI document are loaded once).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from admin_api import query as q
from admin_api.errors import ApiError, json_response
from admin_api.history import SERIES_NAMES, WINDOWS
from admin_api.metrics import ServerMetrics
from admin_api.sampling import HistorySampler
from edgenet.numbers import NumberError, parse_ascii_int
from edgenet.server.compute import Stats
from edgenet.server.interfaces import ActiveDevice, LockoutEntry, LogName, event_matches
from edgenet.server.logs import FileRecord
from edgenet.server.state import LiveSession, ServerState

if TYPE_CHECKING:
    from edgenet.server.app import EdgeServer

log = structlog.get_logger("edgenet.admin")

#: Seconds between SSE keep-alive comments (proxies drop silent streams).
SSE_KEEPALIVE = 15.0


@dataclass
class AdminContext:
    """What the handlers need; one per admin app."""

    server: EdgeServer
    state: ServerState
    metrics: ServerMetrics
    openapi: bytes
    page: bytes
    page_csp: str
    keepalive: float = SSE_KEEPALIVE
    history: HistorySampler | None = None
    #: The page's scripts and styles by file name: (bytes, content type).
    assets: dict[str, tuple[bytes, str]] = field(default_factory=dict)


CONTEXT: web.AppKey[AdminContext] = web.AppKey("admin_context", AdminContext)


def _ctx(request: web.Request) -> AdminContext:
    return request.app[CONTEXT]


# -- representations ------------------------------------------------------------


def device_json(d: ActiveDevice, session: LiveSession | None) -> dict[str, Any]:
    """A device; its session's counters when the session lives on this node."""
    return {"name": d.name, "ip": d.ip, "udp_port": d.udp_port, **q.times("since", d.since),
            "session_id": d.session_id, **({"node": d.node} if d.node is not None else {}),
            "commands": session.commands if session is not None else 0,
            "bytes_uploaded": session.bytes_uploaded if session is not None else 0}


def _device_json(state: ServerState, d: ActiveDevice) -> dict[str, Any]:
    return device_json(d, state.sessions.get(d.session_id))


def lockout_json(e: LockoutEntry, now: float, max_attempts: int) -> dict[str, Any]:
    blocked = e.blocked_until is not None and e.blocked_until > now
    out: dict[str, Any] = {"name": e.name, "failures": e.failures, "blocked": blocked,
                           "attempts_left": max(0, max_attempts - e.failures),
                           "blocked_until": None, "blocked_until_text": None,
                           "blocked_until_epoch": None, "seconds_left": 0.0}
    if blocked and e.blocked_until is not None:
        out.update(q.times("blocked_until", e.blocked_until))
        out["seconds_left"] = round(e.blocked_until - now, 1)
    return out


def record_json(r: FileRecord) -> dict[str, Any]:
    return {"device": r.device, **q.times("time", r.time), "file_id": r.file_id,
            "samples": r.samples}


# -- the page, health, metrics, the OpenAPI document --------------------------------


async def index(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    return web.Response(body=ctx.page, content_type="text/html", charset="utf-8", headers={
        "Content-Security-Policy": ctx.page_csp, "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY",
        "Cache-Control": "no-store"})


async def static_file(request: web.Request) -> web.Response:
    """One of the page's scripts or styles (read once at start, served from memory)."""
    asset = _ctx(request).assets.get(request.match_info["name"])
    if asset is None:
        raise ApiError(404, "not_found", f"no such file: {request.match_info['name'][:100]}")
    body, kind = asset
    return web.Response(body=body, content_type=kind, charset="utf-8", headers={
        "X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"})


async def healthz(request: web.Request) -> web.Response:
    """``{"status": "ok"}``; else ``degraded`` (200) or ``not_ready`` (503) and the
    problems (``Health``): a missing data dir, a device log that is behind."""
    health = _ctx(request).state.health
    if health.status == "ok":
        return json_response({"status": "ok"})
    problems = [{"code": p.code, "message": p.message, "since": q.iso(p.since),
                 "ready": p.ready} for p in health.problems()]
    return json_response({"status": health.status, "problems": problems},
                         status=503 if health.status == "not_ready" else 200)


async def metrics(request: web.Request) -> web.Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    resp = web.Response(body=await _ctx(request).metrics.render())
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    resp.headers["Cache-Control"] = "no-store"
    return resp


async def openapi(request: web.Request) -> web.Response:
    return web.Response(body=_ctx(request).openapi, content_type="application/json")


# -- devices ---------------------------------------------------------------------


def _not_active(name: str) -> ApiError:
    return ApiError(404, "device_not_found", f"device {name[:64]} is not active")


async def list_devices(request: web.Request) -> web.Response:
    state = _ctx(request).state
    limit, offset = q.limit_of(request), q.cursor_of(request, "devices")
    since = q.since_of(request)
    # Login order is the order of ``since``: newest first is the reverse.
    items = [_device_json(state, d) for d in reversed(await state.presence.devices())
             if since is None or d.since >= since]
    page, meta = q.page_by_offset(items, limit, offset, "devices")
    return json_response({"data": page, "meta": meta})


async def get_device(request: web.Request) -> web.Response:
    state = _ctx(request).state
    name = q.name_param(request.match_info["name"]) or ""
    dev = await state.presence.get(name)
    if dev is None:
        raise _not_active(name)
    return json_response({"data": _device_json(state, dev)})


async def disconnect_device(request: web.Request) -> web.Response:
    ctx = _ctx(request)
    name = q.name_param(request.match_info["name"]) or ""
    dev = await ctx.state.presence.get(name)
    before = _device_json(ctx.state, dev) if dev is not None else None
    if before is None or await ctx.server.disconnect_device(name) is None:
        raise _not_active(name)
    # The active list is already changed; wait for edge-device-log.txt to say so too.
    await ctx.state.device_log.written()
    return json_response({"data": {**before, "disconnected": True}})


# -- lockouts --------------------------------------------------------------------


async def list_lockouts(request: web.Request) -> web.Response:
    state = _ctx(request).state
    limit, offset = q.limit_of(request), q.cursor_of(request, "lockouts")
    device = q.name_param(request.query.get("device"))
    now = state.clock()
    # Entries come in order of their last failure: newest first is the reverse.
    items = [lockout_json(e, now, state.config.max_attempts)
             for e in reversed(await state.lockouts.entries(now))
             if device is None or e.name == device]
    page, meta = q.page_by_offset(items, limit, offset, "lockouts")
    return json_response({"data": page, "meta": meta})


async def lift_lockout(request: web.Request) -> web.Response:
    state = _ctx(request).state
    name = q.name_param(request.match_info["name"]) or ""
    now = state.clock()
    entry = await state.lockouts.lift(name, now)
    if entry is None:
        raise ApiError(404, "lockout_not_found",
                       f"no failed logins or block are recorded for {name}")
    was = lockout_json(entry, now, state.config.max_attempts)
    log.info("block_lifted", device=name, failures=entry.failures, was_blocked=was["blocked"],
             by="admin")
    return json_response({"data": {**was, "lifted": True}})


# -- credentials -----------------------------------------------------------------


async def reload_credentials(request: web.Request) -> web.Response:
    """Re-read the credentials file, as SIGHUP does; revoked devices are disconnected."""
    result = await _ctx(request).server.reload_credentials()
    if not result["reloaded"]:
        err = result["error"]
        raise ApiError(409, err["code"], err["message"])
    return json_response({"data": result})


# -- logs ------------------------------------------------------------------------


async def _file_log(request: web.Request, log_: LogName) -> web.Response:
    limit, before = q.limit_of(request), q.cursor_of(request, log_)
    device = q.name_param(request.query.get("device"))
    since = q.since_of(request)
    # One more than a page, to know whether there is a next one.
    positioned = await _ctx(request).state.files.log_records(
        log_, limit=limit + 1, before=before, device=device, since=since)
    page, meta = q.page_by_position(positioned, limit, log_)
    return json_response({"data": [record_json(r) for r in page], "meta": meta})


async def upload_log(request: web.Request) -> web.Response:
    return await _file_log(request, "uploads")


async def deletion_log(request: web.Request) -> web.Response:
    return await _file_log(request, "deletions")


async def device_log(request: web.Request) -> web.Response:
    state = _ctx(request).state
    limit, offset = q.limit_of(request), q.cursor_of(request, "device-log")
    device = q.name_param(request.query.get("device"))
    since = q.since_of(request)
    # The same order and numbering as edge-device-log.txt (login order, seq from 1).
    items = [{"seq": seq, **q.times("since", d.since), "name": d.name, "ip": d.ip,
              "udp_port": d.udp_port}
             for seq, d in enumerate(await state.presence.devices(), 1)
             if (device is None or d.name == device) and (since is None or d.since >= since)]
    page, meta = q.page_by_offset(items, limit, offset, "device-log")
    return json_response({"data": page, "meta": meta})


# -- files -----------------------------------------------------------------------


async def list_files(request: web.Request) -> web.Response:
    state = _ctx(request).state
    limit, offset = q.limit_of(request), q.cursor_of(request, "files")
    device = q.name_param(request.query.get("device"))
    since = q.since_of(request)
    files = sorted((f for f in await state.files.files(device)
                    if since is None or f.uploaded_at >= since),
                   key=lambda f: (f.uploaded_at, f.device, f.file_id), reverse=True)
    items = [{"device": f.device, "file_id": f.file_id, "size": f.size, "samples": f.samples,
              **q.times("uploaded_at", f.uploaded_at), "stats": stats_json(f.stats)}
             for f in files]
    page, meta = q.page_by_offset(items, limit, offset, "files")
    return json_response({"data": page, "meta": meta})


def stats_json(stats: Stats | None) -> dict[str, str] | None:
    """A stored file's SUM/AVERAGE/MAX/MIN once computed (an SCS), else None."""
    if stats is None:
        return None
    return {op.lower(): stats.result(op) for op in ("SUM", "AVERAGE", "MAX", "MIN")}


# -- history ---------------------------------------------------------------------


async def history(request: web.Request) -> web.Response:
    """The counters' history for the charts: one window, some or all series."""
    sampler = _ctx(request).history
    name = request.query.get("window", "15m")
    if name not in WINDOWS:
        raise ApiError(400, "bad_window", "window must be one of " + ", ".join(WINDOWS))
    series = SERIES_NAMES
    raw = request.query.get("series")
    if raw is not None:
        series = tuple(dict.fromkeys(n.strip() for n in raw.split(",") if n.strip()))
        unknown = [n for n in series if n not in SERIES_NAMES]
        if not series or unknown:
            raise ApiError(400, "bad_series", "series must be comma-separated names from: "
                                              + ", ".join(SERIES_NAMES))
    if sampler is None:
        raise ApiError(503, "unavailable", "this admin app keeps no history")
    return json_response({"data": sampler.window(name, series)})


# -- events ----------------------------------------------------------------------


async def list_events(request: web.Request) -> web.Response:
    events = _ctx(request).state.events
    limit, before = q.limit_of(request), q.cursor_of(request, "events")
    device = q.name_param(request.query.get("device"))
    names = q.event_names(request)
    since = q.since_of(request)
    found = await events.query(limit=limit + 1, before=before, device=device, names=names,
                               since=since)
    page, meta = q.page_by_position(((e["seq"], e) for e in found), limit, "events")
    return json_response({"data": page, "meta": meta})


def _sse(entry: dict[str, Any]) -> bytes:
    data = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    return f"id: {entry['seq']}\ndata: {data}\n\n".encode()


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: every new event (filtered), after a replay of those
    newer than ``Last-Event-ID`` (or ``after``) still in the ring buffer."""
    ctx = _ctx(request)
    events = ctx.state.events
    device = q.name_param(request.query.get("device"))
    names = q.event_names(request)
    raw_after = request.headers.get("Last-Event-ID", request.query.get("after", ""))
    try:
        last = parse_ascii_int(raw_after) if raw_after else None
    except NumberError:
        raise ApiError(400, "bad_after", "Last-Event-ID / after must be an event seq"
                       ) from None
    sub = events.subscribe()
    if sub is None:
        raise ApiError(503, "too_many_streams",
                       f"at most {events.max_subscribers} event streams at once",
                       {"Retry-After": "5"})
    resp = web.StreamResponse(headers={
        "Content-Type": "text/event-stream", "Cache-Control": "no-store",
        "X-Accel-Buffering": "no"})
    try:
        await resp.prepare(request)
        await resp.write(b"retry: 3000\n: connected\n\n")
        sent = last if last is not None else await events.last_seq()
        if last is not None:
            for old in await events.after(last):
                if event_matches(old, device, names):
                    await resp.write(_sse(old))
                sent = old["seq"]
        while sub.ended is None:
            try:
                entry = await sub.next(ctx.keepalive)
            except asyncio.TimeoutError:
                await resp.write(b": keepalive\n\n")
                continue
            if entry is None or entry["seq"] <= sent:
                continue
            sent = entry["seq"]
            if event_matches(entry, device, names):
                await resp.write(_sse(entry))
        await resp.write(f"event: end\ndata: {json.dumps({'reason': sub.ended})}\n\n"
                         .encode())
    except ConnectionError:
        pass  # the client went away
    finally:
        events.unsubscribe(sub)
    return resp
