"""The server's options for load balancers (PROXY protocol) and fleet mode.

``add_options`` adds them to the ``server`` sub-command (defaults from
``ServerConfig``); ``config_fields`` checks what was given and returns the
``ServerConfig`` fields. Like every option they also come from ``EDGENET_*``
variables and the TOML file (``settings``). S3 credentials are never options:
they come from ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` only.
"""

from __future__ import annotations

import argparse
import re
from typing import Any
from urllib.parse import urlsplit

from edgenet.config import ServerConfig, option_default
from edgenet.numbers import NumberError, parse_ascii_float, parse_ascii_int

#: The most a lease may be: a dead node's devices leave the fleet within it.
MAX_LEASE = 15.0
MAX_REDIS_CONNECTIONS = 10_000
REDIS_SCHEMES = ("redis", "rediss", "unix")
_NODE_ID = re.compile(r"[A-Za-z0-9._:@-]{1,64}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_PREFIX = re.compile(r"[A-Za-z0-9._/-]{0,200}")
FLEET_HINT = ("fleet mode needs the fleet build: run build/edgenet-fleet.pyz (made by "
              "'make pyz-fleet') or install the package with its extra: "
              "pip install 'edgenet[fleet]'")


class OptionError(ValueError):
    """A bad fleet or proxy option: one line, exit status 2."""


def add_options(srv: argparse.ArgumentParser) -> None:
    S = ServerConfig
    prx = srv.add_argument_group("behind a load balancer (see docs/FLEET.md)")
    prx.add_argument("--proxy-protocol", action="store_true",
                     help="expect a PROXY protocol header (v1 or v2) on every device "
                          "connection, from --trusted-proxies only")
    prx.add_argument("--trusted-proxies", default=",".join(S.trusted_proxies), metavar="CIDR,...",
                     help="addresses allowed to send a PROXY header (default "
                          f"{','.join(S.trusted_proxies)}); anything else is closed")
    flt = srv.add_argument_group("fleet mode: several servers share Redis and S3 "
                                 "(needs edgenet-fleet.pyz; see docs/FLEET.md)")
    flt.add_argument("--redis", default=None, metavar="URL",
                     help="redis://, rediss:// or unix:// URL: turns fleet mode on")
    flt.add_argument("--node-id", default=None, metavar="NAME",
                     help="this node's name in the fleet (default: host name and port)")
    flt.add_argument("--files", default=None, metavar="s3://BUCKET/PREFIX",
                     help="keep the data files in S3-compatible storage (credentials from "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)")
    flt.add_argument("--s3-endpoint", default=None, metavar="URL",
                     help="the S3 service's URL (default: AWS for the region)")
    flt.add_argument("--s3-region", default=S.s3_region, metavar="REGION",
                     help=f"the S3 region (default {S.s3_region})")
    flt.add_argument("--lease", default=option_default(S.lease), metavar="SECONDS",
                     help="a node silent this long loses its devices from the fleet (default "
                          f"{option_default(S.lease)}, at most {MAX_LEASE:g})")
    flt.add_argument("--redis-prefix", default=S.redis_prefix, metavar="PREFIX",
                     help=f"prefix of this fleet's Redis keys (default {S.redis_prefix})")
    flt.add_argument("--redis-max-connections", default=option_default(S.redis_max_connections),
                     metavar="N", help="Redis connections this node's commands share "
                     f"(default {S.redis_max_connections})")
    flt.add_argument("--redis-pool-timeout", default=option_default(S.redis_pool_timeout),
                     metavar="SECONDS", help="how long a command waits for a free Redis "
                     "connection before it is refused, retryably (default "
                     f"{option_default(S.redis_pool_timeout)})")


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerConfig`` fields of these options. Raises OptionError."""
    fields: dict[str, Any] = {"proxy_protocol": bool(args.proxy_protocol)}
    trusted = [p.strip() for p in str(args.trusted_proxies).split(",") if p.strip()]
    from edgenet.server.proxied import parse_networks

    try:
        parse_networks(",".join(trusted))
    except ValueError as exc:
        raise OptionError(f"Invalid --trusted-proxies: {args.trusted_proxies} ({exc})") from None
    fields["trusted_proxies"] = tuple(trusted)
    redis_url = args.redis or None
    fleet_only = {"--files": args.files, "--s3-endpoint": args.s3_endpoint,
                  "--node-id": args.node_id}
    if redis_url is None:
        given = [flag for flag, value in fleet_only.items() if value]
        if given:
            raise OptionError(f"{given[0]} needs fleet mode: give --redis URL too")
        return fields
    scheme = urlsplit(redis_url).scheme
    if scheme not in REDIS_SCHEMES:
        raise OptionError(f"Invalid --redis: {redis_url[:100]}. It must be a redis://, "
                          "rediss:// or unix:// URL")
    fields["redis_url"] = redis_url
    if args.node_id is not None:
        if not _NODE_ID.fullmatch(args.node_id):
            raise OptionError(f"Invalid --node-id: {args.node_id[:80]}. Use 1 to 64 letters, "
                              "digits and . _ : @ -")
        fields["node_id"] = args.node_id
    if args.files:
        fields["files_url"] = files_url(args.files)
    if args.s3_endpoint:
        parts = urlsplit(args.s3_endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise OptionError(f"Invalid --s3-endpoint: {args.s3_endpoint[:100]}. It must be "
                              "an http:// or https:// URL")
        fields["s3_endpoint"] = args.s3_endpoint
    fields["s3_region"] = str(args.s3_region)
    try:
        lease = parse_ascii_float(str(args.lease).strip(), 0.0, MAX_LEASE, "--lease",
                                  lo_open=True)
    except NumberError:
        raise OptionError(f"Invalid --lease: {args.lease}. It must be a number of seconds "
                          f"above 0 and at most {MAX_LEASE:g}") from None
    fields["lease"] = lease
    if not re.fullmatch(r"[A-Za-z0-9._:{}-]{1,64}", str(args.redis_prefix)):
        raise OptionError(f"Invalid --redis-prefix: {str(args.redis_prefix)[:80]}")
    fields["redis_prefix"] = str(args.redis_prefix)
    try:
        pool = parse_ascii_int(str(args.redis_max_connections).strip(), 1,
                               MAX_REDIS_CONNECTIONS, "--redis-max-connections")
    except NumberError:
        raise OptionError(f"Invalid --redis-max-connections: {args.redis_max_connections}. "
                          f"It must be a whole number from 1 to {MAX_REDIS_CONNECTIONS}"
                          ) from None
    fields["redis_max_connections"] = pool
    try:
        wait = parse_ascii_float(str(args.redis_pool_timeout).strip(), 0.0, 60.0,
                                 "--redis-pool-timeout", lo_open=True)
    except NumberError:
        raise OptionError(f"Invalid --redis-pool-timeout: {args.redis_pool_timeout}. It must "
                          "be a number of seconds above 0 and at most 60") from None
    fields["redis_pool_timeout"] = wait
    return fields


def files_url(text: str) -> str:
    """``s3://BUCKET/PREFIX`` checked (the prefix may be empty). Raises OptionError."""
    parts = urlsplit(text)
    if parts.scheme != "s3" or not _BUCKET.fullmatch(parts.netloc) \
            or not _PREFIX.fullmatch(parts.path.strip("/")) or parts.query or parts.fragment:
        raise OptionError(f"Invalid --files: {text[:100]}. It must be s3://BUCKET/PREFIX "
                          "(a bucket name of 3 to 63 lower-case letters, digits, . and -)")
    return text


def split_files_url(url: str) -> tuple[str, str]:
    """The bucket and the key prefix (without slashes at either end) of ``s3://B/P``."""
    parts = urlsplit(url)
    return parts.netloc, parts.path.strip("/")


def missing_fleet_modules(need_s3: bool) -> list[str]:
    """The fleet's libraries this program lacks (the plain build has none of them)."""
    import importlib.util

    wanted = ["redis"] + (["aiobotocore"] if need_s3 else [])
    return [name for name in wanted if importlib.util.find_spec(name) is None]
