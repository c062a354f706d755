"""Reading Dial's activity ledger exactly, and the spend rules over it."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dialwatch.alerting.lifecycle import Decision
from dialwatch.delivery.outbox import deliver_due
from dialwatch.model import ActivityStats
from dialwatch.pipeline.cycle import CycleReport, run_checks, run_cycle
from dialwatch.rules.loading import load_rules
from dialwatch.simulators import Fault
from dialwatch.units import Money
from tests.conftest import START, Harness, MakeHarness
from tests.ledger_items import at, credit, payment, usage
from tests.servers import SmtpServer, WebhookReceiver

RULES = """
channels:
  oncall: "{webhook}"
defaults:
  notify: [oncall]
rules:
  - name: daily-spend
    kind: spend_above
    window: 24h
    amount: "$100.00"
  - name: expensive-call
    kind: usage_item
    min_amount: "$5.00"
  - name: money-in
    kind: ledger_event
    types: [credit, payment]
  - name: runway
    kind: runway_below
    runway: 3d
"""


@pytest.fixture
async def h(make_harness: MakeHarness) -> Harness:
    harness = await make_harness(RULES)
    harness.dial.account.balance_cents = 1_000_000  # runway stays quiet unless a test lowers it
    return harness


async def check(h: Harness) -> CycleReport:
    report = await run_cycle(h.watcher)
    await deliver_due(h.watcher.store, h.watcher.notifier, h.clock.now())
    return report


def finding(report: CycleReport, rule: str) -> str:
    return next(o.finding.summary for o in report.outcomes if o.spec.name == rule)


async def start_empty(h: Harness) -> None:
    """A first check on an empty ledger: from here on, items are new."""
    await check(h)
    h.clock.advance(hours=2)


async def test_tie_group_straddling_a_page_boundary_is_counted_exactly(h: Harness) -> None:
    """50 identical items at one instant, cut by the page boundary, all count once."""
    h.dial.ledger.extend([usage(at(-i), 100, call=f"c{i}") for i in range(1, 81)])
    h.dial.ledger.extend([usage(at(-100), 7) for _ in range(50)])  # identical rows
    h.dial.ledger.extend([usage(at(-200 - i), 100, call=f"o{i}") for i in range(30)])

    report = await check(h)

    assert finding(report, "daily-spend") == "spend $113.50 in the last 24h is above $100.00"
    assert (await h.watcher.store.spend("dial", START - timedelta(hours=24), "USD")).count == 160


async def test_tie_group_larger_than_a_page_is_read_whole(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """130 items at one instant (90 usage, 40 credits): every one is read, once."""
    await start_empty(h)
    h.dial.ledger.extend([usage(at(50 - i), 100, call=f"n{i}") for i in range(10)])
    h.dial.ledger.extend([usage(at(30), 3) for _ in range(90)])
    h.dial.ledger.extend([credit(at(30), 100, invoice=None) for _ in range(40)])
    h.dial.ledger.extend([usage(at(10 - i), 100, call=f"o{i}") for i in range(10)])

    report = await check(h)

    assert finding(report, "daily-spend") == "spend $22.70 in the last 24h is within $100.00"
    assert report.ledger is not None
    assert report.ledger.new_items == 150
    assert report.ledger.stats.truncated == []
    assert webhook.titles == [
        "[INFO] dial / money-in: 40 new ledger items: credit, payment (total $40.00)"
    ]


async def test_tie_group_beyond_what_the_api_can_page_is_reported(
    h: Harness, log_lines: Any
) -> None:
    """120 usage items at one instant: the API can return 100; the gap is logged loudly."""
    await start_empty(h)
    h.dial.ledger.extend([usage(at(30), 1) for _ in range(120)])

    report = await check(h)

    assert report.ledger is not None
    assert report.ledger.stats.truncated == [at(30)]
    errors = [line for line in log_lines() if line["event"] == "ledger.tie_group_truncated"]
    assert errors[0]["read"] == 100
    assert errors[0]["occurred_at"] == at(30)


async def test_late_rows_are_counted_once(h: Harness, webhook: WebhookReceiver) -> None:
    """A row written late, a little in the past, is picked up by the overlap, once."""
    await start_empty(h)
    h.dial.ledger.add(usage(at(115), 600, call="on-time"))
    await check(h)
    h.dial.ledger.add(usage(at(112), 700, call="late"))  # older than what was read
    h.clock.advance(minutes=1)
    report = await check(h)
    h.clock.advance(minutes=1)
    again = await check(h)

    assert finding(report, "daily-spend") == "spend $13.00 in the last 24h is within $100.00"
    assert finding(again, "daily-spend") == "spend $13.00 in the last 24h is within $100.00"
    assert [t.split(": ", 1)[1] for t in webhook.titles] == [
        "1 spend item(s) at or above $5.00 (total $6.00)",
        "1 spend item(s) at or above $5.00 (total $7.00)",
    ]


async def test_first_start_backfills_windows_without_per_item_alerts(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """History fills the 24h window (spend fires) but sends no per-item alerts."""
    h.dial.ledger.extend([usage(at(-120 - i), 2000, call=f"h{i}") for i in range(6)])
    h.dial.ledger.add(credit(at(-300), 5000))
    h.dial.ledger.add(usage(at(-60 * 30), 9900, call="older-than-window"))

    report = await check(h)

    assert report.ledger is not None
    assert report.ledger.backfilled
    assert webhook.titles == [
        "[WARNING] dial / daily-spend: spend $120.00 in the last 24h is above $100.00"
    ]
    assert "Top numbers: +14155550123 $120.00" in webhook.received[0]["message"]

    h.dial.ledger.add(usage(at(1), 1250, fare="voice.international", call="new"))
    h.clock.advance(minutes=2)
    await check(h)
    assert webhook.titles[1] == (
        "[WARNING] dial / expensive-call: 1 spend item(s) at or above $5.00 (total $12.50)"
    )
    assert "$12.50 voice.international on +14155550123" in webhook.received[1]["message"]


async def test_many_matching_items_in_one_check_are_one_message(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """25 expensive calls in one check: one message, ten listed, the rest counted."""
    await start_empty(h)
    h.dial.ledger.extend([usage(at(i), 500 + i, call=f"x{i}") for i in range(25)])

    await check(h)

    expensive = [t for t in webhook.alert_titles if "expensive-call" in t]
    assert expensive == [
        "[WARNING] dial / expensive-call: 25 spend item(s) at or above $5.00 (total $128.00)"
    ]
    assert len(webhook.received) == 1  # with the spend alert of the same check, one message
    assert webhook.received[0]["message"].count("voice.outbound.minute on") == 10
    assert "... and 15 more" in webhook.received[0]["message"]


async def test_spend_fires_with_top_contributors_and_resolves_as_the_window_moves(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """Rolling spend above $100 fires once, naming numbers and fares; it clears 24h later."""
    await start_empty(h)
    h.dial.ledger.extend(
        [usage(at(i), 3000, number="+15550001", fare="voice.outbound", call=f"a{i}")
         for i in range(3)]
        + [usage(at(5), 2500, number="+15550002", fare="sms.tier_1", call="b")]
    )  # fmt: skip
    await check(h)
    assert "[WARNING] dial / daily-spend: spend $115.00 in the last 24h is above $100.00" in (
        webhook.alert_titles
    )
    message = webhook.received[0]["message"]
    assert "Top numbers: +15550001 $90.00, +15550002 $25.00" in message
    assert "Top items: voice.outbound $90.00, sms.tier_1 $25.00" in message

    h.clock.advance(hours=24)
    await check(h)
    assert webhook.titles[-1] == (
        "[RESOLVED] dial / daily-spend: spend $0.00 in the last 24h is within $100.00"
    )


async def test_calendar_period_spend_follows_the_rules_timezone(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """`period: day` in New York counts from local midnight and resolves at the next one."""
    h = await make_harness(
        RULES.replace("window: 24h", "period: day\n    timezone: America/New_York")
        .replace('amount: "$100.00"', 'amount: "$10.00"\n    match:\n      fare: "sms.*"')
    )  # fmt: skip
    h.dial.account.balance_cents = 1_000_000
    # START is 07:00 in New York: the local day began at 05:00 UTC.
    h.dial.ledger.add(usage(at(-8 * 60), 5000, fare="sms.tier_1", call="yesterday"))
    h.dial.ledger.add(usage(at(-60), 900, fare="sms.tier_1", call="today-1"))
    h.dial.ledger.add(usage(at(-30), 9900, fare="voice.outbound", call="not-sms"))
    await check(h)
    h.dial.ledger.add(usage(at(1), 200, fare="sms.tier_2", call="today-2"))
    h.clock.advance(minutes=5)
    await check(h)

    spend = [m for m in webhook.received if "daily-spend" in m["title"]]
    assert spend[0]["title"] == (
        "[WARNING] dial / daily-spend: spend $11.00 this day "
        "(since 2026-11-21 00:00 America/New_York) is above $10.00"
    )
    assert "Counting: fare sms.*" in spend[0]["message"]

    h.clock.advance(hours=17)  # past local midnight
    await check(h)
    assert webhook.titles[-1].startswith("[RESOLVED] dial / daily-spend: spend $0.00 this day")


async def test_credits_and_payments_are_announced_with_their_details(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """A top-up and a subscription payment arrive: one message lists both."""
    await start_empty(h)
    h.dial.ledger.add(credit(at(10), 5000, kind="card", invoice="in_1QabcdEFghij"))
    await check(h)
    h.dial.ledger.add(payment(at(20), 1200, reason="subscription_cycle"))
    h.dial.ledger.add(credit(at(21), 1000, kind="manual", invoice=None))
    h.clock.advance(minutes=5)
    await check(h)

    assert webhook.titles[0] == (
        "[INFO] dial / money-in: new credit of $50.00 (card), invoice in_1QabcdEFghij"
    )
    assert webhook.titles[1] == (
        "[INFO] dial / money-in: 2 new ledger items: credit, payment (total $22.00)"
    )
    assert "payment of $12.00 (subscription_cycle), invoice in_9" in webhook.received[1]["message"]
    assert "credit of $10.00 (manual)" in webhook.received[1]["message"]


async def test_runway_fires_with_time_to_empty_and_burn_rate(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """$235.00 at $100.00/day lasts about 2d8h: within a 3d runway, so it fires."""
    h.dial.account.balance_cents = 23500
    h.dial.ledger.extend([usage(at(-60 * i), 2500, call=f"r{i}") for i in range(1, 5)])
    report = await check(h)

    assert finding(report, "runway") == (
        "at $100.00/day the wallet ($235.00) empties in about 2d8h24m, within 3d"
    )
    runway = [m for m in webhook.received if "runway" in m["title"]]
    assert "Burn rate: $100.00/day (spend $100.00 in the last 24h)" in runway[0]["message"]


async def test_runway_resolves_after_a_top_up(h: Harness, webhook: WebhookReceiver) -> None:
    """The same burn with a topped-up wallet is beyond the runway: one resolved notice."""
    h.dial.account.balance_cents = 23500
    h.dial.ledger.extend([usage(at(-60 * i), 2500, call=f"r{i}") for i in range(1, 5)])
    await check(h)
    h.dial.account.balance_cents = 53500
    h.clock.advance(minutes=5)
    await check(h)

    runway = [t for t in webhook.titles if "runway" in t]
    assert runway[-1] == (
        "[RESOLVED] dial / runway: at $100.00/day the wallet ($535.00) empties in about "
        "5d8h24m, beyond 3d"
    )
    assert len(runway) == 2


async def test_zero_burn_never_fires_runway(h: Harness) -> None:
    """With no spend in the lookback, even a tiny balance has no runway alert."""
    h.dial.account.balance_cents = 1
    report = await check(h)
    runway = next(o for o in report.outcomes if o.spec.name == "runway")
    assert runway.decision is Decision.NONE
    assert runway.finding.summary == "no spend in the last 24h: no burn"


async def test_restart_mid_backlog_neither_skips_nor_double_counts(
    h: Harness, make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """A check that dies on page 15 of a backlog keeps the old cursor; after a restart
    (a new watcher on the same state file) the next check counts everything once."""
    await start_empty(h)
    h.dial.ledger.extend(
        [usage(at(i * 0.02), 600 if i % 2 else 100, call=f"b{i}") for i in range(2500)]
    )
    first_page = len(h.dial.requests) + 2  # after the billing request
    for attempt in range(4):  # every retry of page 15 fails
        h.dial.faults_at[first_page + 14 + attempt] = Fault.server_error()

    failed = await check(h)
    assert failed.ledger_error is not None
    assert webhook.received == []
    stored = (await h.watcher.store.spend("dial", START, "USD")).count
    assert 0 < stored < 2500  # the backlog was part-way in

    restarted = await make_harness(RULES)
    restarted.dial.account.balance_cents = 1_000_000
    restarted.clock.current = h.clock.now() + timedelta(minutes=1)
    report = await check(restarted)
    assert report.ledger is not None
    assert report.ledger.new_items == 2500 - stored
    assert finding(report, "daily-spend") == "spend $8,750.00 in the last 24h is above $100.00"
    expensive = [t for t in webhook.alert_titles if "expensive-call" in t]
    assert expensive == [
        "[WARNING] dial / expensive-call: 1250 spend item(s) at or above $5.00 (total $7,500.00)"
    ]


async def test_empty_page_that_says_more_follow_fails_the_read(h: Harness) -> None:
    """hasMore with no data cannot be paged on: a failed read, retried next check,
    never a quiet end of the ledger."""
    await start_empty(h)
    h.dial.ledger.extend([usage(at(-5), 700, call="c1")])
    empty = Fault.json_body({"data": [], "hasMore": True})
    h.dial.faults_at[len(h.dial.requests) + 2] = empty  # the first activity page

    failed = await check(h)

    assert failed.ledger_error is not None
    assert "pagination ended early: an empty page says more follow" in str(failed.ledger_error)
    h.clock.advance(minutes=1)
    assert (await check(h)).ledger_error is None


async def test_an_idle_check_costs_two_requests(h: Harness) -> None:
    """With nothing new, a check reads billing and one activity page."""
    h.dial.ledger.extend([usage(at(-i), 100, call=f"i{i}") for i in range(1, 300)])
    await check(h)
    before = len(h.dial.requests)
    h.clock.advance(minutes=1)
    await check(h)
    assert h.dial.requests[before:] == [
        "/api/v1/billing",
        "/api/v1/billing/activity?limit=100&filter=all",
    ]


async def test_an_idle_check_writes_nothing_and_stores_no_batch(
    h: Harness, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A check that changes nothing writes nothing (the state file's data version stays)
    and does not store the overlap it read again; a new quarter hour of balance history
    and a changed balance are still written."""
    h.dial.ledger.extend([usage(at(-i), 100, call=f"i{i}") for i in range(1, 30)])
    await check(h)  # the first: backfills, prunes, sweeps
    h.clock.advance(seconds=30)
    await check(h)  # reads just the overlap, as every check from now on does
    store = h.watcher.store
    batches: list[int] = []
    add_items = store.add_ledger_items

    async def counted(account: str, items: list[Any], *args: Any) -> int:
        batches.append(len(items))
        return await add_items(account, items, *args)

    monkeypatch.setattr(store, "add_ledger_items", counted)
    with contextlib.closing(sqlite3.connect(tmp_path / "state.db")) as db:

        def version() -> int:
            return int(db.execute("PRAGMA data_version").fetchone()[0])

        before = version()
        h.clock.advance(minutes=1)
        await check(h)
        h.clock.advance(minutes=1)
        await check(h)
        assert (version(), batches) == (before, [])

        h.clock.advance(minutes=14)  # the next quarter hour: a point of balance history
        await check(h)
        h.dial.account.balance_cents = 900_000
        h.clock.advance(minutes=1)
        await check(h)
        assert version() != before
    history = await store.balance_history("dial", START - timedelta(hours=1))
    assert [(t - START, m.cents) for t, m in history] == [
        (timedelta(0), 1_000_000),
        (timedelta(minutes=15), 900_000),
    ]
    assert await store.last_balance("dial") == Money(900_000, "USD")
    assert batches == []  # the same overlap all along


