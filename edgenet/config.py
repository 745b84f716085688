"""Configuration of the server and the client: one place for every default.

The command line (``edgenet.__main__``, and the client's option modules) takes its
defaults from these dataclasses, through ``option_default``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: A logged-in device silent for this many heartbeats is closed (it is pinged after one).
SILENT_HEARTBEATS = 2.5


@dataclass(frozen=True)
class ServerConfig:
    port: int
    max_attempts: int
    host: str = "0.0.0.0"
    credentials: Path = Path("credentials.txt")
    data_dir: Path = Path(".")
    block_seconds: float = 10.0
    log_format: str = "auto"
    #: Seconds of silence before the server pings a device; SILENT_HEARTBEATS (2.5) times
    #: this closes it.
    heartbeat: float = 10.0
    #: Largest upload body accepted, in bytes.
    max_upload: int = 4 * 2**30
    admin_host: str = "127.0.0.1"
    admin_port: int = 8080
    admin_enabled: bool = True
    admin_token: str | None = None
    #: Admin HTTP connections open at once; one more gets 503 and is closed.
    admin_max_connections: int = 128
    #: Seconds a request head may take to arrive (from the connection opening, or
    #: from its first byte after a response), before the connection is closed.
    admin_header_timeout: float = 10.0
    #: Seconds a kept-alive admin connection may stay idle between requests.
    admin_idle_timeout: float = 60.0
    #: Open device connections at most; one more is told ``server_busy`` and closed.
    #: 0: what the open-file limit allows (``server.descriptors.connections_allowed``).
    max_connections: int = 0
    #: Failed logins per minute allowed per IP address (burst as large); 0: no limit.
    login_rate: int = 60
    #: Seconds a connection may stay without a successful login before it is closed
    #: (a person types the name and password on an open connection; as sshd LoginGraceTime).
    login_timeout: float = 120.0
    #: Seconds a reply may wait for a peer that does not read before it is dropped.
    send_timeout: float = 30.0
    #: Seconds an upload's body may make no progress before the upload and the
    #: connection are dropped (the temporary file removed, the device logged out).
    upload_idle_timeout: float = 30.0
    #: Seconds in-flight uploads get to finish on SIGTERM/SIGINT before they are aborted.
    shutdown_grace: float = 5.0
    #: PEM certificate chain and private key: serve devices over TLS when both are set.
    tls_cert: Path | None = None
    tls_key: Path | None = None
    #: Expect a PROXY protocol header (v1 or v2) first on every device connection, and
    #: only from these networks (``--trusted-proxies``); the header names the device.
    proxy_protocol: bool = False
    trusted_proxies: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # -- fleet mode (docs/FLEET.md): on when ``redis_url`` is set ---------------------
    #: ``redis://``, ``rediss://`` or ``unix://``: presence, lockouts, events, logs and
    #: file metadata are shared there.
    redis_url: str | None = None
    #: This node's name in the fleet (None: host name and port).
    node_id: str | None = None
    #: ``s3://BUCKET/PREFIX``: the data files live there (None: in the data dir).
    files_url: str | None = None
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    #: Seconds after which a node that stopped renewing its lease loses its devices.
    lease: float = 10.0
    #: Prefix of every Redis key (several fleets can share one Redis).
    redis_prefix: str = "edgenet"
    #: Redis connections this node's commands share; a command waits at most
    #: ``redis_pool_timeout`` seconds for a free one (then: service_unavailable).
    redis_max_connections: int = 64
    redis_pool_timeout: float = 5.0
    #: UDP port of the rendezvous and relay for UVF across NATs: None, the TCP port's
    #: number; 0, off.
    udp_port: int | None = None
    #: The relay's limits (0: none): bytes a second and bytes an hour, per device (what
    #: it sends through the relay) and in all.
    relay_device_rate: int = 32 * 2**20
    relay_total_rate: int = 128 * 2**20
    relay_device_bytes: int = 16 * 2**30
    relay_total_bytes: int = 256 * 2**30
    #: Partial uploads (protocol version 3) are kept this many hours after their last
    #: checkpoint, for the device to resume; 0 keeps none.
    resume_hours: float = 24.0
    #: The sizes of the files whose partials are kept, per device and in all (bytes).
    resume_budget: int = 4 * 2**30
    resume_total_budget: int = 32 * 2**30


@dataclass(frozen=True)
class ClientConfig:
    server_host: str
    server_port: int
    udp_port: int
    data_dir: Path = Path(".")
    log_format: str = "auto"
    #: CA bundle (PEM) to verify a TLS server with; None: plain TCP unless tls_insecure.
    tls_ca: Path | None = None
    #: TLS without verifying the server's certificate (a self-signed test set-up only).
    tls_insecure: bool = False
    #: UVF: largest file accepted from a peer, in bytes (as edgenet.rudp.TransferOptions).
    max_receive_size: int = 4 * 2**30
    #: UVF: files received at once; a further offer is refused as busy.
    max_incoming: int = 8
    #: UVF: file bytes per datagram; 1400 fits a 1500-byte MTU, up to 65487 on fast local links.
    chunk_size: int = 1400
    #: UDP port announced to the server instead of the bound one (NAT, port forwarding).
    advertise_udp_port: int | None = None
    #: UVF: how long the part of a file whose transfer stopped is kept for the same sender to
    #: resume it (hours; 0 keeps none), and the bytes of such parts kept at most.
    uvf_resume_hours: float = 24.0
    uvf_resume_budget: int = 4 * 2**30


def option_default(value: object) -> str | None:
    """A default as the command line would give it: text (every option's value arrives
    as text, from the command line, ``EDGENET_*`` or a TOML file, and is checked in one
    place), whole numbers without a fraction (``10``, not ``10.0``)."""
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
