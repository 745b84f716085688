"""The server's options for resumable uploads: how long a partial upload is kept
(``--resume-hours``) and how much of them (``--resume-budget`` per device,
``--resume-total-budget`` in all), with sizes in bytes or with a unit."""

from __future__ import annotations

import argparse
import re
from typing import Any

from edgenet.config import ServerConfig, option_default
from edgenet.numbers import NumberError, parse_ascii_float

_SIZE = re.compile(r"([0-9]{1,19})(?:\.([0-9]{1,6}))? ?([A-Za-z]{0,3})")
_UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 2**20, "mib": 2**20, "g": 2**30,
          "gib": 2**30, "t": 2**40, "tib": 2**40, "kb": 1000, "mb": 10**6, "gb": 10**9,
          "tb": 10**12}


class ResumeOptionError(ValueError):
    """A bad resume option: one line, exit status 2."""


def parse_size(text: str, flag: str) -> int:
    """``4GiB``, ``512 MiB``, ``1.5G``, ``100000`` (bytes): binary units (K, M, G, T, with
    or without ``iB``) or decimal ones (kB, MB, GB, TB). Raises ResumeOptionError."""
    m = _SIZE.fullmatch(text.strip()) if text.isascii() else None
    unit = _UNITS.get(m.group(3).lower()) if m else None
    if m is None or unit is None:
        raise ResumeOptionError(f"Invalid {flag}: {text[:40]}. It must be a size such as "
                                "4GiB, 512MiB or 1000000 (bytes)")
    whole, frac = int(m.group(1)), m.group(2) or ""
    value = whole * unit + (int(frac) * unit) // 10 ** len(frac) if frac else whole * unit
    if value >= 2**63:
        raise ResumeOptionError(f"Invalid {flag}: {text[:40]}. It is too large")
    return value


def add_options(srv: argparse.ArgumentParser) -> None:
    S = ServerConfig
    grp = srv.add_argument_group("resumable uploads (protocol version 3; see docs/SECURITY.md)")
    grp.add_argument("--resume-hours", default=option_default(S.resume_hours), metavar="HOURS",
                     help="keep the received part of a cut upload this long after its last "
                          f"byte, for the device to resume (default {option_default(S.resume_hours)}; "
                          "0: keep none)")
    grp.add_argument("--resume-budget", default="4GiB", metavar="SIZE",
                     help="the sizes of the files whose partial uploads are kept, per device "
                          "(default 4GiB)")
    grp.add_argument("--resume-total-budget", default="32GiB", metavar="SIZE",
                     help="the same, for all devices together (default 32GiB)")


def config_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The ``ServerConfig`` fields of these options. Raises ResumeOptionError."""
    hours_text = str(args.resume_hours).strip()
    try:
        hours = parse_ascii_float(hours_text, 0.0, 10_000.0, "--resume-hours")
    except NumberError:
        raise ResumeOptionError(f"Invalid --resume-hours: {hours_text[:40]}. It must be a "
                                "number of hours from 0 to 10000") from None
    return {"resume_hours": hours,
            "resume_budget": parse_size(str(args.resume_budget), "--resume-budget"),
            "resume_total_budget": parse_size(str(args.resume_total_budget),
                                              "--resume-total-budget")}
