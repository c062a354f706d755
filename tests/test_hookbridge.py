"""HookBridge against a local server speaking its documented API: the monthly quota
rules, unlimited plans, its error envelope and its published rate limit."""

from __future__ import annotations

import pytest

from dialwatch.simulators import Fault, RateLimit
from dialwatch.simulators.hookbridge import HookBridgeSimulator
from tests.conftest import HOOKBRIDGE_KEY, MakeFleet
from tests.servers import WebhookReceiver, get_json

RULES = """
accounts:
  - name: hooks
    provider: hookbridge
    api_key: ${HOOKBRIDGE_KEY}
    base_url: ${HOOKBRIDGE_URL}
channels:
  oncall: ${WEBHOOK}
defaults:
  notify: [oncall]
rules:
  - {name: quota-80, kind: quota_above, percent: 80}
  - {name: quota-95, kind: quota_above, percent: 95}
  - {name: quota-100, kind: quota_above, percent: 100, severity: critical}
  - {name: overage, kind: quota_above, overage: true, severity: critical}
"""


async def test_quota_rules_fire_as_the_month_fills_and_resolve_in_a_new_month(
    make_fleet: MakeFleet, hookbridge: HookBridgeSimulator, webhook: WebhookReceiver
) -> None:
    """80%, 95%, 100% and overage each fire once as usage grows; the next month's
    fresh count resolves them."""
    account = hookbridge.account
    account.month("2026-10-01", "2026-10-31", 7000, 5000, overage=2000)  # last month
    month = account.month("2026-11-01", "2026-11-30", 4100, 5000)
    h = await make_fleet(RULES)

    await h.check()
    assert webhook.alert_titles == [
        "[WARNING] hooks / quota-80: 4,100 messages used this month, 82.0% of the 5,000 plan limit"
    ]
    body = webhook.received[0]["message"]
    assert "Used: 4,100 messages (82.0% of the plan)" in body
    assert "Plan limit: 5,000 messages" in body
    assert "Time left in the month: 9 days" in body  # Nov 21 12:00 to Dec 1 00:00

    webhook.received.clear()
    month.update(message_count=5200, overage_count=200)
    h.clock.advance(hours=1)
    await h.check()
    assert sorted(webhook.alert_titles) == [
        "[CRITICAL] hooks / overage: 200 messages over the plan limit of 5,000 this month",
        "[CRITICAL] hooks / quota-100: 5,200 messages used this month, 104.0% of the 5,000 "
        "plan limit",
        "[WARNING] hooks / quota-95: 5,200 messages used this month, 104.0% of the 5,000 "
        "plan limit",
    ]

    webhook.received.clear()
    account.month("2026-12-01", "2026-12-31", 10, 5000)
    h.clock.advance(days=10)
    await h.check()
    assert len(webhook.alert_titles) == 4
    assert all(t.startswith("[RESOLVED] hooks / ") for t in webhook.alert_titles)
    metrics = (await h.fleet.metrics.render(h.fleet.store, ["oncall"], h.clock.now())).decode()
    assert 'dialwatch_quota_used{account="hooks"} 10.0' in metrics
    assert 'dialwatch_quota_limit{account="hooks"} 5000.0' in metrics


async def test_unlimited_plan_never_fires(
    make_fleet: MakeFleet, hookbridge: HookBridgeSimulator, webhook: WebhookReceiver
) -> None:
    """plan_limit null means unlimited: no percentage of it is ever reached."""
    hookbridge.account.month("2026-11-01", "2026-11-30", 9_000_000, None)
    h = await make_fleet(RULES)

    report = (await h.check())["hooks"]

    assert report.errors == []
    assert webhook.received == []
    metrics = (await h.fleet.metrics.render(h.fleet.store, ["oncall"], h.clock.now())).decode()
    assert 'dialwatch_quota_used{account="hooks"} 9e+06' in metrics
    assert "dialwatch_quota_limit{" not in metrics  # unlimited
    assert {o.finding.summary for o in report.outcomes if o.spec.kind == "quota_above"} == {
        "9,000,000 messages this month on an unlimited plan"
    }


