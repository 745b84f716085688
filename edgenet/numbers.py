"""Numbers from outside input, parsed strictly: ASCII digits only.

``str.isdigit`` accepts characters that ``int`` refuses (``"²"``), and ``int``
and ``float`` accept digits of any script (``"٣"``, full-width ``"１"``), spaces
and ``_`` separators. Everything that turns text from a user, a device, a file
or an HTTP request into a number goes through here instead, so the same text
means the same number everywhere and anything else is one ``NumberError`` with a
one-line message, never a crash.
"""

from __future__ import annotations

import math
import re

_INT = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
#: More digits than this are refused before ``int`` sees them (far below its 4,300-digit guard).
MAX_DIGITS = 40


class NumberError(ValueError):
    """Text that is not a number in range; ``str()`` is one line naming what was wanted."""


def _range_text(lo: float | None, hi: float | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo:g} to {hi:g}"
    if lo is not None:
        return f" of at least {lo:g}"
    if hi is not None:
        return f" of at most {hi:g}"
    return ""


def is_ascii_int(text: str) -> bool:
    """True when ``text`` is one or more ASCII digits (no sign, space or ``_``)."""
    return bool(_INT.fullmatch(text))


def parse_ascii_int(text: str, lo: int | None = None, hi: int | None = None,
                    what: str = "value") -> int:
    """``text`` as a non-negative integer in ``[lo, hi]``: ASCII digits ``0-9`` only."""
    if not isinstance(text, str) or not _INT.fullmatch(text) \
            or len(text.lstrip("0")) > MAX_DIGITS:
        raise NumberError(f"{what} must be a whole number{_range_text(lo, hi)}, in ASCII digits")
    value = int(text)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise NumberError(f"{what} must be a whole number{_range_text(lo, hi)}")
    return value


def parse_ascii_float(text: str, lo: float | None = None, hi: float | None = None,
                      what: str = "value", lo_open: bool = False) -> float:
    """``text`` as a finite non-negative decimal (``12``, ``0.5``, ``1e3``) in range;
    ``lo_open`` makes the lower bound exclusive (``> lo``)."""
    if not isinstance(text, str) or len(text) > 2 * MAX_DIGITS or not _DECIMAL.fullmatch(text):
        raise NumberError(f"{what} must be a number{_range_text(lo, hi)}, in ASCII digits")
    value = float(text)
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if not math.isfinite(value) or low_bad or (hi is not None and value > hi):
        bound = f" greater than {lo:g}" if lo_open and lo is not None and hi is None \
            else _range_text(lo, hi)
        raise NumberError(f"{what} must be a number{bound}")
    return value
