"""The garbage collector's settings for a server of many long-lived connections.

Everything made at start-up (modules, configuration, the admin app) lives as long as
the process: it is collected once and frozen (``gc.freeze``), out of every later scan
(a server of 1,000 devices paused ~25 ms at each full collection before). Each
device then adds a few dozen container objects that live as long as it stays. With
CPython's default thresholds (700, 10, 10) a burst of logins, such as every device
coming back after a restart, runs a full collection each time the long-lived objects
have grown by a quarter: 19,500 logins ran 7 of them, 0.61 s of CPU in a burst of
about 5 s (measured, docs/PERFORMANCE.md). With ``OLD_THRESHOLD`` middle-generation
collections between two full ones (100) the same burst ran 2 (0.07 s). The young
generation keeps its threshold: raising it to 10,000 instead also avoided the full
collections, but cost commands 6 % (closed loop, 1,000 devices: 9,105 against 9,694
commands/s, medians of 3 in one run).
"""

from __future__ import annotations

import gc

#: Middle-generation collections before a full one may run (CPython's default: 10).
OLD_THRESHOLD = 100


def tune_collector() -> tuple[int, int, int]:
    """Collect, freeze what exists, space out the full collections; returns the
    thresholds."""
    gc.collect()
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, OLD_THRESHOLD)
    return gc.get_threshold()
