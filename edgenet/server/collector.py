"""The garbage collector's settings for a server of many long-lived connections.

Everything made at start-up (modules, configuration, the admin app) lives as long as
the process: it is collected once and frozen (``gc.freeze``), out of every later scan
(a server of 1,000 devices paused ~25 ms at each full collection before). Each
device then adds a few dozen container objects that live as long as it stays. With
CPython's default young threshold (700 allocations) a burst of logins, such as every
device coming back after a restart, runs a full collection each time the long-lived
objects have grown by a quarter: 19,500 logins ran 6 of them, 0.62 s of CPU in a
burst of about 5 s (measured, docs/PERFORMANCE.md). With a young threshold of
``YOUNG_THRESHOLD`` the same burst runs none, at the price of young collections of
up to that many objects (about 3 ms each here, against 0.2 ms).
"""

from __future__ import annotations

import gc

#: Allocations of container objects between two young collections.
YOUNG_THRESHOLD = 10_000


def tune_collector() -> tuple[int, int, int]:
    """Collect, freeze what exists, raise the young threshold; returns the thresholds."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
    return gc.get_threshold()
