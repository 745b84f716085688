"""The server's collector settings (edgenet/server/collector.py): a burst of new
long-lived objects, as a burst of logins makes, runs no full collection, where
CPython's defaults run several. Each case in a fresh interpreter (the test process's
own heap and thresholds would decide otherwise)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

#: Long-lived container objects made in the burst (a few thousand logins make as many).
BURST = 200_000

SCRIPT = f"""
import gc, json, sys
from edgenet.server.collector import OLD_THRESHOLD, tune_collector
if sys.argv[1] == "tuned":
    thresholds = tune_collector()
else:  # what the server did before: freeze only, CPython's thresholds
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
before = gc.get_stats()[2]["collections"]
keep = [[i] for i in range({BURST})]
print(json.dumps({{"full": gc.get_stats()[2]["collections"] - before,
                   "thresholds": thresholds, "old": OLD_THRESHOLD}}))
"""


def burst(mode: str) -> dict[str, object]:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True,
                         timeout=60, check=True)
    result: dict[str, object] = json.loads(out.stdout)
    return result


@pytest.mark.parametrize("mode", ["tuned", "default"])
def test_a_burst_of_long_lived_objects_and_full_collections(mode: str) -> None:
    result = burst(mode)
    if mode == "tuned":
        assert result["thresholds"] == [700, 10, result["old"]]
        assert result["full"] == 0
    else:  # the control: the same burst with CPython's thresholds collects in full
        assert result["thresholds"] == [700, 10, 10]
        assert result["full"] >= 1  # type: ignore[operator]