async def test_error_envelope_is_quoted_with_its_request_id(
    make_fleet: MakeFleet, hookbridge: HookBridgeSimulator, webhook: WebhookReceiver
) -> None:
    """A 401 reads HookBridge's code, message and request id; the key is never shown."""
    hookbridge.account.api_key = "hb_live_revoked"
    h = await make_fleet(RULES)

    report = (await h.check())["hooks"]

    assert report.error is not None
    assert report.error.reason == "auth"
    assert "UNAUTHORIZED: Invalid or missing API key (request req_" in str(report.error)
    assert webhook.alert_titles[0].startswith("[CRITICAL] hooks / dialwatch-api-auth:")
    assert HOOKBRIDGE_KEY not in str(webhook.received)


async def test_rate_limit_waits_for_retry_after_then_gives_up_for_this_check(
    make_fleet: MakeFleet, hookbridge: HookBridgeSimulator
) -> None:
    """Past the published limit, each retry waits the server's Retry-After; a limit that
    holds fails this check only."""
    hookbridge.rate_limit = RateLimit(1, 60)
    hookbridge.account.month("2026-11-01", "2026-11-30", 10, 5000)
    h = await make_fleet(RULES)
    assert (await h.check())["hooks"].errors == []

    report = (await h.check())["hooks"]

    assert report.error is not None
    assert report.error.reason == "rate_limited"
    assert len(h.sleep.delays) == 3  # four attempts in all
    assert all(55 <= delay <= 60 for delay in h.sleep.delays)


async def test_empty_page_that_says_more_follow_is_a_bad_response(
    make_fleet: MakeFleet, hookbridge: HookBridgeSimulator
) -> None:
    """has_more with no data would page forever: it fails the check instead."""
    empty = {"data": [], "meta": {"request_id": "req_1", "total": 30, "has_more": True}}
    hookbridge.faults.extend([Fault.json_body(empty)])
    h = await make_fleet(RULES)

    report = (await h.check())["hooks"]

    assert report.error is not None
    assert "pagination ended early" in str(report.error)


async def test_month_found_on_a_later_page(
    make_fleet: MakeFleet, hookbridge: HookBridgeSimulator, webhook: WebhookReceiver
) -> None:
    """The current month is looked for with limit/offset until the list ends."""
    for month in range(1, 13):  # a year of future-dated periods ahead of it
        hookbridge.account.month(f"2027-{month:02d}-01", f"2027-{month:02d}-28", 0, 5000)
    hookbridge.account.month("2026-11-01", "2026-11-30", 4500, 5000)
    h = await make_fleet(RULES)

    await h.check()

    assert [r.split("?")[1] for r in hookbridge.requests] == [
        "limit=12&offset=0",
        "limit=12&offset=12",
    ]
    assert webhook.alert_titles[0].startswith("[WARNING] hooks / quota-80: 4,500 messages")


@pytest.mark.parametrize(
    ("query", "status", "code"),
    [("limit=25", 400, "INVALID_REQUEST"), ("limit=0", 400, "INVALID_REQUEST"),
     ("offset=-1", 400, "INVALID_REQUEST"), ("limit=24", 200, None)],
)  # fmt: skip
async def test_simulator_validates_limit_and_offset(
    hookbridge: HookBridgeSimulator, query: str, status: int, code: str | None
) -> None:
    """limit is 1-24 and offset at least 0, refused in the documented envelope."""
    got, body = await get_json(
        f"{hookbridge.base_url}/v1/billing/usage-history?{query}",
        {"Authorization": f"Bearer {HOOKBRIDGE_KEY}"},
    )
    assert got == status
    if code:
        assert body["error"]["code"] == code
        assert body["meta"]["request_id"].startswith("req_")
    else:
        assert body["meta"]["has_more"] is False
