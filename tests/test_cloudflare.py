"""Cloudflare against a local server speaking its documented API: the billing history in
the v4 envelope, per_page 5-50, token or global-key auth, and failures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dialwatch.simulators import Fault, RateLimit
from dialwatch.simulators.cloudflare import CloudflareSimulator
from dialwatch.units import Money
from dialwatch.web.status_page import render_status_page
from tests.conftest import CLOUDFLARE_TOKEN, START, MakeFleet
from tests.servers import WebhookReceiver, get_json

RULES = """
accounts:
  - name: cf
    provider: cloudflare
    api_key: ${CLOUDFLARE_TOKEN}
    base_url: ${CLOUDFLARE_URL}
channels:
  oncall: ${WEBHOOK}
defaults:
  notify: [oncall]
rules:
  - name: cf-daily
    kind: spend_above
    window: 24h
    amount: "$100.00"
  - name: cf-charges
    kind: ledger_event
    types: [charge]
  - name: cf-big-zone-charge
    kind: usage_item
    min_amount: "$50.00"
    match: {zone: example.com}
"""


def stamp(hours: float) -> str:
    return (START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_spend_reads_only_the_pages_the_window_needs(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator, webhook: WebhookReceiver
) -> None:
    """Newest first, 50 a page: a 24h window over 10 days of charges takes one page, and
    the float amounts add up exactly."""
    for i in range(120):  # one every 2 hours
        cloudflare.account.charge(f"c{i:03d}", 10.01, stamp(-2 * i - 1), zone="example.com")
    h = await make_fleet(RULES)

    report = (await h.check())["cf"]

    assert report.errors == []
    assert cloudflare.requests == ["/user/billing/history?page=1&per_page=50"]
    assert report.spend["cf-daily"].cents == 12 * 1001  # 12 charges in the last 24h
    assert webhook.alert_titles == [
        "[WARNING] cf / cf-daily: spend $120.12 in the last 24h is above $100.00"
    ]


async def test_new_charge_is_news_with_action_description_and_zone(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator, webhook: WebhookReceiver
) -> None:
    """What Cloudflare billed, for what and on which zone, in one message per rule."""
    h = await make_fleet(RULES)
    await h.check()  # first start: history only

    cloudflare.account.charge(
        "w1", 55.00, stamp(0.5), action="subscription", description="Workers Paid",
        zone="example.com",
    )  # fmt: skip
    cloudflare.account.charge("r1", 5.00, stamp(0.6), action="usage", description="R2")
    h.clock.advance(hours=1)
    await h.check()

    assert sorted(webhook.alert_titles) == [
        "[INFO] cf / cf-charges: 2 new ledger items: charge (total $60.00)",
        "[WARNING] cf / cf-big-zone-charge: 1 spend item(s) at or above $50.00 (total $55.00)",
    ]
    body = "\n".join(m["message"] for m in webhook.received)
    assert "charge of $55.00 (subscription: Workers Paid), zone example.com" in body
    assert "charge of $5.00 (usage: R2)" in body


async def test_global_api_key_with_email_is_accepted(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator
) -> None:
    """api_email + api_key send X-Auth-Email and X-Auth-Key instead of a Bearer token."""
    cloudflare.account.global_key = "0123456789abcdef0123456789abcdef01234"
    rules = RULES.replace(
        "api_key: ${CLOUDFLARE_TOKEN}",
        "api_key: 0123456789abcdef0123456789abcdef01234\n    api_email: billing@example.com",
    )
    h = await make_fleet(rules)

    assert (await h.check())["cf"].errors == []


async def test_rejected_credentials_quote_the_envelope_errors(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator, webhook: WebhookReceiver
) -> None:
    """A 403 (on the ledger read: Cloudflare's billing read makes no request) reads the
    envelope's `code: message` and raises the auth alert naming the account, which
    resolves once the token works again."""
    cloudflare.account.api_token = "rotated"
    h = await make_fleet(RULES)

    report = (await h.check())["cf"]

    assert report.ledger_error is not None
    assert report.ledger_error.reason == "auth"
    assert "10000: Authentication error" in str(report.ledger_error)
    assert CLOUDFLARE_TOKEN not in str(report.ledger_error)
    rejected = (
        "[CRITICAL] cf / dialwatch-api-auth: the billing API rejected dialwatch's API key "
        "for cf; no rule can be checked until it is replaced"
    )
    assert webhook.titles == [rejected]

    cloudflare.account.api_token = CLOUDFLARE_TOKEN
    h.clock.advance(minutes=1)
    await h.check()
    assert webhook.titles == [
        rejected,
        "[RESOLVED] cf / dialwatch-api-auth: the billing API accepts dialwatch's API key "
        "for cf again",
    ]


async def test_success_false_on_a_200_is_a_bad_response(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator
) -> None:
    """An envelope that says it failed is never read as an empty history."""
    failed = {"success": False, "errors": [{"code": 1001, "message": "internal"}],
              "messages": [], "result": None}  # fmt: skip
    cloudflare.faults.extend([Fault.json_body(failed)] * 4)
    h = await make_fleet(RULES)

    report = (await h.check())["cf"]

    assert report.ledger_error is not None
    assert report.ledger_error.reason == "bad_response"
    assert "success is false: 1001: internal" in str(report.ledger_error)


async def test_pagination_that_ends_before_total_count_fails_the_read(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator
) -> None:
    """A short last page while result_info counts more means items went missing."""
    cloudflare.account.charge("c1", 1.00, stamp(-1))
    short = {"success": True, "errors": [], "messages": [], "result": [],
             "result_info": {"page": 1, "per_page": 50, "count": 0, "total_count": 75}}  # fmt: skip
    cloudflare.faults.append(Fault.json_body(short))
    h = await make_fleet(RULES)

    report = (await h.check())["cf"]

    assert report.ledger_error is not None
    assert "the API counts 75 items, its pages held 0" in str(report.ledger_error)


async def test_rate_limited_check_fails_alone_and_recovers(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator
) -> None:
    """Over the published 1200 requests per 5 minutes, the server's Retry-After is
    waited for; then the check fails and the next one reads again."""
    cloudflare.rate_limit = RateLimit(1, 300)
    h = await make_fleet(RULES)
    assert (await h.check())["cf"].errors == []

    report = (await h.check())["cf"]

    assert report.ledger_error is not None
    assert report.ledger_error.reason == "rate_limited"
    assert "rate limited; Retry-After " in str(report.ledger_error)
    assert h.sleep.delays == []  # 300s is past what one check may wait: next interval


@pytest.mark.parametrize(
    ("query", "status"),
    [("per_page=4", 400), ("per_page=51", 400), ("page=0", 400), ("per_page=5", 200)],
)
async def test_simulator_holds_per_page_to_5_through_50(
    cloudflare: CloudflareSimulator, query: str, status: int
) -> None:
    """per_page outside 5-50 is refused in the envelope, as documented."""
    got, body = await get_json(
        f"{cloudflare.base_url}/user/billing/history?{query}",
        {"Authorization": f"Bearer {CLOUDFLARE_TOKEN}"},
    )
    assert got == status
    assert body["success"] is (status == 200)


async def test_an_account_billed_in_euros_is_shown_and_summed_in_euros(
    make_fleet: MakeFleet, cloudflare: CloudflareSimulator, webhook: WebhookReceiver
) -> None:
    """A €140.00 charge: the spend rule, the status page's per-day spend and the store's
    per-day figures say €140.00, never $140.00."""
    cloudflare.account.charge("e1", 140.00, stamp(-3), currency="EUR", zone="example.com")
    h = await make_fleet(RULES.replace('"$100.00"', '"€100.00"').replace('"$50.00"', '"€50.00"'))

    await h.check()
    page = await render_status_page(h.fleet.all(), h.clock.now())

    assert webhook.alert_titles == [
        "[WARNING] cf / cf-daily: spend €140.00 in the last 24h is above €100.00"
    ]
    assert "€140.00" in page
    assert "$140.00" not in page
    by_day = await h.fleet.store.spend_by_day("cf", START - timedelta(days=1), "EUR")
    assert list(by_day.values()) == [Money(14000, "EUR")]
