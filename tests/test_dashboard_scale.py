"""The dashboard at 5,000 devices, in headless Chromium: 5,000 real logins over
loopback to a real server process (the built zipapp), then first render, search,
sort and paging, per-update script time, the live charts drawing real counters, the
layout at 1280 and 390 px, and kick and unblock from the page with the keyboard.
Every request the browser makes must go to the server's own address.

The timings are figures reported (printed and written to
build/screenshots/dashboard-perf.json, quoted in docs/PERFORMANCE.md), not asserted.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.browser import SCREENSHOTS, Browser, open_browser
from tests.conftest import PYZ, ROOT, ServerProcess
from tests.test_admin_support import http_json
from tests.wireclient import WireDevice

DEVICES = 5000
WORKERS = 20
TOKEN = "dashboard-scale-token"
pytestmark = pytest.mark.timeout(180)


@dataclass
class Fleet:
    server: ServerProcess
    base: str
    swarm: subprocess.Popen[str]
    login_seconds: float

    def api(self, path: str, method: str = "GET") -> Any:
        status, body = http_json(self.base + path, TOKEN, method)
        assert status == 200, (path, status, body)
        return body


def _raise_open_files() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 20_000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    _raise_open_files()  # the server process inherits it: 5,000 devices need the descriptors
    tmp = tmp_path_factory.mktemp("dashboard")
    creds = tmp / "credentials.txt"
    creds.write_text("alpha alphapass\nbeta betapass\n" + "".join(
        f"dev-{n:04d} pw-{n:04d}\n" for n in range(1, DEVICES + 1)))
    data = tmp / "data"
    data.mkdir()
    env = {**os.environ, "EDGENET_ADMIN_TOKEN": TOKEN}
    server = ServerProcess([sys.executable, str(PYZ), "server", "0", "3", "--host", "127.0.0.1",
                            "--credentials", str(creds), "--data-dir", str(data),
                            "--log-format", "json", "--admin-host", "127.0.0.1",
                            "--admin-port", "0", "--heartbeat", "600",
                            "--block-seconds", "120", "--max-connections", "6000",
                            "--login-timeout", "600"], data, env=env)
    base = ""
    deadline = time.monotonic() + 10
    while not base and time.monotonic() < deadline:
        ready = [e for e in server.read_events() if e.get("event") == "admin_ready"]
        base = f"http://127.0.0.1:{ready[0]['port']}" if ready else ""
        time.sleep(0.05)
    assert base, "the admin API did not start"
    swarm = subprocess.Popen([sys.executable, "-m", "tests.swarm", str(server.port), "1",
                              str(DEVICES), "--work", str(WORKERS)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert swarm.stdout is not None
        line = swarm.stdout.readline()  # "ready N SECONDS", or "" if it died
        assert line.startswith(f"ready {DEVICES} "), line
        yield Fleet(server, base, swarm, float(line.split()[2]))
    finally:
        if swarm.stdin is not None:
            swarm.stdin.close()
        try:
            swarm.wait(15)
        except subprocess.TimeoutExpired:
            swarm.kill()
            swarm.wait(5)
        server.stop()
        assert "Traceback" not in server.stderr_path.read_text()


async def _script_seconds(cdp: Any) -> float:
    metrics = (await cdp.send("Performance.getMetrics"))["metrics"]
    return float(next(m["value"] for m in metrics if m["name"] == "ScriptDuration"))


async def _updates(b: Browser) -> int:
    return int(await b.page.evaluate("edgenetDashboard.perf.updates.length"))


async def test_5000_devices_render_search_sort_page_and_update(fleet: Fleet,
                                                               tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with open_browser(tmp_path / "profile", token=TOKEN) as b:
        page = b.page
        t0 = time.monotonic()
        await page.goto(fleet.base + "/")
        count = page.locator("#devices-count")
        await expect(count).to_have_text("5,000 active", timeout=30_000)
        wall_first = time.monotonic() - t0
        perf = await page.evaluate("edgenetDashboard.perf")
        rows = page.locator("#devices tbody tr")
        await expect(rows).to_have_count(100)
        pager = page.locator("#devices-section .pager .page")
        await expect(pager).to_have_text("page 1 of 50 (1–100 of 5,000)")
        await b.shot("dashboard-1280.png")
        await b.shot("devices-5000.png", "#devices-section")

        # Search by name: on every refresh the filter holds.
        await page.fill("#device-search", "dev-4242")
        await expect(rows).to_have_count(1)
        await expect(rows.first).to_have_attribute("data-name", "dev-4242")
        await page.fill("#device-search", "dev-1")
        await expect(pager).to_have_text("page 1 of 10 (1–100 of 1,000)")
        await b.shot("devices-search.png", "#devices-section")
        await page.fill("#device-search", "")
        await expect(pager).to_contain_text("of 5,000)")

        # Sort by name both ways (header buttons), then page through.
        name_header = page.locator("#devices thead button[data-sort='name']")
        await name_header.click()
        await expect(rows.first).to_have_attribute("data-name", "dev-0001")
        await expect(page.locator("#devices thead th").first).to_have_attribute(
            "aria-sort", "ascending")
        await name_header.click()
        await expect(rows.first).to_have_attribute("data-name", "dev-5000")
        await page.click("#devices-section .pager .next")
        await expect(rows.first).to_have_attribute("data-name", "dev-4900")
        await expect(pager).to_have_text("page 2 of 50 (101–200 of 5,000)")
        await page.select_option("#device-sort", "commands:-1")  # the sort menu too
        await expect(pager).to_have_text("page 1 of 50 (1–100 of 5,000)")
        top = await rows.first.get_attribute("data-name")
        assert top is not None and int(top[4:]) <= WORKERS  # the busy devices lead

        # Per-update script time: idle page, natural updates (every 5 s at 5,000 devices).
        cdp = await b.context.new_cdp_session(page)
        await cdp.send("Performance.enable")
        before_n, before_s = await _updates(b), await _script_seconds(cdp)
        deadline = time.monotonic() + 30
        while await _updates(b) < before_n + 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.25)
        after_n, after_s = await _updates(b), await _script_seconds(cdp)
        assert after_n >= before_n + 3, "the page stopped updating"
        perf = await page.evaluate("edgenetDashboard.perf")
        in_page = [u["ms"] for u in perf["updates"][-(after_n - before_n):]]
        figures = {
            "devices": DEVICES, "login_seconds": fleet.login_seconds,
            "first_render_ms": round(perf["firstRender"]), "first_render_wall_s": round(wall_first, 2),
            "first_chart_ms": round(perf["firstChart"] or 0),
            "update_script_ms_median": round(statistics.median(in_page), 1),
            "update_parse_ms_median": round(statistics.median(
                u["parseMs"] for u in perf["updates"][-(after_n - before_n):]), 1),
            "main_thread_script_ms_per_update": round((after_s - before_s) * 1000
                                                      / (after_n - before_n), 1),
            "updates_measured": after_n - before_n,
        }
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        (SCREENSHOTS / "dashboard-perf.json").write_text(json.dumps(figures, indent=2) + "\n")
        print("\ndashboard at 5,000 devices:", json.dumps(figures))
        assert b.foreign_requests(fleet.base) == []
        assert b.errors == []


async def test_charts_draw_real_counters(fleet: Fleet, tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with open_browser(tmp_path / "profile", token=TOKEN) as b:
        page = b.page
        await page.goto(fleet.base + "/")
        await expect(page.locator("#chart-devices .now")).to_have_text("now 5,000")

        def points(chart: str, series: int = 1) -> Any:
            return page.evaluate(
                f"(edgenetDashboard.charts.points['{chart}'] || [[],[]])[{series}]"
                ".reduce((s, v) => s + (v || 0), 0)")

        async def grows(chart: str, series: int, before: float) -> float:
            deadline = time.monotonic() + 25
            while time.monotonic() < deadline:
                now = float(await points(chart, series))
                if now > before:
                    return now
                await asyncio.sleep(0.25)
            history = fleet.api("/api/v1/history")["data"]["series"]
            raise AssertionError(f"the {chart} chart's series {series} did not change "
                                 f"from {before}; the server's history: "
                                 f"{ {k: sum(v or 0 for v in vs) for k, vs in history.items()} }")

        # Real devices act; the charts' points (drawn from /api/v1/history) follow.
        uploads_before = float(await points("upload"))
        ued_before = float(await points("commands", 1))
        failed_before = float(await points("logins", 1))
        alpha = await WireDevice.connect(fleet.server.port)
        assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
        for i in range(10):
            reply = await alpha.call({"type": "upload", "file_id": 100 + i}, b"5\n" * 500)
            assert reply["type"] == "ok", reply
        beta = await WireDevice.connect(fleet.server.port)
        await beta.login("beta", "wrong")
        await grows("upload", 1, uploads_before)
        await grows("commands", 1, ued_before)
        await grows("logins", 1, failed_before)
        await expect(page.locator("#chart-devices .now")).to_have_text("now 5,001")
        await b.shot("charts-15m.png", "#charts-section")
        await b.shot("dashboard-activity.png")  # the one in docs/img/dashboard.png

        # The 1-hour view: 60 one-minute points, the current minute already drawn.
        await page.click(".window-buttons button[data-window='1h']")
        await expect(page.locator("#charts-range")).to_have_text("last hour")
        for _ in range(100):  # (wait_for_function would need 'unsafe-eval', which the CSP refuses)
            if await page.evaluate("edgenetDashboard.charts.points['devices'][0].length") == 60:
                break
            await asyncio.sleep(0.1)
        assert await page.evaluate("edgenetDashboard.charts.points['devices'][0].length") == 60
        assert await page.evaluate("edgenetDashboard.charts.points['devices'][1][59]") > 0
        await b.shot("charts-1h.png", "#charts-section")
        await alpha.close()
        await beta.close()
        assert b.foreign_requests(fleet.base) == []
        assert b.errors == []


async def test_layout_keyboard_kick_and_unblock(fleet: Fleet, tmp_path: Path) -> None:
    from playwright.async_api import expect

    gamma = await WireDevice.connect(fleet.server.port)
    for _ in range(3):
        await gamma.login("beta", "wrong-again")  # beta is blocked (the charts test failed once)
    async with open_browser(tmp_path / "profile", token=TOKEN) as b:
        page = b.page
        await page.goto(fleet.base + "/")
        await expect(page.locator("#devices-count")).to_have_text("5,000 active", timeout=30_000)
        wide = await b.too_wide()
        assert wide["wide"] == [] and wide["scrollWidth"] <= 1280, wide

        # The lockout counts down live, then is lifted from the keyboard.
        row = page.locator("#lockouts tbody tr[data-name='beta']")
        await expect(row).to_contain_text("blocked")
        left = row.locator("td.countdown")
        first = await left.text_content()
        await expect(left).not_to_have_text(first or "", timeout=5_000)
        await b.shot("lockouts.png", "#lockouts-section")
        await b.shot("files.png", "#files-section")
        await b.shot("events.png", "#events-section")
        await row.locator("button.lift").focus()
        await page.keyboard.press("Enter")
        await expect(row).to_have_count(0)
        await expect(page.locator("#message")).to_have_text("lifted beta")
        assert fleet.api("/api/v1/lockouts")["data"] == []

        # Tab from the search box reaches a Disconnect button; Enter kicks that device.
        await page.fill("#device-search", "dev-4999")
        target = page.locator("#devices tbody tr[data-name='dev-4999']")
        await expect(target).to_have_count(1)
        await page.focus("#device-search")
        for _ in range(40):
            await page.keyboard.press("Tab")
            if await page.evaluate("document.activeElement.classList.contains('disconnect')"):
                break
        else:
            raise AssertionError("no Disconnect button is reachable with Tab")
        owner = await page.evaluate("document.activeElement.closest('tr').dataset.name")
        assert owner == "dev-4999", owner
        # The periodic refresh re-renders the table under the focus, which stays put.
        await page.evaluate("""() => { window.__renders = 0;
            new MutationObserver(() => { window.__renders += 1; })
              .observe(document.querySelector('#devices tbody'), {childList: true}); }""")
        await page.wait_for_function("() => window.__renders > 0", timeout=20_000)
        kept = await page.evaluate("""() => { const el = document.activeElement;
            return [el.classList.contains('disconnect'), el.closest('tr')?.dataset.name]; }""")
        assert kept == [True, "dev-4999"], kept
        await page.keyboard.press("Enter")
        await expect(page.locator("#message")).to_have_text("disconnected dev-4999",
                                                            timeout=10_000)
        status, _ = http_json(fleet.base + "/api/v1/devices/dev-4999", TOKEN)
        assert status == 404
        # The page re-reads every device after an action, once the read in flight is
        # done: at 5,000 devices on a loaded box that is two reads of several seconds.
        await expect(target).to_have_count(0, timeout=20_000)
        await page.fill("#device-search", "")

        # 390 px wide: stacked cards, nothing wider than the screen.
        await page.set_viewport_size({"width": 390, "height": 844})
        await expect(page.locator("#devices-count")).to_have_text("4,999 active")
        await asyncio.sleep(0.3)  # the charts follow the new width
        wide = await b.too_wide()
        assert wide["wide"] == [] and wide["scrollWidth"] <= 390, wide
        await b.shot("dashboard-390.png")
        await page.set_viewport_size({"width": 1280, "height": 800})
        await asyncio.sleep(0.3)
        wide = await b.too_wide()
        assert wide["wide"] == [], wide
        assert b.foreign_requests(fleet.base) == []
        assert b.errors == []
    await gamma.close()
