"""/healthz, /readyz, /metrics and the status page, against a watcher run by tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta

import aiohttp
import pytest

from dialwatch.delivery.outbox import deliver_due
from dialwatch.pipeline.cycle import run_cycle
from dialwatch.simulators import Fault
from dialwatch.web import endpoints
from tests.conftest import API_KEY, Harness, MakeHarness
from tests.ledger_items import at, usage
from tests.servers import WebhookReceiver
from tests.test_ledger import RULES as LEDGER_RULES


@pytest.fixture
async def base_url(harness: Harness) -> AsyncIterator[str]:
    runner = await endpoints.start(
        endpoints.make_app(lambda: [harness.watcher], harness.metrics), "127.0.0.1", 0
    )
    yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    await runner.cleanup()


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


async def cycle(h: Harness) -> None:
    h.watcher.health.loop_tick = h.clock.now()
    await run_cycle(h.watcher)
    report = await deliver_due(h.watcher.store, h.watcher.notifier, h.clock.now())
    h.watcher.metrics.observe_delivery(report)


async def test_health_and_readiness_follow_the_checks(harness: Harness, base_url: str) -> None:
    """Not ready before a check; ready after one; not ready 3 intervals later, with why."""
    assert await get(f"{base_url}/healthz") == (503, "dial: starting, no check has begun yet\n")
    assert (await get(f"{base_url}/readyz"))[0] == 503

    await cycle(harness)
    assert await get(f"{base_url}/healthz") == (200, "ok\n")
    assert await get(f"{base_url}/readyz") == (200, "dial: ready: last successful check 0s ago\n")

    harness.dial.faults.extend([Fault.server_error()] * 4)
    harness.clock.advance(minutes=3, seconds=1)
    await cycle(harness)
    status, text = await get(f"{base_url}/readyz")
    assert status == 503
    assert text.startswith(
        "dial: not ready: last successful check 181s ago (more than 3 intervals)"
    )
    assert "last error: server_error: server error: Service temporarily unavailable" in text

    harness.clock.advance(minutes=10)  # the loop stopped ticking
    status, text = await get(f"{base_url}/healthz")
    assert status == 503
    assert text.startswith("dial: stalled, the check loop last ran at")


async def test_metrics_expose_balance_checks_notifications_and_alerts(
    harness: Harness, base_url: str, webhook: WebhookReceiver
) -> None:
    """Prometheus text with the figures a dashboard needs, and no secret in it."""
    harness.dial.account.balance_cents = 4000
    await cycle(harness)
    harness.dial.faults.extend([Fault.html()] * 4)
    harness.clock.advance(minutes=1)
    await cycle(harness)

    status, text = await get(f"{base_url}/metrics")
    assert status == 200
    for line in [
        'dialwatch_balance_cents{account="dial",currency="USD"} 4000.0',
        'dialwatch_checks_total{account="dial"} 2.0',
        'dialwatch_check_failures_total{account="dial",reason="bad_response"} 1.0',
        'dialwatch_notifications_sent_total{channel="oncall"} 1.0',
        'dialwatch_notifications_sent_total{channel="finance"} 1.0',
        'dialwatch_notifications_pending{channel="oncall"} 0.0',
        'dialwatch_alert_state{account="dial",rule="wallet-low",state="firing"} 1.0',
        'dialwatch_alert_state{account="dial",rule="wallet-critical",state="inactive"} 1.0',
        'dialwatch_api_request_duration_seconds_count{path="/api/v1/billing"} 5.0',
    ]:
        assert line in text.splitlines(), line
    assert API_KEY not in text
    assert webhook.url.split("://")[1] not in text


async def test_status_page_shows_balance_history_spend_alerts_and_notifications(
    harness: Harness, base_url: str
) -> None:
    """The page carries the current balance, a 7-day chart, firing alerts and recent sends."""
    for hours, cents in enumerate((9000, 7000, 4000)):
        harness.dial.account.balance_cents = cents
        harness.clock.advance(hours=hours)
        await cycle(harness)

    status, html = await get(f"{base_url}/")
    assert status == 200
    assert '<span class="big" id="balance-dial">$40.00</span>' in html
    assert 'data-points="3"' in html
    # At a glance: amber (a warning fires), the balance; the alert with its summary.
    assert '<span class="pill amber">1 firing</span>' in html
    assert '<td class="n">$40.00</td>' in html
    assert (
        '<span class="pill warning">warning</span></td><td>dial / wallet-low<br>'
        '<span class="muted">wallet balance $40.00 is below $50.00</span>'
    ) in html
    assert "[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00" in html
    assert "sent 2026-11-21 15:00 UTC" in html
    assert "add one (spend_above, usage_item, runway_below)" in html  # the ledger is not read
    # The notification history is searchable.
    _, found = await get(f"{base_url}/?q=WALLET-low")
    assert "[WARNING] dial / wallet-low" in found
    _, none = await get(f"{base_url}/?q=100%25_off")
    assert "Nothing matches “100%_off”." in none
    assert "json://" not in html  # channel names only, never their URLs
    assert "mailto://" not in html


async def test_status_page_charts_spend_per_day(make_harness: MakeHarness) -> None:
    """With a spend rule, each day's usage spend becomes one bar with its amount."""
    h = await make_harness(LEDGER_RULES)
    h.dial.account.balance_cents = 1_000_000
    h.dial.ledger.extend([usage(at(-60 * 20), 1234, call="a"), usage(at(-5), 766, call="b")])
    await cycle(h)
    runner = await endpoints.start(
        endpoints.make_app(lambda: [h.watcher], h.metrics), "127.0.0.1", 0
    )
    try:
        status, html = await get(f"http://127.0.0.1:{runner.addresses[0][1]}/")
    finally:
        await runner.cleanup()
    assert status == 200
    assert 'data-day="2026-11-20" data-cents="1234"' in html
    assert 'data-day="2026-11-21" data-cents="766"' in html


async def test_status_page_lists_silences_in_force(harness: Harness, base_url: str) -> None:
    """A silence shows with its rule, scope, end and reason; an expired one does not."""
    now = harness.clock.now()
    store = harness.watcher.store
    await store.add_silence("wallet-low", "dial", now + timedelta(hours=2), "top-up <Monday>", now)
    await store.add_silence(
        "cancelling", None, now - timedelta(minutes=1), "old", now - timedelta(hours=1)
    )
    _, html = await get(f"{base_url}/")
    assert (
        "<tr><td>1</td><td>wallet-low</td><td>dial</td><td>2026-11-21 14:00 UTC</td>"
        "<td>top-up &lt;Monday&gt;</td></tr>"
    ) in html
    assert "<td>old</td>" not in html
