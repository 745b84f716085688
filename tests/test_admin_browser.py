"""The dashboard page in a real headless browser (Debian's chromium driven by playwright).

Skipped with the reason when playwright or chromium is missing, unless
EDGENET_REQUIRE_BROWSER=1 (CI), where that is a failure.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_admin_support import TOKEN, Device, live_server, wait_for

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
#: Milliseconds the page gets for each visible change (it polls every 2 s and streams events).
UI_TIMEOUT = 10_000


def _chromium() -> str | None:
    """EDGENET_CHROMIUM when set (only it), else Debian's chromium."""
    chosen = os.environ.get("EDGENET_CHROMIUM")
    candidates = [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium"),
                                          shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@pytest.fixture
async def browser_page(tmp_path: Path) -> AsyncIterator[Any]:
    reason = None
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        reason = "the 'playwright' Python package is not installed (pip install playwright)"
    chromium = _chromium()
    if reason is None and chromium is None:
        reason = ("no chromium found at " + (os.environ.get("EDGENET_CHROMIUM") or "/usr/bin/chromium")
                  + " (apt-get install chromium, or set EDGENET_CHROMIUM)")
    if reason is not None:
        if os.environ.get("EDGENET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"EDGENET_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=chromium, headless=True,
            args=CHROMIUM_ARGS, timeout=30_000)
        try:
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(UI_TIMEOUT)
            yield page
        finally:
            await context.close()


async def test_page_shows_state_and_lifts_and_disconnects(tmp_path: Path,
                                                          browser_page: Any) -> None:
    from playwright.async_api import expect

    page = browser_page
    async with live_server(tmp_path, token=TOKEN, max_attempts=2) as live:
        port = live.server.port
        alpha = await Device.connect(port)
        assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
        await alpha.call({"type": "upload", "file_id": 9}, b"4\n5\n")
        beta = await Device.connect(port)
        await beta.login("beta", "nope")
        assert (await beta.login("beta", "nope"))["code"] == "blocked"

        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(live.base + "/")
        # The server has a token: nothing is readable until it is given.
        await expect(page.locator("#status")).to_contain_text("token")
        await page.fill("#token", TOKEN)
        await page.click("#save-token")

        devices = page.locator("#devices tbody tr[data-name='alpha']")
        await expect(devices).to_have_count(1)
        await expect(devices).to_contain_text("127.0.0.1")
        await expect(page.locator("#files tbody tr[data-name='alpha']")).to_contain_text("9")
        blocked = page.locator("#lockouts tbody tr[data-name='beta']")
        await expect(blocked).to_contain_text("blocked")
        await expect(page.locator("#events tbody")).to_contain_text("device_blocked")

        # Lift block: the row goes, the server forgot the block, beta logs in.
        await blocked.locator("button.lift").click()
        await expect(blocked).to_have_count(0)
        await expect(page.locator("#message")).to_contain_text("lifted beta")
        assert "beta" not in [e.name for e in await live.server.state.lockouts.entries(
            live.server.clock())]
        assert (await beta.login("beta", "betapass"))["type"] == "ok"
        await expect(page.locator("#devices tbody tr[data-name='beta']")).to_have_count(1)

        # Disconnect: the device is told, the row goes, the event shows live.
        await devices.locator("button.disconnect").click()
        await expect(devices).to_have_count(0)
        notice = await alpha.recv()
        assert notice is not None and notice["kind"] == "disconnected"
        assert await live.server.state.presence.get("alpha") is None
        await expect(page.locator("#events tbody")).to_contain_text("block_lifted")
        await expect(page.locator("#live")).to_contain_text("streaming")
        assert errors == []
        await beta.close()


async def test_page_asks_for_a_token_before_acting(tmp_path: Path, browser_page: Any) -> None:
    from playwright.async_api import expect

    page = browser_page
    async with live_server(tmp_path, token=None) as live:
        gamma = await Device.connect(live.server.port)
        assert (await gamma.login("gamma", "gammapass"))["type"] == "ok"
        asked: list[str] = []

        async def answer(dialog: Any) -> None:
            asked.append(dialog.message)
            await dialog.accept("any-token")

        page.on("dialog", lambda d: asyncio.ensure_future(answer(d)))
        await page.goto(live.base + "/")  # loopback, no token: reads are open
        row = page.locator("#devices tbody tr[data-name='gamma']")
        await expect(row).to_have_count(1)
        await row.locator("button.disconnect").click()
        await expect(page.locator("#message")).to_contain_text("read-only")
        assert asked and "token" in asked[0].lower()
        assert await wait_for(lambda: live.server.state.presence.get("gamma"), what="gamma kept")
        await gamma.close()
