"""The admin HTTP API and dashboard of the edgenet server (aiohttp, in-process).

It runs in the server's own event loop and reads the server's state (active
devices, lockouts, stored files and their logs, events) through its interfaces.
Routes and conventions follow EMQX's REST API: JSON under ``/api/v1``, paginated
lists, ``{"error": {"code", "message"}}`` errors. See docs/ADMIN_API.md.
"""

from admin_api.app import (
    AdminService,
    AdminStartError,
    create_app,
    install_admin,
    start_admin,
)
from admin_api.auth import admin_config_error, is_loopback
from edgenet.server.events import EventBuffer

__all__ = ["AdminService", "AdminStartError", "EventBuffer", "admin_config_error",
           "create_app", "install_admin", "is_loopback", "start_admin"]
