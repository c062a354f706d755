"""Mifumo SMS against a local server speaking its documented API: credits, the
page-numbered billing history, float amounts made exact, auth and failures."""

from __future__ import annotations

from datetime import timedelta

import pytest

from dialwatch.simulators import Fault
from dialwatch.simulators.mifumo import MifumoSimulator
from tests.conftest import MIFUMO_KEY, START, MakeFleet
from tests.servers import WebhookReceiver, get_json

RULES = """
accounts:
  - name: sms
    provider: mifumo
    api_key: ${MIFUMO_KEY}
    base_url: ${MIFUMO_URL}
channels:
  oncall: ${WEBHOOK}
defaults:
  notify: [oncall]
rules:
  - name: sms-credits-low
    kind: balance_below
    threshold: 500 credits
  - name: sms-spend
    kind: spend_above
    window: 24h
    amount: "$20.00"
  - name: sms-bundles
    kind: ledger_event
    types: [purchase]
"""


def pages_read(simulator: MifumoSimulator) -> list[int]:
    """The history page numbers asked for, in order."""
    return [
        int(r.split("page=")[1].split("&")[0])
        for r in simulator.requests
        if r.startswith("/api/billing/history/")
    ]


def stamp(hours: float) -> str:
    """A created_at `hours` after START (negative: before), as Django writes it."""
    return (START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def test_credits_and_spend_over_many_pages_are_exact(
    make_fleet: MakeFleet, mifumo: MifumoSimulator, webhook: WebhookReceiver
) -> None:
    """Credits compare with a credits threshold; 251 float amounts over three pages add
    up to the cent."""
    account = mifumo.account
    account.balance = 450
    for i in range(250):  # 0.07 has no exact float: 250 of them must still be $17.50
        account.record(f"u{i}", "usage", -0.07, stamp(-20 + i * 0.05))
    account.record("u-big", "usage", -3.10, stamp(-1))
    account.record("old", "usage", -99.00, stamp(-30))  # outside the 24h window
    account.record("failed", "purchase", 50.00, stamp(-2))
    account.records[-1]["status"] = "failed"  # moved no money: not counted, not news
    h = await make_fleet(RULES)

    reports = await h.check()

    assert reports["sms"].errors == []
    assert sorted(webhook.alert_titles) == [
        "[WARNING] sms / sms-credits-low: SMS credit balance 450 credits is below 500 credits",
        "[WARNING] sms / sms-spend: spend $20.60 in the last 24h is above $20.00",
    ]
    history = [r for r in mifumo.requests if r.startswith("/api/billing/history/")]
    # Oldest first, as documented: page 1 for the count, then from the end back.
    assert history == [f"/api/billing/history/?page={n}&page_size=100" for n in (1, 3, 2)]
    body = next(m["message"] for m in webhook.received if "sms-spend" in m["message"])
    assert "Spend: $20.60 over 251 item(s)" in body


async def test_new_purchase_is_an_event_and_resolves_the_credits(
    make_fleet: MakeFleet, mifumo: MifumoSimulator, webhook: WebhookReceiver
) -> None:
    """A bundle bought after the first check is news; the credits recover."""
    mifumo.account.balance = 300
    h = await make_fleet(RULES)
    await h.check()
    webhook.received.clear()

    mifumo.account.balance = 1300
    mifumo.account.record("buy1", "purchase", 50.00, stamp(0.5), "Starter Package - 1000 SMS")
    h.clock.advance(hours=1)
    await h.check()

    assert sorted(webhook.alert_titles) == [
        "[INFO] sms / sms-bundles: new purchase of $50.00 (Starter Package - 1000 SMS)",
        "[RESOLVED] sms / sms-credits-low: SMS credit balance 1,300 credits is back above "
        "500 credits",
    ]


@pytest.mark.parametrize(("newest_first", "pages"), [(True, [1]), (False, [1, 3])])
async def test_a_long_history_is_read_only_as_far_as_the_window(
    make_fleet: MakeFleet, mifumo: MifumoSimulator, newest_first: bool, pages: list[int]
) -> None:
    """Whichever order the pages come in, reading stops at the page that reaches past
    what the rules need rather than walking the whole history each check."""
    mifumo.newest_first = newest_first
    for i in range(300):  # one an hour, back 300 hours
        mifumo.account.record(f"u{i}", "usage", -0.10, stamp(-i))
    h = await make_fleet(RULES)

    reports = await h.check()

    assert pages_read(mifumo) == pages
    assert reports["sms"].spend["sms-spend"].cents == 250  # 25 items in [now-24h, now]
    mifumo.account.record("new", "usage", -1.00, stamp(0.5))
    h.clock.advance(hours=1)
    assert (await h.check())["sms"].spend["sms-spend"].cents == 340  # 24 old + the new


async def test_pagination_that_ends_early_fails_the_check_and_keeps_the_cursor(
    make_fleet: MakeFleet, mifumo: MifumoSimulator, webhook: WebhookReceiver
) -> None:
    """A list shorter than its own count is a failed read, retried next check; nothing
    it did show is counted twice."""
    mifumo.account.record("u1", "usage", -5.00, stamp(-1))
    short = {"count": 40, "next": None, "previous": None, "results": []}
    mifumo.faults_at[2] = Fault.json_body(short)  # request 1: balance; 2: history page 1
    h = await make_fleet(RULES)

    failed = (await h.check())["sms"]

    assert failed.ledger_error is not None
    assert "pagination ended early: the API counts 40 items, its pages held 0" in str(
        failed.ledger_error
    )
    h.clock.advance(minutes=1)
    again = (await h.check())["sms"]
    assert again.errors == []
    assert again.spend["sms-spend"].cents == 500


async def test_amount_below_a_cent_is_a_bad_response_naming_the_field(
    make_fleet: MakeFleet, mifumo: MifumoSimulator
) -> None:
    """dialwatch never rounds money: an amount it cannot hold exactly fails the read."""
    mifumo.account.record("u1", "usage", -0.125, stamp(-1))
    h = await make_fleet(RULES)

    report = (await h.check())["sms"]

    assert report.ledger_error is not None
    assert report.ledger_error.reason == "bad_response"
    assert "results.0: Value error, -0.125 USD has a fraction of the smallest unit" in str(
        report.ledger_error
    )


async def test_rejected_key_raises_the_auth_alert_with_mifumos_reason(
    make_fleet: MakeFleet, mifumo: MifumoSimulator, webhook: WebhookReceiver
) -> None:
    """A 401 from Mifumo names the account and quotes Mifumo's `detail`."""
    mifumo.account.api_key = "rotated"
    h = await make_fleet(RULES)

    report = (await h.check())["sms"]

    assert report.error is not None
    assert report.error.reason == "auth"
    assert "Invalid API key." in str(report.error)
    assert webhook.alert_titles == [
        "[CRITICAL] sms / dialwatch-api-auth: the billing API rejected dialwatch's API key "
        "for sms; no rule can be checked until it is replaced"
    ]
    assert MIFUMO_KEY not in str(webhook.received)


@pytest.mark.parametrize(
    ("params", "status", "count"),
    [
        ({"page": "1", "page_size": "500"}, 200, 100),  # capped at the documented 100
        ({"page": "9"}, 404, None),  # past the end: Django's "Invalid page."
        ({"type": "purchase"}, 200, 1),
    ],
)
async def test_simulator_serves_the_documented_history(
    mifumo: MifumoSimulator, params: dict[str, str], status: int, count: int | None
) -> None:
    """The local server pages, filters and refuses as the documentation says."""
    for i in range(150):
        mifumo.account.record(f"u{i}", "usage", -0.05, stamp(-i))
    mifumo.account.record("p1", "purchase", 20.00, stamp(1))
    got, body = await get_json(
        f"{mifumo.base_url}/api/billing/history/", {"X-API-Key": MIFUMO_KEY}, params
    )
    assert got == status
    if count is not None:
        assert len(body["results"]) == count
        assert body["count"] == (1 if "type" in params else 151)


async def test_pages_out_of_order_are_read_whole(
    make_fleet: MakeFleet, mifumo: MifumoSimulator
) -> None:
    """If the last page is not in the order page 1 showed, nothing is assumed: every
    page is read in turn."""
    for i in range(250):
        mifumo.account.record(f"u{i:03d}", "usage", -0.10, stamp(-i))
    shuffled = sorted(mifumo.account.records, key=lambda r: str(r["id"]))[:50]
    mifumo.faults_at[3] = Fault.json_body(  # 1: balance, 2: page 1, 3: the last page
        {"count": 250, "next": None, "previous": None, "results": shuffled}
    )
    h = await make_fleet(RULES)

    report = (await h.check())["sms"]

    assert pages_read(mifumo) == [1, 3, 2, 3]
    assert report.spend["sms-spend"].cents == 250


async def test_a_backlog_larger_than_one_sql_statement_holds_is_stored_in_batches(
    make_fleet: MakeFleet, mifumo: MifumoSimulator, webhook: WebhookReceiver
) -> None:
    """40,000 history records in the window (more than SQLite's 32,766 variables in one
    statement): the check stores them all, in bounded batches, and sums them exactly."""
    for i in range(40_000):
        mifumo.account.record(f"u{i}", "usage", -0.01, stamp(-20 + i * 0.0004))
    h = await make_fleet(RULES)

    reports = await h.check()

    assert reports["sms"].errors == []
    assert reports["sms"].ledger is not None
    assert reports["sms"].ledger.new_items == 40_000
    assert "[WARNING] sms / sms-spend: spend $400.00 in the last 24h is above $20.00" in (
        webhook.alert_titles
    )
