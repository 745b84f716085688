"""The admin app: routes, middlewares, and its start and stop with the EdgeServer.

It runs in the server's process and event loop (``install_admin`` adds it to the
server's ``on_start``/``on_stop`` hooks) and serves from the server's own state
(``EdgeServer.state``, opened before the admin API starts), events included.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

import structlog
from aiohttp import web

from admin_api import views as v
from admin_api.auth import admin_config_error, auth_middleware
from admin_api.errors import body_limit_middleware, error_middleware
from admin_api.guard import AdminLimits, ConnectionGuard, GuardedSite
from admin_api.metrics import ServerMetrics
from admin_api.sampling import HistorySampler

if TYPE_CHECKING:
    from importlib.abc import Traversable

    from edgenet.server.app import EdgeServer

log = structlog.get_logger("edgenet.admin")

#: Largest request body accepted (no endpoint takes one; this bounds what is read).
MAX_BODY = 64 * 1024
#: Seconds given to open requests (event streams) when the admin API stops.
SHUTDOWN_GRACE = 2.0

API = "/api/v1"


class AdminStartError(Exception):
    """The admin API cannot start (port taken, address unusable): one line for the CLI."""


def _routes() -> list[web.RouteDef]:
    return [
        web.get("/", v.index),
        web.get("/healthz", v.healthz),
        web.get("/metrics", v.metrics),
        web.get(f"{API}/openapi.json", v.openapi),
        web.get(f"{API}/devices", v.list_devices),
        web.get(f"{API}/devices/{{name}}", v.get_device),
        web.delete(f"{API}/devices/{{name}}", v.disconnect_device),
        web.get(f"{API}/lockouts", v.list_lockouts),
        web.delete(f"{API}/lockouts/{{name}}", v.lift_lockout),
        web.get(f"{API}/logs/uploads", v.upload_log),
        web.get(f"{API}/logs/deletions", v.deletion_log),
        web.get(f"{API}/logs/devices", v.device_log),
        web.get(f"{API}/events", v.list_events),
        web.get(f"{API}/events/stream", v.stream_events),
        web.get(f"{API}/files", v.list_files),
        web.post(f"{API}/credentials/reload", v.reload_credentials),
        web.get(f"{API}/history", v.history),
        web.get("/static/{name}", v.static_file),
    ]


def _page_csp(page: bytes) -> str:
    """A Content-Security-Policy that lets only the page's own inline script and
    style run (by hash) and lets it talk only to this server."""
    def hashes(tag: str) -> str:
        blocks = re.findall(rb"<" + tag.encode() + rb">(.*?)</" + tag.encode() + rb">", page,
                            re.DOTALL)
        return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'"
                        for b in blocks)
    return (f"default-src 'none'; script-src 'self' {hashes('script')}; "
            f"style-src 'self' {hashes('style')}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'")


#: The page's files by extension (anything else under static/ is not served).
STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


def _static_assets(files: Traversable) -> dict[str, tuple[bytes, str]]:
    """The page's scripts and styles (its own and the vendored chart library), read
    once: served from memory by name."""
    assets: dict[str, tuple[bytes, str]] = {}
    for folder in (files / "static", files / "static" / "vendor"):
        for item in folder.iterdir():
            kind = STATIC_TYPES.get("." + item.name.rsplit(".", 1)[-1])
            if kind and item.is_file():
                assets[item.name] = (item.read_bytes(), kind)
    return assets


async def _on_shutdown(app: web.Application) -> None:
    app[v.CONTEXT].state.events.close_subscribers()


def create_app(server: EdgeServer, *, token: str | None = None) -> web.Application:
    """The admin application of ``server`` (opened: ``await server.open()``).

    ``token``: the bearer token (None: read-only, for loopback).
    """
    state = server.state
    events = state.events
    metrics = ServerMetrics(server)
    events.add_listener(metrics.observe)
    files = resources.files("admin_api")
    page = (files / "static" / "index.html").read_bytes()
    app = web.Application(middlewares=[error_middleware, body_limit_middleware(MAX_BODY),
                                       auth_middleware(token)],
                          client_max_size=MAX_BODY)
    app[v.CONTEXT] = v.AdminContext(server=server, state=state, metrics=metrics,
                                    openapi=(files / "openapi.json").read_bytes(),
                                    page=page, page_csp=_page_csp(page))
    app[v.CONTEXT].assets = _static_assets(files)
    app[v.CONTEXT].history = sampler = HistorySampler(metrics, server.clock)
    app.cleanup_ctx.append(sampler.cleanup_ctx)
    app.add_routes(_routes())
    app.on_shutdown.append(_on_shutdown)

    async def detach(_: web.Application) -> None:
        events.remove_listener(metrics.observe)
    app.on_cleanup.append(detach)
    return app


class AdminService:
    """The admin API of one server: started by the server's ``on_start`` hook."""

    def __init__(self, host: str | None = None, port: int | None = None,
                 token: str | None = None) -> None:
        self.host = host
        self.port_wanted = port
        self.token = token
        self.runner: web.AppRunner | None = None

    async def start(self, server: EdgeServer) -> None:
        cfg = server.config
        host = self.host if self.host is not None else cfg.admin_host
        port = self.port_wanted if self.port_wanted is not None else cfg.admin_port
        token = self.token if self.token is not None else cfg.admin_token
        problem = admin_config_error(host, token)
        if problem:
            raise AdminStartError(problem)
        app = create_app(server, token=token)
        limits = AdminLimits(cfg.admin_max_connections, cfg.admin_header_timeout,
                             cfg.admin_idle_timeout)

        def handler() -> asyncio.Protocol:
            assert runner.server is not None
            return runner.server()

        guard = ConnectionGuard(handler, limits)
        app.middlewares.insert(0, guard.middleware)
        runner = web.AppRunner(app, handle_signals=False, access_log=None,
                               shutdown_timeout=SHUTDOWN_GRACE,
                               keepalive_timeout=limits.idle_timeout)
        await runner.setup()
        site = GuardedSite(runner, host, port, guard, server.state.fd_exhaustion, backlog=128)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            if exc.errno == errno.EADDRINUSE:
                raise AdminStartError(f"admin port {port} on {host} is already in use") from None
            raise AdminStartError(f"cannot serve the admin API on {host}:{port}: "
                                  f"{exc.strerror or exc}") from None
        self.runner = runner
        bound = runner.addresses[0]
        name = f"[{bound[0]}]" if ":" in str(bound[0]) else str(bound[0])
        log.info("admin_ready", host=str(bound[0]), port=int(bound[1]),
                 url=f"http://{name}:{bound[1]}/",
                 auth="token" if token else "none (loopback, read-only)")

    @property
    def port(self) -> int:
        assert self.runner is not None, "the admin API is not running"
        return int(self.runner.addresses[0][1])

    async def stop(self, server: EdgeServer | None = None) -> None:
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


def install_admin(server: EdgeServer, *, host: str | None = None, port: int | None = None,
                  token: str | None = None) -> AdminService:
    """Start the admin API with ``server`` and stop it with it. Host, port and token
    default to the server's config (``admin_host``, ``admin_port``, ``admin_token``)."""
    service = AdminService(host, port, token)
    server.on_start.append(service.start)
    server.on_stop.append(service.stop)
    return service


async def start_admin(server: EdgeServer, *, host: str | None = None,
                      port: int | None = None, token: str | None = None) -> AdminService:
    """Start the admin API of a running server now; ``await service.stop()`` ends it."""
    service = AdminService(host, port, token)
    await service.start(server)
    return service
