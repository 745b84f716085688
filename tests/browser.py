"""Headless Chromium (Debian's) driven by playwright, for the dashboard tests.

Skipped with the reason when playwright or chromium is missing, unless
EDGENET_REQUIRE_BROWSER=1 (CI), where that is a failure. The browser starts with a
fresh profile and no usable network (every host name but loopback fails to
resolve), and every request it makes is recorded, so a test can check that the page
asked only its own server for anything.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "build" / "screenshots"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                 # No network but loopback: the page must not need one.
                 "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]
#: Milliseconds the page gets for each visible change (it polls every 3-5 s and streams events).
UI_TIMEOUT = 15_000

#: Script that lists every element wider than the viewport (or reaching past its right edge).
TOO_WIDE = """() => {
  const w = document.documentElement.clientWidth;
  const out = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 && r.height === 0) continue;
    if (r.width > w + 0.5 || r.right > w + 0.5 || r.left < -0.5) {
      out.push(el.tagName.toLowerCase() + (el.id ? '#' + el.id : '') +
               (el.className && typeof el.className === 'string' ? '.' + el.className : '') +
               ' "' + (el.textContent || '').trim().slice(0, 30) + '" ' +
               Math.round(r.left) + '..' + Math.round(r.right));
    }
  }
  return {scrollWidth: document.documentElement.scrollWidth, width: w, wide: out.slice(0, 20)};
}"""


def chromium() -> str | None:
    """EDGENET_CHROMIUM when set (only it), else Debian's chromium."""
    chosen = os.environ.get("EDGENET_CHROMIUM")
    candidates = [chosen] if chosen else ["/usr/bin/chromium", shutil.which("chromium"),
                                          shutil.which("chromium-browser")]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def require_browser() -> str:
    """The chromium binary, or skip (fail under EDGENET_REQUIRE_BROWSER=1) with the reason."""
    reason = None
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        reason = "the 'playwright' Python package is not installed (pip install playwright)"
    binary = chromium()
    if reason is None and binary is None:
        reason = ("no chromium found at " + (os.environ.get("EDGENET_CHROMIUM")
                                             or "/usr/bin/chromium")
                  + " (apt-get install chromium, or set EDGENET_CHROMIUM)")
    if reason is not None or binary is None:
        if os.environ.get("EDGENET_REQUIRE_BROWSER") == "1":
            pytest.fail(f"EDGENET_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(str(reason))
    return binary


@dataclass
class Browser:
    page: Any
    context: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def foreign_requests(self, base: str) -> list[str]:
        """Requests to anything but ``base`` (the server's own address)."""
        return [u for u in self.requests if not (u == base or u.startswith(base + "/"))]

    async def too_wide(self) -> dict[str, Any]:
        return dict(await self.page.evaluate(TOO_WIDE))

    async def shot(self, name: str, selector: str | None = None, full: bool = False) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        path = str(SCREENSHOTS / name)
        if selector:
            await self.page.locator(selector).screenshot(path=path)
        else:
            await self.page.screenshot(path=path, full_page=full)


@contextlib.asynccontextmanager
async def open_browser(profile: Path, width: int = 1280, height: int = 800,
                       token: str | None = None) -> AsyncIterator[Browser]:
    """A fresh Chromium profile at ``width`` x ``height``; ``token`` is put in the
    page's session storage before any page script runs (as if typed earlier)."""
    binary = require_browser()
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile), executable_path=binary, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": width, "height": height}, timeout=30_000)
        try:
            if token is not None:
                await context.add_init_script(
                    f"sessionStorage.setItem('edgenet-admin-token', {token!r})")
            page = context.pages[0] if context.pages else await context.new_page()
            page.set_default_timeout(UI_TIMEOUT)
            browser = Browser(page, context)
            context.on("request", lambda r: browser.requests.append(r.url))
            page.on("pageerror", lambda exc: browser.errors.append(str(exc)))
            page.on("console", lambda m: browser.errors.append(m.text)
                    if m.type == "error" and "401" not in m.text else None)
            yield browser
        finally:
            await context.close()
