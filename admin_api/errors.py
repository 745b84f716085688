"""Errors of the admin API as values, and the middleware that renders them.

Every error leaves as ``{"error": {"code": "...", "message": "..."}}`` with its
HTTP status: our own ``ApiError``s, aiohttp's HTTPExceptions (no such route,
wrong method, body too large), storage faults (503 ``storage_error``) and, as a
last resort, our bugs (500, logged with a traceback, no details sent).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from edgenet.server.interfaces import BackendUnavailable

log = structlog.get_logger("edgenet.admin")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

#: Codes for aiohttp's own HTTP errors.
_STATUS_CODES = {
    400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
    405: "method_not_allowed", 406: "not_acceptable", 408: "request_timeout",
    411: "length_required", 413: "payload_too_large", 414: "uri_too_long",
    415: "unsupported_media_type", 421: "misdirected_request", 429: "too_many_requests",
    431: "headers_too_large", 503: "unavailable",
}


class ApiError(Exception):
    """An error the caller can cause: an HTTP status, a stable code, a message."""

    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str,
                   headers: dict[str, str] | None = None) -> web.Response:
    body = _dumps({"error": {"code": code, "message": message}})
    resp = web.Response(status=status, text=body, content_type="application/json",
                        headers=headers)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like pass through
            raise
        headers = {k: v for k, v in exc.headers.items()
                   if k in ("Allow", "WWW-Authenticate", "Retry-After")}
        code = _STATUS_CODES.get(exc.status, "http_error")
        message = exc.reason or code
        if exc.status == 405:
            message = f"method {request.method} is not allowed on {request.path}"
        elif exc.status == 404:
            message = f"no such endpoint: {request.path[:200]}"
        return error_response(exc.status, code, message, headers)
    except BackendUnavailable as exc:
        return error_response(503, "service_unavailable", exc.message)
    except (ConnectionResetError, ConnectionError):
        raise
    except OSError as exc:  # the storage behind the state (a missing data dir)
        log.error("admin_storage_error", path=request.path, error=exc.strerror or str(exc))
        return error_response(503, "storage_error",
                              f"the server cannot read its storage: {exc.strerror or exc}")
    except Exception:
        log.exception("admin_handler_failed", path=request.path, method=request.method)
        return error_response(500, "internal", "the admin API failed to serve the request")


def json_response(data: Any, status: int = 200) -> web.Response:
    resp = web.json_response(data, status=status, dumps=_dumps)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def body_limit_middleware(max_body: int) -> Any:
    """Refuse an announced body larger than ``max_body`` before any handler runs
    (handlers that never read a body would otherwise let it through unread)."""

    @web.middleware
    async def limit(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > max_body:
            raise ApiError(413, "payload_too_large",
                           f"request bodies are limited to {max_body} bytes")
        return await handler(request)

    return limit
