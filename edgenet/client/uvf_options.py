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
    uvf.add_argument("--uvf-resume-hours", default=option_default(C.uvf_resume_hours),
                     metavar="HOURS",
                     help="keep the part of a file whose transfer stopped this long, for the "
                          "same sender's next UVF of it to resume (default "
                          f"{option_default(C.uvf_resume_hours)}; 0: keep none)")
    uvf.add_argument("--uvf-resume-budget", default="4GiB", metavar="SIZE",
                     help="the bytes of such parts kept at most, the oldest going first "
                          "(default 4GiB)")


def _integer(text: Any, option: str, low: int, high: int) -> int:
    try:
        return parse_ascii_int(str(text).strip(), low, high, option)
    except NumberError:
        raise ValueError(f"Invalid {option}: {text}. It must be an integer between {low} "
                         f"and {high}") from None


def uvf_config(args: argparse.Namespace) -> dict[str, Any]:
    """ClientConfig keyword arguments; raises ValueError with one line for the user."""
    from edgenet.numbers import parse_ascii_float
    from edgenet.rudp.packet import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE
    from edgenet.server.resumeopts import parse_size

    advertise = getattr(args, "advertise_udp_port", None)
    hours_text = str(getattr(args, "uvf_resume_hours", C.uvf_resume_hours)).strip()
    try:
        hours = parse_ascii_float(hours_text, 0.0, 10_000.0, "--uvf-resume-hours")
    except NumberError:
        raise ValueError(f"Invalid --uvf-resume-hours: {hours_text[:40]}. It must be a number "
                         "of hours from 0 to 10000") from None
    return {
        "max_receive_size": _integer(args.max_receive_size, "--max-receive-size", 0, 2**63 - 1),
        "max_incoming": _integer(args.max_incoming, "--max-incoming", 0, 10_000),
        "chunk_size": _integer(args.chunk_size, "--chunk-size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE),
        "advertise_udp_port": (None if advertise in (None, "")
                               else _integer(advertise, "--advertise-udp-port", 1, 65535)),
        "uvf_resume_hours": hours,
        "uvf_resume_budget": parse_size(str(getattr(args, "uvf_resume_budget", "4GiB")),
                                        "--uvf-resume-budget"),
    }
