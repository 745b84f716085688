"""The client's UVF options on the command line (and so in EDGENET_* and --config).

Kept apart from ``__main__`` so that the parser stays one call per group, and free of heavy
imports (the parser is built for every sub-command). Values arrive as strings, whatever their
source; ``uvf_config`` checks them and gives ClientConfig's fields.
"""

from __future__ import annotations

import argparse
from typing import Any

from edgenet.config import ClientConfig as C
from edgenet.numbers import NumberError, parse_ascii_int
from edgenet.config import option_default


def add_uvf_options(parser: argparse.ArgumentParser) -> None:
    uvf = parser.add_argument_group("peer-to-peer files (UVF)")
    uvf.add_argument("--max-receive-size", default=option_default(C.max_receive_size),
                     metavar="BYTES", help="refuse files from peers larger than this "
                                           f"(default {C.max_receive_size / 2**30:g} GiB)")
    uvf.add_argument("--max-incoming", default=option_default(C.max_incoming), metavar="N",
                     help="files received at once; more are refused as busy "
                          f"(default {C.max_incoming})")
    uvf.add_argument("--chunk-size", default=option_default(C.chunk_size), metavar="BYTES",
                     help=f"file bytes per datagram when sending (default {C.chunk_size}, for "
                          "a 1500-byte MTU; up to 65487 on fast local links)")
    uvf.add_argument("--advertise-udp-port", default=option_default(C.advertise_udp_port),
                     metavar="PORT",
                     help="tell the server peers reach this device on PORT instead of UDP_PORT "
                          "(behind NAT or a port forward)")


def _integer(text: Any, option: str, low: int, high: int) -> int:
    try:
        return parse_ascii_int(str(text).strip(), low, high, option)
    except NumberError:
        raise ValueError(f"Invalid {option}: {text}. It must be an integer between {low} "
                         f"and {high}") from None


def uvf_config(args: argparse.Namespace) -> dict[str, Any]:
    """ClientConfig keyword arguments; raises ValueError with one line for the user."""
    from edgenet.rudp.packet import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE

    advertise = getattr(args, "advertise_udp_port", None)
    return {
        "max_receive_size": _integer(args.max_receive_size, "--max-receive-size", 0, 2**63 - 1),
        "max_incoming": _integer(args.max_incoming, "--max-incoming", 0, 10_000),
        "chunk_size": _integer(args.chunk_size, "--chunk-size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
        "advertise_udp_port": (None if advertise in (None, "")
                               else _integer(advertise, "--advertise-udp-port", 1, 65535)),
    }
