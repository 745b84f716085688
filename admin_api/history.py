"""A bounded history of the server's counters, for the dashboard's charts (sans-I/O).

``CounterHistory.sample(now, totals)`` takes the server's cumulative counters and
current gauges (``ServerMetrics.totals()``) at wall-clock time ``now``; the admin
app calls it once a second from a timer. Counters become per-second rates, gauges
are kept as they are. Two rings of fixed size hold the result:

* 900 one-second slots (the last 15 minutes), and
* 1,440 one-minute slots (the last 24 hours): the mean of the seconds sampled in
  that minute, the current minute included while it fills.

Every array is allocated once, so the memory is fixed whatever the traffic:
``len(SERIES) * (FINE_SLOTS + COARSE_SLOTS) * 8`` bytes of values plus three
arrays of slot stamps and counts (254,880 bytes for the 12 series). Nothing here
reads a clock or does I/O; time comes in as ``now``.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

FINE_SLOTS = 900          # seconds: 15 minutes at 1 s
COARSE_SLOTS = 1440       # minutes: 24 hours at 1 min
MINUTE = 60
#: A gap of at most this many seconds between samples (a busy loop, a late timer)
#: is filled with the mean rate; a longer one stays a gap (null) in the history.
MAX_FILL = 10


@dataclass(frozen=True)
class Series:
    """One line of the history: a counter shown as a rate, or a gauge."""

    name: str
    kind: str   # "rate" (a cumulative counter, shown per second) or "gauge"
    unit: str
    title: str


SERIES: tuple[Series, ...] = (
    Series("devices", "gauge", "devices", "active devices"),
    Series("commands.UED", "rate", "per_second", "UED commands per second"),
    Series("commands.SCS", "rate", "per_second", "SCS commands per second"),
    Series("commands.DTE", "rate", "per_second", "DTE commands per second"),
    Series("commands.AED", "rate", "per_second", "AED commands per second"),
    Series("commands.UVF", "rate", "per_second", "UVF commands per second"),
    Series("commands.other", "rate", "per_second", "other commands per second"),
    Series("upload_bytes", "rate", "bytes_per_second", "bytes uploaded per second"),
    Series("uvf_announced", "rate", "per_second",
           "UVF transfers announced (peer lookups answered) per second"),
    Series("logins", "rate", "per_second", "successful logins per second"),
    Series("failed_logins", "rate", "per_second", "failed logins per second"),
    Series("blocks", "rate", "per_second", "device names blocked per second"),
)
SERIES_NAMES = tuple(s.name for s in SERIES)
_INDEX = {name: i for i, name in enumerate(SERIES_NAMES)}

#: The windows ``window()`` serves: (seconds per point, points).
WINDOWS: dict[str, tuple[int, int]] = {"15m": (1, FINE_SLOTS), "1h": (MINUTE, 60),
                                       "24h": (MINUTE, COARSE_SLOTS)}

_NAN = float("nan")


def memory_bytes() -> int:
    """The fixed size of one history's arrays."""
    values = len(SERIES) * (FINE_SLOTS + COARSE_SLOTS) * 8
    return values + FINE_SLOTS * 8 + COARSE_SLOTS * 8 * 2


