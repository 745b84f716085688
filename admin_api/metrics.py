"""Prometheus metrics of the server, in a private registry.

Counters are fed from the server's own structlog events (``observe`` is a
listener of the server's event log), so the device protocol code carries no
metrics calls. Gauges of current state (devices connected, names blocked) are
read from the server's state when scraped (``render``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    GCCollector,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from admin_api.history import SERIES_NAMES
from admin_api.udp_metrics import RendezvousCollector

if TYPE_CHECKING:
    from edgenet.server.app import EdgeServer

#: Seconds; device commands run from well under a millisecond (AED) to seconds (big UED).
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0, 30.0, 60.0)
#: Commands counted by name; anything else is counted as "other" (bounded label values).
KNOWN_COMMANDS = frozenset({"UED", "SCS", "DTE", "AED", "UVF"})
_DISCONNECT_EVENTS = {"logout": "logout", "disconnect": "disconnect",
                      "heartbeat_timeout": "heartbeat_timeout", "takeover": "takeover"}


class ServerMetrics:
    """The metrics of one EdgeServer, exposed by ``GET /metrics``."""

    def __init__(self, server: EdgeServer) -> None:
        self.server = server
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        # python_gc_*: collections of each generation (a full one pauses the server).
        GCCollector(registry=r)
        self.devices = Gauge("edgenet_devices_connected", "Devices logged in now", registry=r)
        Gauge("edgenet_connections_open", "TCP connections open now (logged in or not)",
              registry=r).set_function(lambda: server.connection_count)
        Gauge("edgenet_reply_buffered_bytes", "Bytes of replies held in the server for devices, "
              "not yet taken by the kernel (all connections)",
              registry=r).set_function(lambda: server.reply_bytes_buffered()[0])
        Gauge("edgenet_reply_buffered_max_bytes", "Bytes of replies held in the server for the "
              "one connection that holds the most", registry=r).set_function(
                  lambda: server.reply_bytes_buffered()[1])
        def slots(field: str) -> Callable[[], float]:
            def read() -> float:  # when scraped: the app's start replaces the slots
                now = server.upload_slots()
                return 0.0 if now is None else float(getattr(now, field))
            return read
        Gauge("edgenet_upload_slots", "Uploads the server lets stream at once (each holds "
              "a temporary file open)", registry=r).set_function(slots("slots"))
        Gauge("edgenet_upload_slots_in_use", "Uploads streaming now",
              registry=r).set_function(slots("in_use"))
        Gauge("edgenet_uploads_waiting", "Uploads waiting for a free slot now",
              registry=r).set_function(slots("waiting"))
        self.blocked = Gauge("edgenet_device_names_blocked",
                             "Device names blocked now after failed logins", registry=r)
        Gauge("edgenet_start_time_seconds", "When the server started (Unix time)",
              registry=r).set(server.started_at)
        self.logins = Counter("edgenet_logins", "Login attempts by outcome "
                              "(ok, failed, refused_blocked)", ["outcome"], registry=r)
        for outcome in ("ok", "failed", "refused_blocked"):
            self.logins.labels(outcome)
        self.blocks = Counter("edgenet_blocks", "Device names blocked after too many failures",
                              registry=r)
        self.commands = Counter("edgenet_commands", "Device commands served, by name and outcome",
                                ["command", "outcome"], registry=r)
        self.latency = Histogram("edgenet_command_duration_seconds",
                                 "Time to serve a device command, by name", ["command"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        for name in sorted(KNOWN_COMMANDS):
            self.latency.labels(name)
        self.uploaded_bytes = Counter("edgenet_uploaded_bytes", "Bytes of data files stored",
                                      registry=r)
        self.uploaded_samples = Counter("edgenet_uploaded_samples",
                                        "Samples (lines) of data files stored", registry=r)
        self.uploads = Counter("edgenet_uploads", "Data files stored (UED)", registry=r)
        self.deletions = Counter("edgenet_deletions", "Data files deleted (DTE)", registry=r)
        # The server only brokers UDP transfers (UVF looks the peer up); the bytes go
        # device to device, so what is known here is how many transfers were set up.
        self.udp_transfers = Counter("edgenet_udp_transfers",
                                     "Peer-to-peer UDP transfers set up through the server "
                                     "(UVF lookups), by outcome", ["outcome"], registry=r)
        self.sessions_ended = Counter("edgenet_sessions_ended",
                                      "Device sessions ended, by reason", ["reason"], registry=r)
        self.protocol_errors = Counter("edgenet_protocol_errors",
                                       "Connections closed for breaking the protocol", registry=r)
        r.register(RendezvousCollector(server))

    async def refresh(self) -> None:
        """Set the gauges of current state from the server's state."""
        state = self.server.state
        now = state.clock()
        self.devices.set(await state.presence.count())
        self.blocked.set(sum(1 for e in await state.lockouts.entries(now)
                             if e.blocked_until is not None and e.blocked_until > now))

    def observe(self, entry: dict[str, Any]) -> None:
        """Count one server event (an EventBuffer listener)."""
        name = entry.get("event")
        if name == "login":
            self.logins.labels("ok").inc()
        elif name == "login_failed":
            self.logins.labels("failed").inc()
        elif name == "device_blocked":
            self.logins.labels("failed").inc()
            self.blocks.inc()
        elif name == "login_refused_blocked":
            self.logins.labels("refused_blocked").inc()
        elif name == "command":
            self._command(entry)
        elif name == "upload":
            self.uploads.inc()
            self.uploaded_bytes.inc(_number(entry.get("bytes")))
            self.uploaded_samples.inc(_number(entry.get("samples")))
        elif name == "delete":
            self.deletions.inc()
        elif name == "protocol_error":
            self.protocol_errors.inc()
        if name in _DISCONNECT_EVENTS:
            reason = _DISCONNECT_EVENTS[str(name)]
            if name == "disconnect" and entry.get("reason") == "admin":
                reason = "admin"
            self.sessions_ended.labels(reason).inc()

    def _command(self, entry: dict[str, Any]) -> None:
        command = str(entry.get("command"))
        if command not in KNOWN_COMMANDS:
            command = "other"
        outcome = str(entry.get("outcome", "unknown"))[:32]
        self.commands.labels(command, outcome).inc()
        self.latency.labels(command).observe(_number(entry.get("duration_ms")) / 1000.0)
        if command == "UVF":
            self.udp_transfers.labels("ok" if outcome == "ok" else "refused").inc()

    async def render(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        return 0.0
    return float(value)


#: ``totals()`` keys of the counters summed over their labels, by metric sample name.
_TOTALS = {"edgenet_devices_connected": "devices", "edgenet_uploaded_bytes_total": "upload_bytes",
           "edgenet_blocks_total": "blocks"}
_LOGIN_TOTALS = {"ok": "logins", "failed": "failed_logins", "refused_blocked": "failed_logins"}


def counter_totals(metrics: ServerMetrics) -> dict[str, float]:
    """The cumulative counters and current gauges the dashboard's history samples
    (the names of ``admin_api.history.SERIES``), read through the registry."""
    out = dict.fromkeys(SERIES_NAMES, 0.0)
    for family in metrics.registry.collect():
        for s in family.samples:
            key: str | None = _TOTALS.get(s.name)
            if s.name == "edgenet_commands_total":
                key = "commands." + s.labels.get("command", "other")
            elif s.name == "edgenet_logins_total":
                key = _LOGIN_TOTALS.get(s.labels.get("outcome", ""))
            elif s.name == "edgenet_udp_transfers_total":
                key = "uvf_announced" if s.labels.get("outcome") == "ok" else None
            if key is not None:
                out[key] = out.get(key, 0.0) + float(s.value)
    return out
