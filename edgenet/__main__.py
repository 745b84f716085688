"""Command line: ``edgenet server ...`` and ``edgenet client ...``."""

from __future__ import annotations

import argparse
import errno
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgenet import __version__
from edgenet.admin.options import add_admin_parser
from edgenet.client.options import add_options as add_headless_options
from edgenet.client.uvf_options import add_uvf_options, uvf_config
from edgenet.numbers import NumberError, parse_ascii_float, parse_ascii_int
from edgenet.config import SILENT_HEARTBEATS, ClientConfig, ServerConfig, option_default
from edgenet.server.options import add_options as add_fleet_options
from edgenet.server.resumeopts import add_options as add_resume_options

ATTEMPTS_ERROR = ("Invalid number of allowed failed consecutive attempts: {}. "
                  "The valid value of argument number is an integer between 1 and 5")


#: ``--log-format`` values (see ``logconfig``).
LOG_FORMATS = ("auto", "console", "json")


class UsageError(Exception):
    """A bad argument: printed as one line, exit status 2."""


def _port(text: str, what: str) -> int:
    try:
        return parse_ascii_int(text.strip(), 0, 65535, what)
    except NumberError:
        raise UsageError(f"Invalid {what}: {text}. It must be an integer between 0 and 65535"
                         ) from None


def _positive(text: str, what: str) -> float:
    try:
        return parse_ascii_float(text.strip(), 0.0, None, what, lo_open=True)
    except NumberError:
        raise UsageError(f"Invalid {what}: {text}. It must be a positive number") from None


def _count(text: str, what: str, minimum: int = 0) -> int:
    try:
        return parse_ascii_int(text.strip(), minimum, None, what)
    except NumberError:
        raise UsageError(f"Invalid {what}: {text}. It must be an integer of at least {minimum}"
                         ) from None


