"""Configuration of the server and the client: one place for every default."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServerConfig:
    port: int
    max_attempts: int
    host: str = "0.0.0.0"
    credentials: Path = Path("credentials.txt")
    data_dir: Path = Path(".")
    block_seconds: float = 10.0
    log_format: str = "auto"
    #: Seconds of silence before the server pings a device; 3x this closes it.
    heartbeat: float = 10.0
    #: Largest upload body accepted, in bytes.
    max_upload: int = 4 * 2**30
    admin_host: str = "127.0.0.1"
    admin_port: int = 8080
    admin_enabled: bool = True
    admin_token: str | None = None


@dataclass(frozen=True)
class ClientConfig:
    server_host: str
    server_port: int
    udp_port: int
    data_dir: Path = Path(".")
    log_format: str = "auto"
