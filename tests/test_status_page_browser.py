"""The status page in a real headless browser: the chart renders, the numbers match."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from dialwatch.simulators.dial import DialSimulator
from dialwatch.simulators.hookbridge import HookBridgeSimulator
from dialwatch.simulators.mifumo import MifumoSimulator
from dialwatch.web import endpoints
from tests.conftest import Harness, MakeFleet, MakeHarness
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


PAGE_RULES = """
accounts:
  - {name: dial-prod, provider: dial, api_key: "${DIAL_KEY}", base_url: "${DIAL_URL}"}
  - {name: sms, provider: mifumo, api_key: "${MIFUMO_KEY}", base_url: "${MIFUMO_URL}"}
  - {name: hooks, provider: hookbridge, api_key: "${HOOKBRIDGE_KEY}", base_url: "${HOOKBRIDGE_URL}"}
channels:
  oncall: ${WEBHOOK}
defaults:
  notify: [oncall]
rules:
  - {name: wallet-low, kind: balance_below, threshold: "$50.00"}
  - {name: wallet-critical, kind: balance_below, threshold: "$10.00", severity: critical}
  - {name: hourly-spend, kind: spend_above, window: 1h, amount: "$500.00", accounts: [dial-prod]}
  - {name: credits-low, kind: balance_below, threshold: 500 credits}
  - {name: quota-80, kind: quota_above, percent: 80}
"""


@pytest.mark.parametrize("width", [1280, 390])
async def test_the_status_page_reads_at_a_glance_on_a_desk_and_a_phone(
    make_fleet: MakeFleet,
    dial: DialSimulator,
    mifumo: MifumoSimulator,
    hookbridge: HookBridgeSimulator,
    tmp_path: Path,
    width: int,
) -> None:
    """Three alerts fire (one critical): each account's state is its worst alert's
    colour, the alerts say what is wrong, and at 390 px nothing scrolls sideways."""
    from playwright.async_api import async_playwright

    dial.account.balance_cents = 850  # below $10 and $50: critical and warning
    dial.ledger.extend([usage(at(-30 * k), 40 + k, call=f"c{k}") for k in range(1, 40)])
    mifumo.account.balance = 2_000
    hookbridge.account.month("2026-11-01", "2026-11-30", 4_600, 5_000)
    h = await make_fleet(PAGE_RULES)
    await h.check()
    runner = await endpoints.start(endpoints.make_app(h.fleet.all, h.fleet.metrics), "127.0.0.1", 0)
    try:
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = await browser.new_page(viewport={"width": width, "height": 900})
            await page.goto(f"http://127.0.0.1:{runner.addresses[0][1]}/")
            overflow = await page.evaluate("document.documentElement.scrollWidth")
            states = {
                name: await page.locator(f"#glance-{name} .pill").inner_text()
                for name in ("dial-prod", "sms", "hooks")
            }
            colours = await page.locator("#firing .pill").evaluate_all(
                "pills => pills.map(p => getComputedStyle(p).backgroundColor)"
            )
            firing = await page.locator("#firing").inner_text()
            shot = Path(os.environ.get("SCREENSHOTS", tmp_path)) / f"status-{width}.png"
            await page.screenshot(path=str(shot), full_page=width > 400)
            await browser.close()
    finally:
        await runner.cleanup()
    assert overflow <= width
    assert states == {"dial-prod": "2 firing", "sms": "ok", "hooks": "1 firing"}
    assert colours[0] == "rgb(198, 40, 40)"  # critical first, in red
    assert "dial-prod / wallet-critical" in firing
    assert "wallet balance $8.50 is below $10.00" in firing
    assert "quota" in firing
    assert shot.stat().st_size > 20_000
