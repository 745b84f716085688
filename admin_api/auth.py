"""Who may use the admin API: a bearer token, or loopback read-only access.

* With a token, every request but the public ones (``/healthz`` and the page's
  HTML shell, which holds no data) must carry ``Authorization: Bearer <token>``;
  the comparison takes constant time.
* Without a token the API listens on loopback only (the CLI refuses anything
  else): reads are open, the mutating endpoints are refused with 403, and a
  ``Host`` header that is not a loopback name is refused too, so a web page that
  rebinds its DNS name to 127.0.0.1 cannot read the API through the browser.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

from aiohttp import web

from admin_api.errors import ApiError, Handler

#: Paths served without a token: liveness, and the page (static HTML, no data).
PUBLIC_PATHS = frozenset({"/healthz", "/"})
#: The page's scripts and styles (static files, no data) are public too.
PUBLIC_PREFIX = "/static/"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name to listen on, or a Host header's name)
    is loopback only."""
    h = host.strip().lower()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if h in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False


def admin_config_error(host: str, token: str | None) -> str | None:
    """Why the admin API must not start with this host and token, or None."""
    if token is not None and not token.strip():
        return "the admin token is empty"
    if token is None and not is_loopback(host):
        return (f"refusing to serve the admin API on {host} without a token: "
                "set --admin-token or EDGENET_ADMIN_TOKEN, or use a loopback --admin-host")
    return None


def _host_name(header: str) -> str:
    """The name part of a Host header (``[::1]:8080`` -> ``::1``)."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def bearer_token(request: web.Request) -> str | None:
    value = request.headers.get("Authorization", "")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()


def token_matches(given: str | None, token: str) -> bool:
    # Compare digests in constant time: equal lengths, so not even the token's
    # length leaks; a missing token is compared too, like a wrong one.
    def digest(text: str) -> bytes:
        return hashlib.sha256(text.encode("utf-8")).digest()
    return hmac.compare_digest(digest(given or ""), digest(token))


def _is_public(path: str) -> bool:
    return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX)


def auth_middleware(token: str | None) -> web.middleware:  # type: ignore[valid-type]
    """The middleware for a server with (or without) a token."""

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        route_error = request.match_info.http_exception
        if route_error is not None:  # no such route or method: say so (404/405) first
            raise route_error
        if token is not None:
            if _is_public(request.path):
                return await handler(request)
            if not token_matches(bearer_token(request), token):
                raise ApiError(401, "unauthorized",
                               "this endpoint needs 'Authorization: Bearer <token>'",
                               {"WWW-Authenticate": 'Bearer realm="edgenet-admin"'})
            return await handler(request)
        if not is_loopback(_host_name(request.headers.get("Host", "localhost"))):
            raise ApiError(403, "forbidden_host",
                           "without a token the admin API answers loopback host names only")
        if request.method not in SAFE_METHODS and request.path not in PUBLIC_PATHS:
            raise ApiError(403, "read_only",
                           "the server has no admin token: the API is read-only "
                           "(start it with --admin-token or EDGENET_ADMIN_TOKEN to allow changes)")
        return await handler(request)

    return check