def _option(group: argparse._ActionsContainer, flag: str, default: object, text: str,
            **kwargs: Any) -> None:
    """An option whose default is the config's: given as text, as every source gives
    values (see ``settings``), and shown where ``text`` says ``{}``."""
    shown = option_default(default)
    group.add_argument(flag, default=shown, help=text.format(shown), **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgenet", description="edgenet: an edge-device network (central server and "
                                    "edge-device clients).")
    parser.add_argument("--version", action="version", version=f"edgenet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{server,client,hash-password,admin}")
    sub.required = True

    # Defaults come from the config classes (one place for them).
    S, C = ServerConfig, ClientConfig
    srv = sub.add_parser("server", help="run the central server",
                         description="Run the central server: devices log in over TCP on "
                                     "SERVER_PORT.")
    srv.add_argument("server_port", metavar="SERVER_PORT",
                     help="TCP port for devices (0 lets the OS choose)")
    srv.add_argument("max_attempts", metavar="MAX_ATTEMPTS",
                     help="consecutive failed logins (1-5) before a device name is blocked")
    opt = _option
    opt(srv, "--host", S.host, "address to listen on (default {}; '::' for IPv6)")
    opt(srv, "--credentials", S.credentials, "credentials file, one 'name password' per line "
        "(default ./{})", metavar="FILE")
    opt(srv, "--data-dir", S.data_dir, "where logs and uploaded files live (default {})",
        metavar="DIR")
    opt(srv, "--block-seconds", S.block_seconds, "how long a device name stays blocked "
        "(default {})", metavar="N")
    opt(srv, "--heartbeat", S.heartbeat, "ping a silent device after this many seconds; close "
        f"it after {option_default(SILENT_HEARTBEATS)}x (default {{}})", metavar="SECONDS")
    opt(srv, "--max-upload", S.max_upload,
        f"largest upload accepted (default {S.max_upload / 2**30:g} GiB)", metavar="BYTES")
    opt(srv, "--log-format", S.log_format, "auto: console on a terminal, JSON lines otherwise",
        choices=LOG_FORMATS)
    opt(srv, "--admin-host", S.admin_host, "address of the admin HTTP API (default {})")
    opt(srv, "--admin-port", S.admin_port,
        "port of the admin HTTP API (default {}; 0 lets the OS choose)")
    srv.add_argument("--no-admin", action="store_true", help="do not run the admin HTTP API")
    opt(srv, "--admin-token", S.admin_token,
        "bearer token for the admin API (or EDGENET_ADMIN_TOKEN)")
    opt(srv, "--admin-max-connections", S.admin_max_connections, "admin HTTP connections "
        "open at once (default {}); more get 503", metavar="N")
    opt(srv, "--admin-header-timeout", S.admin_header_timeout, "close an admin connection "
        "whose request head takes longer than this (default {})", metavar="SECONDS")
    opt(srv, "--admin-idle-timeout", S.admin_idle_timeout, "close an admin connection idle "
        "between requests for this long (default {})", metavar="SECONDS")
    lim = srv.add_argument_group("limits and TLS (see docs/SECURITY.md)")
    opt(lim, "--max-connections", S.max_connections,
        "open device connections at most; 0: (open-file limit - 64) / 2 (default {})",
        metavar="N")
    opt(lim, "--login-rate", S.login_rate, "failed logins per minute allowed per IP address; "
        "0: no limit (default {})", metavar="N")
    opt(lim, "--login-timeout", S.login_timeout, "close a connection that has not logged in "
        "after this long (default {})", metavar="SECONDS")
    opt(lim, "--send-timeout", S.send_timeout, "drop a device that does not read its replies "
        "for this long (default {})", metavar="SECONDS")
    opt(lim, "--upload-idle-timeout", S.upload_idle_timeout, "drop a device whose upload "
        "sends no data for this long (default {})", metavar="SECONDS")
    opt(lim, "--shutdown-grace", S.shutdown_grace, "on SIGTERM/SIGINT, time given to uploads "
        "in flight (default {})", metavar="SECONDS")
    lim.add_argument("--tls-cert", default=None, metavar="FILE",
                     help="PEM certificate chain: serve devices over TLS (with --tls-key)")
    lim.add_argument("--tls-key", default=None, metavar="FILE", help="PEM private key")
    add_fleet_options(srv)
    add_resume_options(srv)
    nat = srv.add_argument_group("UVF across NATs: rendezvous and relay (see docs/SECURITY.md)")
    opt(nat, "--udp-port", S.udp_port, "UDP port of the rendezvous and relay (default: "
        "SERVER_PORT's number; 0 turns them off)", metavar="PORT")
    opt(nat, "--relay-device-rate", S.relay_device_rate, "bytes a second one device may send "
        "through the relay; 0: no limit (default {})", metavar="BYTES")
    opt(nat, "--relay-total-rate", S.relay_total_rate, "bytes a second through the relay in "
        "all (default {})", metavar="BYTES")
    opt(nat, "--relay-device-bytes", S.relay_device_bytes, "bytes an hour one device may send "
        "through the relay (default {})", metavar="BYTES")
    opt(nat, "--relay-total-bytes", S.relay_total_bytes, "bytes an hour through the relay in "
        "all (default {})", metavar="BYTES")

    cli = sub.add_parser("client", help="run an edge device (interactive or scripted)",
                         description="Run an edge device: log in to the server at "
                                     "SERVER_IP:SERVER_PORT and listen for peer-to-peer "
                                     "transfers on UDP_PORT. Commands come from the terminal, "
                                     "or one per line from stdin when it is not a terminal.")
    cli.add_argument("server_ip", metavar="SERVER_IP", help="server address")
    cli.add_argument("server_port", metavar="SERVER_PORT", help="server TCP port")
    cli.add_argument("udp_port", metavar="UDP_PORT",
                     help="UDP port this device receives files on (0 lets the OS choose)")
    opt(cli, "--data-dir", C.data_dir, "where generated and received files live (default {})",
        metavar="DIR")
    opt(cli, "--log-format", C.log_format, "format of the client's own diagnostics on stderr",
        choices=LOG_FORMATS)
    opt(cli, "--tls-ca", C.tls_ca,
        "connect over TLS, verifying the server against this CA (PEM)", metavar="FILE")
    cli.add_argument("--tls-insecure", action="store_true",
                     help="connect over TLS WITHOUT verifying the server (test set-ups only)")

    hp = sub.add_parser("hash-password", help="print a hashed credentials.txt entry",
                        description="Read a password (prompted twice on a terminal, else one "
                                    "line of stdin) and print a $pbkdf2-sha256$ entry for "
                                    "credentials.txt. The password is never taken from the "
                                    "command line.")
    hp.add_argument("name", nargs="?", metavar="NAME",
                    help="print a whole 'NAME HASH' line for this device name")
    hp.add_argument("--iterations", default=None, metavar="N",
                    help="PBKDF2 iterations (default 600000)")
    add_headless_options(cli)
    add_uvf_options(cli)
    add_admin_parser(sub)
    return parser


def run_server(args: argparse.Namespace) -> int:
    from edgenet.logconfig import configure_logging
    from edgenet.server.auth import Credentials, CredentialsError

    try:
        attempts = parse_ascii_int(args.max_attempts.strip(), 1, 5, "MAX_ATTEMPTS")
    except NumberError:
        raise UsageError(ATTEMPTS_ERROR.format(args.max_attempts)) from None
    port = _port(args.server_port, "port")
    block = _positive(args.block_seconds, "--block-seconds")
    heartbeat = _positive(args.heartbeat, "--heartbeat")
    max_upload = int(_positive(args.max_upload, "--max-upload"))
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together: give both or neither")
    from edgenet.server import options as fleet_options

    try:
        fleet_fields = fleet_options.config_fields(args)
    except fleet_options.OptionError as exc:
        raise UsageError(str(exc)) from None
    from edgenet.server import resumeopts

    try:
        fleet_fields.update(resumeopts.config_fields(args))
    except resumeopts.ResumeOptionError as exc:
        raise UsageError(str(exc)) from None
    if fleet_fields.get("redis_url") and fleet_options.missing_fleet_modules(
            bool(fleet_fields.get("files_url"))):
        raise UsageError(f"edgenet: {fleet_options.FLEET_HINT}")
    config = ServerConfig(port=port, max_attempts=attempts, host=args.host,
                          credentials=Path(args.credentials), data_dir=Path(args.data_dir),
                          block_seconds=block, log_format=args.log_format,
                          heartbeat=heartbeat, max_upload=max_upload,
                          admin_host=args.admin_host,
                          admin_port=_port(args.admin_port, "admin port"),
                          admin_enabled=not args.no_admin,
                          admin_max_connections=_count(args.admin_max_connections,
                                                       "--admin-max-connections", 1),
                          admin_header_timeout=_positive(args.admin_header_timeout,
                                                         "--admin-header-timeout"),
                          admin_idle_timeout=_positive(args.admin_idle_timeout,
                                                       "--admin-idle-timeout"),
                          admin_token=args.admin_token or os.environ.get("EDGENET_ADMIN_TOKEN")
                          or None,
                          max_connections=_count(args.max_connections, "--max-connections"),
                          login_rate=_count(args.login_rate, "--login-rate"),
                          login_timeout=_positive(args.login_timeout, "--login-timeout"),
                          send_timeout=_positive(args.send_timeout, "--send-timeout"),
                          upload_idle_timeout=_positive(args.upload_idle_timeout,
                                                        "--upload-idle-timeout"),
                          shutdown_grace=_positive(args.shutdown_grace, "--shutdown-grace"),
                          tls_cert=Path(args.tls_cert) if args.tls_cert else None,
                          tls_key=Path(args.tls_key) if args.tls_key else None,
                          udp_port=None if args.udp_port in (None, "") else
                          _port(args.udp_port, "--udp-port"),
                          relay_device_rate=_count(args.relay_device_rate, "--relay-device-rate"),
                          relay_total_rate=_count(args.relay_total_rate, "--relay-total-rate"),
                          relay_device_bytes=_count(args.relay_device_bytes,
                                                    "--relay-device-bytes"),
                          relay_total_bytes=_count(args.relay_total_bytes, "--relay-total-bytes"),
                          **fleet_fields)
    events: Any = None
    if config.admin_enabled:
        from admin_api import admin_config_error
        from edgenet.server.events import EventBuffer

        problem = admin_config_error(config.admin_host, config.admin_token)
        if problem:
            raise UsageError(f"edgenet: {problem}")
        events = EventBuffer()
    fleet: Any = None
    if config.redis_url:
        from edgenet.backends.fleet import Fleet

        fleet = Fleet(config)
        events = fleet.events  # every node's events go to the fleet, admin API or not
    try:
        credentials = Credentials.load(config.credentials)
    except CredentialsError as exc:
        print(f"edgenet: {exc}", file=sys.stderr)
        return 1
    if not credentials.entries:
        print(f"edgenet: {config.credentials} lists no devices", file=sys.stderr)
        return 1
    if config.tls_cert is not None and config.tls_key is not None:
        from edgenet.tls import TlsSetupError, server_context

        try:
            server_context(config.tls_cert, config.tls_key)
        except TlsSetupError as exc:
            print(f"edgenet: {exc.message}", file=sys.stderr)
            return 1
    try:
        config.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"edgenet: cannot use data dir {config.data_dir}: {exc.strerror}", file=sys.stderr)
        return 1
    configure_logging(config.log_format, extra_processors=[events] if events is not None else ())
    import structlog

    from admin_api.app import AdminStartError
    from edgenet.server.app import EdgeServer, serve
    from edgenet.server.interfaces import BackendStartError
    from edgenet.server.udp import RendezvousStartError

    log = structlog.get_logger("edgenet.server")

    def ready(server: object, addresses: list[tuple[str, int]]) -> None:
        host, bound = addresses[0]
        log.info("server_ready", host=host, port=bound, addresses=[f"{h}:{p}" for h, p in addresses],
                 devices_known=len(credentials), max_attempts=attempts,
                 data_dir=str(config.data_dir.resolve()))

    def extra(server: EdgeServer) -> None:
        if config.admin_enabled:
            from admin_api import install_admin

            install_admin(server)
        if fleet is not None:
            fleet.install(server)

    try:
        import asyncio

        from edgenet.server.state import open_embedded

        return asyncio.run(serve(config, credentials, ready=ready, extra=extra, events=events,
                                 open_backends=fleet.open if fleet else open_embedded))
    except (AdminStartError, BackendStartError, RendezvousStartError) as exc:
        print(f"edgenet: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(f"edgenet: port {port} on {config.host} is already in use", file=sys.stderr)
        elif exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT) or isinstance(
                exc, __import__("socket").gaierror):
            print(f"edgenet: cannot listen on {config.host}: {exc.strerror or exc}",
                  file=sys.stderr)
        elif exc.errno == errno.EACCES:
            print(f"edgenet: permission denied to listen on port {port}", file=sys.stderr)
        else:
            print(f"edgenet: cannot start the server: {exc.strerror or exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run_client_command(args: argparse.Namespace) -> int:
    from edgenet.client.shell import run_client

    server_port = _port(args.server_port, "server port")
    if server_port == 0:
        raise UsageError("Invalid server port: 0. It must be an integer between 1 and 65535")
    udp_port = _port(args.udp_port, "UDP port")
    try:
        uvf = uvf_config(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if args.tls_ca and args.tls_insecure:
        raise UsageError("--tls-ca and --tls-insecure exclude each other: give one")
    if args.tls_insecure:
        print("edgenet: WARNING: --tls-insecure: the server's certificate is NOT checked; "
              "anyone on the path can pose as the server and read the password. "
              "Use --tls-ca FILE outside a test set-up.", file=sys.stderr)
    config = ClientConfig(server_host=args.server_ip, server_port=server_port, udp_port=udp_port,
                          data_dir=Path(args.data_dir), log_format=args.log_format,
                          tls_ca=Path(args.tls_ca) if args.tls_ca else None,
                          tls_insecure=args.tls_insecure, **uvf)
    from edgenet.client.options import HeadlessUsageError, headless_config

    try:
        headless = headless_config(args)
    except HeadlessUsageError as exc:
        raise UsageError(f"edgenet: {exc}") from None
    if headless is not None:
        from edgenet.client.headless import run_headless

        return run_headless(config, headless)
    return run_client(config)


def main(argv: Sequence[str] | None = None) -> int:
    from edgenet.settings import resolve_args

    args = resolve_args(build_parser(), argv)  # command line > EDGENET_* > --config > defaults
    try:
        if args.command == "server":
            return run_server(args)
        if args.command == "hash-password":
            from edgenet.hash_password import run_hash_password

            return run_hash_password(args.name, args.iterations)
        if args.command == "admin":
            from edgenet.admin.cli import run_admin

            return run_admin(args)
        return run_client_command(args)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
