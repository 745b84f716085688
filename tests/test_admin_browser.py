"""The dashboard page in a real headless browser (Debian's chromium driven by playwright),
against an in-process server: the token box, kick and unblock, the lockout countdown,
stored files with their statistics and the device filter, live events, a read-only
server. (The 5,000-device tests are in test_dashboard_scale.py.)"""

from __future__ import annotations

import re
from pathlib import Path

from tests.browser import open_browser
from tests.test_admin_support import TOKEN, Device, live_server, wait_for


async def test_token_box_kick_unblock_files_and_events(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with live_server(tmp_path, token=TOKEN, max_attempts=2) as live, \
            open_browser(tmp_path / "profile") as b:
        page = b.page
        port = live.server.port
        alpha = await Device.connect(port)
        assert (await alpha.login("alpha", "alphapass"))["type"] == "ok"
        await alpha.call({"type": "upload", "file_id": 9}, b"4\n5\n")
        await alpha.call({"type": "compute", "file_id": 9, "op": "SUM"})
        gamma = await Device.connect(port)
        assert (await gamma.login("gamma", "gammapass"))["type"] == "ok"
        await gamma.call({"type": "upload", "file_id": 3}, b"7\n" * 700)
        beta = await Device.connect(port)
        await beta.login("beta", "nope")
        assert (await beta.login("beta", "nope"))["code"] == "blocked"

        # The server has a token: the box says so, then says when one was refused.
        await page.goto(live.base + "/")
        state = page.locator("#token-state")
        await expect(state).to_contain_text("needs its admin token")
        await page.fill("#token", "not-the-token")
        await page.click("#save-token")
        await expect(state).to_contain_text("token was refused")
        await page.fill("#token", TOKEN)
        await page.keyboard.press("Enter")
        await expect(state).to_contain_text("Token accepted")

        devices = page.locator("#devices tbody tr[data-name='alpha']")
        await expect(devices).to_have_count(1)
        await expect(devices).to_contain_text("127.0.0.1")
        await expect(devices.locator("td[data-label='Uploaded']")).to_have_text("4 B")

        # Files: human sizes, cached statistics, filter by device.
        files = page.locator("#files tbody tr")
        await expect(files).to_have_count(2)
        alpha_file = page.locator("#files tbody tr[data-name='alpha']")
        await expect(alpha_file.locator("td[data-label='SUM']")).to_have_text("9")
        await expect(alpha_file.locator("td[data-label='AVERAGE']")).to_have_text("4.5")
        await expect(page.locator("#files tbody tr[data-name='gamma'] td[data-label='Size']")
                     ).to_have_text("1.4 KiB")
        await page.fill("#file-device", "gam")
        await expect(files).to_have_count(1)
        await expect(files.first).to_have_attribute("data-name", "gamma")

        # The block counts down live; Lift block ends it and beta logs in.
        blocked = page.locator("#lockouts tbody tr[data-name='beta']")
        await expect(blocked).to_contain_text("blocked")
        left = blocked.locator("td.countdown")
        await expect(left).to_have_text(re.compile(r"^\d+ s$"))  # 60 s block: seconds
        first = await left.text_content()
        await expect(left).not_to_have_text(first or "")
        await expect(page.locator("#events tbody")).to_contain_text("device_blocked")
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
        assert b.foreign_requests(live.base) == []
        assert b.errors == []
        for dev in (beta, gamma):
            await dev.close()


async def test_a_read_only_server_says_so_and_changes_nothing(tmp_path: Path) -> None:
    from playwright.async_api import expect

    async with live_server(tmp_path, token=None) as live, \
            open_browser(tmp_path / "profile") as b:
        page = b.page
        gamma = await Device.connect(live.server.port)
        assert (await gamma.login("gamma", "gammapass"))["type"] == "ok"
        await page.goto(live.base + "/")  # loopback, no token: reads are open
        await expect(page.locator("#token-state")).to_contain_text("no admin token")
        await expect(page.locator("#token-state")).to_contain_text("read-only")
        row = page.locator("#devices tbody tr[data-name='gamma']")
        await expect(row).to_have_count(1)
        await row.locator("button.disconnect").click()
        await expect(page.locator("#message")).to_contain_text("read-only")
        assert await wait_for(lambda: live.server.state.presence.get("gamma"), what="gamma kept")
        assert b.foreign_requests(live.base) == []
        await gamma.close()