async def test_items_matched_by_a_check_that_died_before_its_commit_are_told_next(
    h: Harness, webhook: WebhookReceiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Items are stored (with the rules they match) before the check commits: if it dies
    in between, the next check still tells them, once."""
    await start_empty(h)
    h.dial.ledger.add(usage(at(115), 900, call="big"))

    async def dies(*args: Any, **kwargs: Any) -> None:
        raise OSError("the disk went away")

    monkeypatch.setattr(h.watcher.store, "commit_check", dies)
    with pytest.raises(OSError, match="the disk went away"):
        await run_cycle(h.watcher)
    monkeypatch.undo()
    h.clock.advance(minutes=1)
    await check(h)
    h.clock.advance(minutes=1)
    await check(h)
    assert [t.split(": ", 1)[1] for t in webhook.titles] == [
        "1 spend item(s) at or above $5.00 (total $9.00)"
    ]


async def test_dry_run_reads_the_ledger_but_keeps_nothing(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """A dry run reports the spend alert, then a real check still backfills and sends it."""
    h.dial.ledger.extend([usage(at(-i), 6000, call=f"d{i}") for i in range(1, 3)])
    (dry,) = await run_checks([h.watcher], dry_run=True)
    assert [ch for ch, _ in dry.notifications] == ["oncall"]
    assert await h.watcher.store.ledger_cursor("dial") is None
    assert (await h.watcher.store.spend("dial", START - timedelta(days=1), "USD")).count == 0

    await check(h)
    assert webhook.titles == [
        "[WARNING] dial / daily-spend: spend $120.00 in the last 24h is above $100.00"
    ]


async def test_silenced_item_rule_lets_its_events_go(h: Harness, webhook: WebhookReceiver) -> None:
    """Expensive calls during a silence are not announced, then or later."""
    await start_empty(h)
    now = h.clock.now()
    await h.watcher.store.add_silence(
        "expensive-call", None, now + timedelta(hours=1), "load test", now
    )
    h.dial.ledger.add(usage(at(121), 900, call="during"))
    await check(h)
    h.clock.advance(hours=2)
    h.dial.ledger.add(usage(at(241), 800, call="after"))
    await check(h)
    assert [t for t in webhook.alert_titles if "expensive-call" in t] == [
        "[WARNING] dial / expensive-call: 1 spend item(s) at or above $5.00 (total $8.00)"
    ]


async def test_a_future_dated_item_does_not_hide_the_items_after_it(
    h: Harness, webhook: WebhookReceiver, log_lines: Callable[[], list[dict[str, Any]]]
) -> None:
    """A payment dated two hours ahead is stored and logged, but the cursor stops at the
    check's time: the calls that come in the next minutes are still read and alerted."""
    await start_empty(h)
    now = h.clock.now()
    h.dial.ledger.extend([payment(at(120, now), 2000)])
    await check(h)
    assert [e["occurred_at"] for e in log_lines() if e["event"] == "ledger.future_item"] == [
        (now + timedelta(hours=2)).isoformat()
    ]
    h.clock.advance(minutes=10)
    h.dial.ledger.extend([usage(at(5 + i * 0.5, now), 900, call=f"c{i}") for i in range(5)])
    report = await check(h)
    assert finding(report, "daily-spend") == "spend $45.00 in the last 24h is within $100.00"
    assert "[WARNING] dial / expensive-call: 5 spend item(s) at or above $5.00 (total $45.00)" in (
        webhook.titles
    )


WEEKLY = """
channels:
  oncall: "{webhook}"
defaults:
  notify: [oncall]
rules:
  - name: daily-spend
    kind: spend_above
    window: 24h
    amount: "$100.00"
  - name: expensive-call
    kind: usage_item
    min_amount: "$5.00"
"""


async def test_a_window_added_later_reads_the_history_it_needs(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """A `window: 7d` rule added to a running service (a reload) sees the five days of
    spend before it, not $0.00; the history read for it raises no per-item alerts,
    while a new item still does."""
    h = await make_harness(WEEKLY)
    h.dial.account.balance_cents = 1_000_000
    h.dial.ledger.extend([usage(at(-60 * 24 * d), 3000, call=f"d{d}") for d in range(2, 7)])
    await check(h)
    assert webhook.titles == []

    weekly = (
        WEEKLY
        + '  - name: weekly-spend\n    kind: spend_above\n    window: 7d\n    amount: "$100.00"\n'
    )
    h.rules_path.write_text(weekly.format(webhook=webhook.url))
    h.watcher.rules = load_rules(h.rules_path)
    h.dial.ledger.add(usage(at(1), 1200, call="new"))
    h.clock.advance(minutes=2)
    report = await check(h)

    assert finding(report, "weekly-spend") == "spend $162.00 in the last 7d is above $100.00"
    assert sorted(webhook.alert_titles) == [
        "[WARNING] dial / expensive-call: 1 spend item(s) at or above $5.00 (total $12.00)",
        "[WARNING] dial / weekly-spend: spend $162.00 in the last 7d is above $100.00",
    ]

    h.clock.advance(minutes=2)
    again = await check(h)
    assert again.ledger is not None
    assert again.ledger.stats.requests == 1  # covered now: back to reading what is new


async def test_an_html_channel_gets_provider_text_escaped_and_lines_kept(
    make_harness: MakeHarness, smtp: SmtpServer
) -> None:
    """Markup in a provider's text (a fare name here) reaches a `format: html` email as
    text, never as markup, and the message keeps its lines and paragraphs."""
    text = RULES.replace('  oncall: "{webhook}"', '  oncall: {{url: "{smtp}", format: html}}')
    h = await make_harness(text)
    h.dial.account.balance_cents = 1_000_000
    await start_empty(h)
    evil = '<a href="http://evil.example">x</a><img src=x onerror=alert(1)>'
    h.dial.ledger.add(usage(at(1), 1250, fare=evil, call="new"))
    h.clock.advance(minutes=2)
    await check(h)

    (html,) = smtp.html_bodies()
    assert "<img" not in html
    assert "<a href" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert html.startswith("<p>")
    assert "<br>" in html  # lines kept
    assert html.count("<p>") >= 2  # paragraphs kept


async def test_a_busy_ledger_reads_what_is_new_and_sweeps_the_overlap_for_late_rows(
    h: Harness, webhook: WebhookReceiver
) -> None:
    """A check asks for the pages down to its cursor only; a row written late on a page
    below them is found by the next read of the whole overlap (after each start, then
    once per overlap, 10 minutes), and counted once. A late row on a page read anyway is
    found at once."""
    await start_empty(h)  # now START + 2 h
    busy = [usage(at(115 + i / 100), 10, call=f"b{i}") for i in range(300)]  # 3 pages
    h.dial.ledger.extend(busy)
    await check(h)  # the first check after a start reads the whole overlap
    h.clock.advance(minutes=1)
    h.dial.ledger.add(usage(at(115.5), 600, call="late, on page 3"))
    h.dial.ledger.add(usage(at(117.99), 700, call="late, on page 1"))
    before = len(h.dial.requests)
    report = await check(h)
    assert len(h.dial.requests[before:]) == 2  # billing, and the page down to the cursor
    assert finding(report, "daily-spend") == "spend $37.00 in the last 24h is within $100.00"

    for minutes_since_sweep in range(2, 10):
        h.clock.advance(minutes=1)
        report = await check(h)
        assert "$37.00" in finding(report, "daily-spend"), minutes_since_sweep
    h.clock.advance(minutes=1)
    report = await check(h)  # ten minutes after the last sweep: the overlap read whole
    assert finding(report, "daily-spend") == "spend $43.00 in the last 24h is within $100.00"
    h.clock.advance(minutes=1)
    again = await check(h)
    assert finding(again, "daily-spend") == "spend $43.00 in the last 24h is within $100.00"
    assert [t.split(": ", 1)[1] for t in webhook.titles] == [
        "1 spend item(s) at or above $5.00 (total $7.00)",
        "1 spend item(s) at or above $5.00 (total $6.00)",
    ]


async def test_an_items_identity_is_the_one_earlier_versions_stored(h: Harness) -> None:
    """Dial sends no id, so an item's key is its time and a digest of its documented
    fields (a field the API adds later is left out), and a rank among identical items.
    The keys are pinned: were they to change, every item an upgraded service re-reads in
    its overlap would look new to the stored ledger and count twice."""
    call = usage(at(-0.5), 140, number="+14155550100", call="call_9")
    h.dial.ledger.extend([call, dict(call), credit(at(-60), 5000) | {"addedLater": 1}])
    source = h.watcher.source
    batches = source.read_activity(START - timedelta(hours=2), ActivityStats())
    assert [item.key async for batch in batches for item in batch] == [
        "000660c817d7ac80-da6f79a74a79a69083d1b9de#0",
        "000660c817d7ac80-da6f79a74a79a69083d1b9de#1",
        "000660c7430dcc00-3959d43b3618705efd767480#0",
    ]
