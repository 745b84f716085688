"""The counters' history behind the dashboard's charts: the sans-I/O ring with a fake
clock, the endpoint through aiohttp's test client, and the real timer of a real server
fed by real devices."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from admin_api import EventBuffer, create_app
from admin_api.history import (
    COARSE_SLOTS,
    FINE_SLOTS,
    SERIES,
    SERIES_NAMES,
    CounterHistory,
    memory_bytes,
)
from admin_api.metrics import ServerMetrics, counter_totals
from admin_api.sampling import HistorySampler
from admin_api.views import CONTEXT
from edgenet.config import ServerConfig
from edgenet.server.app import EdgeServer
from edgenet.server.auth import Credentials
from tests.test_admin_support import CREDENTIALS, TOKEN, Device, live_server, wait_for

T0 = 1_699_999_980.0  # a whole minute (divisible by 60)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def fine(h: CounterHistory, now: float, name: str) -> list[Any]:
    return list(h.window("15m", now)["series"][name])


# -- the ring ------------------------------------------------------------------------


def test_counters_become_rates_and_gauges_stay() -> None:
    h = CounterHistory()
    h.sample(T0, {"devices": 3, "commands.UED": 10, "upload_bytes": 1000})
    h.sample(T0 + 1, {"devices": 4, "commands.UED": 13, "upload_bytes": 1000})
    h.sample(T0 + 2, {"devices": 2, "commands.UED": 19, "upload_bytes": 5096})
    w = h.window("15m", T0 + 2)
    assert w["step"] == 1 and len(w["times"]) == FINE_SLOTS == 900
    assert w["times"][-1] == T0 + 2 and w["end"] == T0 + 3
    assert w["series"]["devices"][-3:] == [3, 4, 2]
    assert w["series"]["commands.UED"][-3:] == [0, 3, 6]  # the first second has no rate yet
    assert w["series"]["upload_bytes"][-3:] == [0, 0, 4096]
    assert w["series"]["devices"][:-3] == [None] * (FINE_SLOTS - 3)  # before the first sample
    assert w["units"]["upload_bytes"] == "bytes_per_second" and w["units"]["devices"] == "devices"


def test_a_short_gap_is_filled_with_the_mean_rate_and_a_long_one_stays_a_gap() -> None:
    h = CounterHistory()
    h.sample(T0, {"commands.SCS": 0})
    h.sample(T0 + 4, {"commands.SCS": 8})           # 3 seconds missed: 2 per second
    assert fine(h, T0 + 4, "commands.SCS")[-5:] == [0, 2, 2, 2, 2]
    h.sample(T0 + 100, {"commands.SCS": 104})       # 95 s missed: only the last second
    rates = fine(h, T0 + 100, "commands.SCS")
    assert rates[-1] == 1.0 and rates[-2] is None and rates[-95] is None


def test_the_same_second_twice_adds_rates_and_a_counter_reset_counts_from_zero() -> None:
    h = CounterHistory()
    h.sample(T0, {"blocks": 5, "devices": 1})
    h.sample(T0 + 1.1, {"blocks": 6, "devices": 1})
    h.sample(T0 + 1.9, {"blocks": 8, "devices": 7})
    assert fine(h, T0 + 1.9, "blocks")[-1] == 3.0
    assert fine(h, T0 + 1.9, "devices")[-1] == 7
    h.sample(T0 + 2, {"blocks": 2, "devices": 7})   # the source restarted at 0
    assert fine(h, T0 + 2, "blocks")[-1] == 2.0
    h.sample(T0 + 1, {"blocks": 3, "devices": 7})   # the clock stepped back: last slot
    assert fine(h, T0 + 2, "blocks")[-1] == 3.0


def test_minutes_are_the_mean_of_their_seconds_including_the_current_one() -> None:
    h = CounterHistory()
    total = 0
    for s in range(150):  # 2.5 minutes: 0..59 at 1/s, 60..119 at 3/s, 120..149 at 5/s
        total += (1, 3, 5)[s // 60] if s else 0
        h.sample(T0 + s, {"failed_logins": total, "devices": s // 60})
    w = h.window("1h", T0 + 149)
    assert w["step"] == 60 and len(w["times"]) == 60 and w["times"][-1] == T0 + 120
    assert w["series"]["failed_logins"][-3:] == [round(59 / 60, 3), 3.0, 5.0]
    assert w["series"]["devices"][-3:] == [0, 1, 2]
    assert w["series"]["devices"][:-3] == [None] * 57
    day = h.window("24h", T0 + 149)
    assert len(day["times"]) == COARSE_SLOTS and day["series"]["devices"][-1] == 2


def test_old_points_fall_out_and_the_memory_is_fixed() -> None:
    h = CounterHistory()
    before = memory_bytes()
    for s in range(0, 3 * 86_400, 7):  # three days, every 7 s
        h.sample(T0 + s, {"devices": s, "commands.AED": s})
    assert memory_bytes() == before < 300 * 1024
    assert all(len(a) == FINE_SLOTS for a in h._fine) and len(h._counts) == COARSE_SLOTS
    now = T0 + 3 * 86_400
    h.sample(now, {"devices": 1, "commands.AED": 0})
    day = h.window("24h", now)["series"]["devices"]
    assert day[-1] is not None and all(v is not None for v in day[-1439:])
    later = now + 86_400 - 60
    h.sample(later, {"devices": 9})
    day = h.window("24h", later)["series"]["devices"]
    assert day[-1] == 9 and day[0] is not None and day[1:-1] == [None] * (COARSE_SLOTS - 2)
    assert fine(h, later, "devices")[:-1] == [None] * (FINE_SLOTS - 1)


def test_bad_input_is_ignored_or_refused() -> None:
    h = CounterHistory()
    h.sample(math.nan, {"devices": 1})
    h.sample(-5, {"devices": 1})
    assert h.samples == 0
    h.sample(T0, {"devices": math.inf, "logins": -3, "blocks": "x", "unknown": 5})  # type: ignore[dict-item]
    assert fine(h, T0, "devices")[-1] == 0
    with pytest.raises(KeyError):
        h.window("2h", T0)
    with pytest.raises(KeyError):
        h.window("15m", T0, ("nope",))


# -- fed from the metrics ------------------------------------------------------------


def _server(tmp_path: Path, clock: Any = None, events: EventBuffer | None = None) -> EdgeServer:
    cfg = ServerConfig(port=0, max_attempts=3, host="127.0.0.1", data_dir=tmp_path / "data")
    (tmp_path / "data").mkdir(exist_ok=True)
    return EdgeServer(cfg, Credentials.parse(CREDENTIALS), events=events,
                      **({"clock": clock} if clock else {}))


def test_totals_name_every_series_and_count_what_the_events_say(tmp_path: Path) -> None:
    server = _server(tmp_path)
    metrics = ServerMetrics(server)
    entries: list[dict[str, Any]] = [{"event": "login"}, {"event": "login_failed"}, {"event": "device_blocked"},
                  {"event": "login_refused_blocked"},
                  {"event": "command", "command": "UED", "outcome": "ok", "duration_ms": 1},
                  {"event": "command", "command": "UED", "outcome": "error", "duration_ms": 1},
                  {"event": "command", "command": "UVF", "outcome": "ok", "duration_ms": 1},
                  {"event": "command", "command": "UVF", "outcome": "not_active"},
                  {"event": "command", "command": "XYZ", "outcome": "ok"},
                  {"event": "upload", "bytes": 1234, "samples": 3}]
    for entry in entries:
        metrics.observe(entry)
    totals = counter_totals(metrics)
    assert set(SERIES_NAMES) - set(totals) == set()
    assert totals["logins"] == 1 and totals["failed_logins"] == 3 and totals["blocks"] == 1
    assert totals["commands.UED"] == 2 and totals["commands.UVF"] == 2
    assert totals["commands.other"] == 1 and totals["uvf_announced"] == 1
    assert totals["upload_bytes"] == 1234 and totals["devices"] == 0
    assert len(SERIES) == len(SERIES_NAMES) == 12


async def test_history_endpoint(aiohttp_client: Any, tmp_path: Path) -> None:
    now = [T0]
    events = EventBuffer()
    server = _server(tmp_path, clock=lambda: now[0], events=events)
    await server.open()
    app = create_app(server, token=TOKEN)
    client = await aiohttp_client(app)
    sampler = app[CONTEXT].history
    assert isinstance(sampler, HistorySampler)
    await sampler.sample_now()
    events.record({"event": "command", "command": "SCS", "outcome": "ok", "duration_ms": 2})
    events.record({"event": "command", "command": "SCS", "outcome": "ok", "duration_ms": 2})
    now[0] = T0 + 1
    await sampler.sample_now()

    resp = await client.get("/api/v1/history", headers=AUTH)
    assert resp.status == 200
    data = (await resp.json())["data"]
    assert data["window"] == "15m" and data["times"][-1] == T0 + 1
    assert data["series"]["commands.SCS"][-2:] == [0, 2]
    assert set(data["series"]) == set(SERIES_NAMES)
    resp = await client.get("/api/v1/history?window=1h&series=commands.SCS,devices",
                            headers=AUTH)
    data = (await resp.json())["data"]
    assert set(data["series"]) == {"commands.SCS", "devices"} and data["step"] == 60
    assert data["series"]["commands.SCS"][-1] == 1.0  # 2 commands over the 2 seconds sampled
    for query, code in [("window=2h", "bad_window"), ("series=nope", "bad_series"),
                        ("series=,", "bad_series"), ("series=devices,x", "bad_series")]:
        resp = await client.get("/api/v1/history?" + query, headers=AUTH)
        assert resp.status == 400 and (await resp.json())["error"]["code"] == code, query
    assert (await client.get("/api/v1/history")).status == 401


async def test_a_real_server_samples_its_counters_every_second(tmp_path: Path) -> None:
    async with live_server(tmp_path) as live, aiohttp.ClientSession(headers=AUTH) as http:
        alpha = await Device.connect(live.server.port)
        assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
        reply = await alpha.call({"type": "upload", "file_id": 3}, b"7\n8\n9\n")
        assert reply["type"] == "ok", reply
        beta = await Device.connect(live.server.port)
        await beta.login("beta", "wrong")

        async def seen() -> dict[str, Any] | None:
            async with http.get(live.base + "/api/v1/history") as resp:
                data = (await resp.json())["data"]
            series = data["series"]
            if (max(v or 0 for v in series["upload_bytes"]) == 6
                    and series["devices"][-1] == 1
                    and max(v or 0 for v in series["failed_logins"]) == 1
                    and max(v or 0 for v in series["commands.UED"]) == 1):
                return dict(data)
            return None

        data = await wait_for(seen, timeout=6, what="the history to show the upload")
        assert sum(v is not None for v in data["series"]["devices"]) >= 1

        # A stored file's statistics show in the file list once an SCS computed them.
        async with http.get(live.base + "/api/v1/files") as resp:
            assert [f["stats"] for f in (await resp.json())["data"]] == [None]
        reply = await alpha.call({"type": "compute", "file_id": 3, "op": "AVERAGE"})
        assert reply["type"] == "ok", reply
        async with http.get(live.base + "/api/v1/files?device=alpha") as resp:
            stats = (await resp.json())["data"][0]["stats"]
        assert stats == {"sum": "24", "average": "8.0", "max": "9", "min": "7"}
        await alpha.close()
        await beta.close()
        await asyncio.sleep(0)