class CounterHistory:
    """The last 15 minutes per second and the last 24 hours per minute."""

    def __init__(self) -> None:
        n = len(SERIES)
        self._rate = tuple(s.kind == "rate" for s in SERIES)
        self._fine = [array("d", [_NAN]) * FINE_SLOTS for _ in range(n)]
        self._fine_stamp = array("q", [-1]) * FINE_SLOTS
        self._sums = [array("d", [0.0]) * COARSE_SLOTS for _ in range(n)]
        self._counts = array("q", [0]) * COARSE_SLOTS
        self._coarse_stamp = array("q", [-1]) * COARSE_SLOTS
        self._last_second: int | None = None
        self._last_totals: list[float] | None = None
        self.samples = 0

    # -- input ------------------------------------------------------------------

    def sample(self, now: float, totals: Mapping[str, float]) -> None:
        """Record the counters and gauges as they are at ``now`` (Unix seconds).

        Missing names count as 0. A counter that went down (a restart of its
        source) is taken as counting again from 0.
        """
        if not math.isfinite(now) or now < 0:
            return
        second = int(now)
        current = [_number(totals.get(name)) for name in SERIES_NAMES]
        previous, last = self._last_totals, self._last_second
        self.samples += 1
        self._last_totals = current
        if previous is None or last is None:
            self._last_second = second
            # No rate is known before a second sample: the first second shows 0.
            self._put(second, [0.0 if r else v for v, r in zip(current, self._rate)],
                      add=False)
            return
        deltas = [(c - p if c >= p else c) if r else c
                  for c, p, r in zip(current, previous, self._rate)]
        if second <= last:
            # The same second again (or the clock stepped back): fold into the last slot.
            self._put(last, deltas, add=True)
            return
        gap = second - last
        self._last_second = second
        values = [d / gap if r else d for d, r in zip(deltas, self._rate)]
        first = second - gap + 1 if gap <= MAX_FILL else second
        for s in range(max(first, second - FINE_SLOTS + 1), second + 1):
            self._put(s, values, add=False)

    def _put(self, second: int, values: list[float], *, add: bool) -> None:
        """Write one second's values (``add``: rates are added to what is there)."""
        slot = second % FINE_SLOTS
        fresh = self._fine_stamp[slot] != second
        self._fine_stamp[slot] = second
        minute = second // MINUTE
        cslot = minute % COARSE_SLOTS
        if self._coarse_stamp[cslot] != minute:
            self._coarse_stamp[cslot] = minute
            self._counts[cslot] = 0
            for sums in self._sums:
                sums[cslot] = 0.0
        if fresh:
            self._counts[cslot] += 1
        for i, value in enumerate(values):
            old = _NAN if fresh else self._fine[i][slot]
            new = value
            if add and self._rate[i]:
                new = (0.0 if math.isnan(old) else old) + value
            self._fine[i][slot] = new
            if not math.isnan(old):
                self._sums[i][cslot] -= old
            if not math.isnan(new):
                self._sums[i][cslot] += new

    # -- output -----------------------------------------------------------------

    def window(self, name: str, now: float, series: tuple[str, ...] = SERIES_NAMES
               ) -> dict[str, Any]:
        """The points of one window (``15m``, ``1h``, ``24h``) ending at ``now``:
        ``times`` (Unix seconds, the start of each point) and one list per series,
        ``None`` where nothing was sampled. Raises KeyError for an unknown window
        or series name."""
        step, points = WINDOWS[name]
        index = [_INDEX[s] for s in series]
        end = int(now) if math.isfinite(now) else 0
        if step == 1:
            if self._last_second is not None and end - FINE_SLOTS < self._last_second <= end:
                end = self._last_second  # the newest second sampled, not one still to come
            firsts = range(end - points + 1, end + 1)
            columns = {SERIES_NAMES[i]: [self._fine_value(i, s) for s in firsts] for i in index}
            times = list(firsts)
        else:
            last_minute = end // MINUTE
            minutes = range(last_minute - points + 1, last_minute + 1)
            columns = {SERIES_NAMES[i]: [self._coarse_value(i, m) for m in minutes]
                       for i in index}
            times = [m * MINUTE for m in minutes]
        return {"window": name, "step": step, "start": times[0], "end": times[-1] + step,
                "times": times, "series": columns,
                "units": {SERIES_NAMES[i]: SERIES[i].unit for i in index}}

    def _fine_value(self, i: int, second: int) -> float | None:
        slot = second % FINE_SLOTS
        if second < 0 or self._fine_stamp[slot] != second:
            return None
        value = self._fine[i][slot]
        return None if math.isnan(value) else round(value, 3)

    def _coarse_value(self, i: int, minute: int) -> float | None:
        cslot = minute % COARSE_SLOTS
        count = self._counts[cslot]
        if minute < 0 or self._coarse_stamp[cslot] != minute or count == 0:
            return None
        return round(self._sums[i][cslot] / count, 3)


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    value = float(value)
    return value if math.isfinite(value) and value >= 0 else 0.0
