"""The status page in a real headless browser: the chart renders, the numbers match."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from dialwatch.web import endpoints
from tests.conftest import Harness, MakeHarness
from tests.ledger_items import at, usage
from tests.test_endpoints import cycle
from tests.test_ledger import RULES as LEDGER_RULES

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)"
)
LAUNCH_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip


async def test_status_page_renders_chart_and_numbers_in_chromium(
    make_harness: MakeHarness, tmp_path: Path
) -> None:
    """Balance line and spend bars have real size on screen, and match the API's figures."""
    from playwright.async_api import async_playwright

    h: Harness = await make_harness(LEDGER_RULES)
    for step, cents in enumerate((900_000, 650_000, 412_345)):
        h.dial.account.balance_cents = cents
        h.dial.ledger.add(usage(at(-5, base=h.clock.now()), 2500 * (step + 1), call=f"s{step}"))
        await cycle(h)
        h.clock.advance(hours=48)
    runner = await endpoints.start(
        endpoints.make_app(lambda: [h.watcher], h.metrics), "127.0.0.1", 0
    )
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = await browser.new_page(viewport={"width": 900, "height": 1200})
            await page.goto(f"http://127.0.0.1:{runner.addresses[0][1]}/")
            balance = await page.locator("#balance-dial").inner_text()
            line = await page.locator("#balance-line-dial").bounding_box()
            points = await page.locator("#balance-line-dial").get_attribute("points")
            bars = page.locator("rect.spend-bar")
            bar_cents = [
                await bars.nth(i).get_attribute("data-cents") for i in range(await bars.count())
            ]
            tallest = max([(await bars.nth(i).bounding_box() or {"height": 0})["height"]
                           for i in range(await bars.count())])  # fmt: skip
            await page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
            await browser.close()
    finally:
        await runner.cleanup()

    assert balance == "$4,123.45"  # the simulated API's last balanceCents, 412345
    assert points is not None
    assert len(points.split()) == 3  # one point per check, two days apart
    assert line is not None
    assert line["width"] > 100
    assert line["height"] > 20
    # Seven days ending today (Nov 27): $25, $50 and $75 of usage on Nov 21, 23 and 25.
    assert bar_cents == ["2500", "0", "5000", "0", "7500", "0", "0"]
    assert tallest > 50
    assert (tmp_path / "status.png").stat().st_size > 10_000
