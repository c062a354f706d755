"""Quiet hours: which instants an interval covers, and what the service does in them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from dialwatch.alerting.quiet_hours import quiet_until
from dialwatch.alerting.routing import targets_for
from dialwatch.pipeline.cycle import run_cycle
from dialwatch.rules.time_intervals import TimeInterval
from tests.conftest import RULES, MakeHarness
from tests.servers import WebhookReceiver
from tests.test_service import check_and_deliver

NIGHTS = TimeInterval.model_validate(
    {"weekdays": ["monday-friday"], "times": [{"start": "22:00", "end": "07:00"}],
     "timezone": "Europe/Berlin"}
)  # fmt: skip


@pytest.mark.parametrize(
    ("utc", "inside"),
    [
        ("2026-11-20T21:30", True),  # Friday 22:30 in Berlin
        ("2026-11-21T00:30", True),  # Saturday 01:30: Friday's night, which crossed midnight
        ("2026-11-21T06:30", False),  # Saturday 07:30: over
        ("2026-11-21T21:30", False),  # Saturday 22:30: weekends are not listed
        ("2026-11-23T05:59", False),  # Monday 06:59: that night began on Sunday, not listed
    ],
    ids=["friday-evening", "after-midnight", "morning-after", "saturday-night", "monday-dawn"],
)
def test_interval_crossing_midnight_belongs_to_the_day_it_starts(utc: str, inside: bool) -> None:
    """22:00-07:00 on weekdays covers the small hours after each of those evenings."""
    assert NIGHTS.contains(datetime.fromisoformat(utc).replace(tzinfo=UTC)) is inside


def test_days_of_month_and_end_of_quiet_hours() -> None:
    """A day-of-month interval covers that whole day; quiet_until finds the first free minute."""
    first = TimeInterval.model_validate({"days_of_month": [1]})
    assert first.contains(datetime(2026, 12, 1, 13, tzinfo=UTC))
    assert not first.contains(datetime(2026, 12, 2, 0, tzinfo=UTC))
    assert quiet_until((NIGHTS,), datetime(2026, 11, 20, 23, tzinfo=UTC)) == datetime(
        2026, 11, 21, 6, 0, tzinfo=UTC
    )
    assert quiet_until((NIGHTS,), datetime(2026, 11, 21, 12, tzinfo=UTC)) is None


QUIET = (
    RULES.replace(
        "rules:\n",
        "time_intervals:\n  nights:\n    - times: [{{start: '22:00', end: '07:00'}}]\nrules:\n",
    )
    .replace(
        "  - name: wallet-critical\n    kind: balance_below\n",
        "  - name: wallet-critical\n    kind: balance_below\n    mute_during: [nights]\n",
    )
    .replace(
        "    severity: warning\n    notify: [oncall, finance]\n",
        "    severity: warning\n    notify: [oncall, finance]\n    mute_during: [nights]\n",
    )
)


@pytest.fixture
async def night(make_harness: MakeHarness) -> Any:
    h = await make_harness(QUIET)
    h.clock.current = datetime(2026, 11, 21, 23, 0, tzinfo=UTC)
    return h


async def test_alert_in_quiet_hours_waits_and_goes_out_when_they_end(
    night: Any, webhook: WebhookReceiver
) -> None:
    """wallet-low at 23:00 under nights: nothing until 07:00, then it arrives, once."""
    night.dial.account.balance_cents = 4000
    await check_and_deliver(night)
    assert webhook.received == []

    night.clock.current = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    await check_and_deliver(night)
    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $40.00 is below $50.00"]


async def test_alert_that_clears_in_quiet_hours_is_dropped(
    night: Any, webhook: WebhookReceiver, log_lines: Any
) -> None:
    """Fired at 23:00 and cleared at 02:00: at 07:00 neither message is sent."""
    night.dial.account.balance_cents = 4000
    await check_and_deliver(night)
    night.dial.account.balance_cents = 9000
    night.clock.current = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    await check_and_deliver(night)
    night.clock.current = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    await check_and_deliver(night)

    assert webhook.received == []
    dropped = [line for line in log_lines() if line["event"] == "notify.dropped"]
    assert {line["channel"] for line in dropped} == {"oncall", "finance"}


async def test_critical_breaks_through_quiet_hours(night: Any, webhook: WebhookReceiver) -> None:
    """wallet-critical mutes during nights too, but critical is sent at once."""
    night.dial.account.balance_cents = 500
    report = await run_cycle(night.watcher)
    await check_and_deliver(night)
    assert report.error is None
    assert webhook.titles == [
        "[CRITICAL] dial / wallet-critical: wallet balance $5.00 is below $10.00"
    ]


def test_route_quiet_hours_apply_to_the_channels_it_chose(tmp_path: Any) -> None:
    """A route's mute_during holds back its own channels only, and never critical alerts."""
    from dialwatch.rules.loading import load_rules

    path = tmp_path / "rules.yaml"
    path.write_text(
        "channels: {a: 'json://127.0.0.1:9/a', b: 'json://127.0.0.1:9/b'}\n"
        "time_intervals: {nights: [{times: [{start: '22:00', end: '07:00'}]}]}\n"
        "routes:\n  - {notify: [a], mute_during: [nights], continue: true}\n  - {notify: [b]}\n"
        "rules:\n  - {name: low, kind: balance_below, threshold: '$5'}\n"
    )
    rules = load_rules(path, env={})
    warning = targets_for(rules, "low", "balance_below", "warning", "dial", "dial", rules.rules[0])
    critical = targets_for(
        rules, "low", "balance_below", "critical", "dial", "dial", rules.rules[0]
    )
    assert [(t.channel, len(t.quiet)) for t in warning] == [("a", 1), ("b", 0)]
    assert [(t.channel, len(t.quiet)) for t in critical] == [("a", 0), ("b", 0)]


async def test_events_held_by_quiet_hours_are_delivered_when_they_end(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """An expensive call at 23:00 on a muted item rule arrives at 07:00: events stay news."""
    from tests.ledger_items import at, usage
    from tests.test_ledger import RULES as LEDGER_RULES

    text = LEDGER_RULES.replace(
        "rules:\n",
        "time_intervals:\n  nights:\n    - times: [{{start: '22:00', end: '07:00'}}]\nrules:\n",
    ).replace('    min_amount: "$5.00"\n', '    min_amount: "$5.00"\n    mute_during: [nights]\n')
    h = await make_harness(text)
    h.dial.account.balance_cents = 1_000_000
    h.clock.current = datetime(2026, 11, 21, 22, 30, tzinfo=UTC)
    await check_and_deliver(h)  # first start
    h.dial.ledger.add(usage(at(0, base=datetime(2026, 11, 21, 23, 0, tzinfo=UTC)), 900, call="x"))
    h.clock.current = datetime(2026, 11, 21, 23, 5, tzinfo=UTC)
    await check_and_deliver(h)
    assert webhook.received == []

    h.clock.current = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    await check_and_deliver(h)
    assert webhook.alert_titles == [
        "[WARNING] dial / expensive-call: 1 spend item(s) at or above $5.00 (total $9.00)"
    ]


async def test_a_part_that_clears_in_quiet_hours_is_dropped_from_its_group_and_logged(
    make_harness: MakeHarness, webhook: WebhookReceiver, log_lines: Any
) -> None:
    """Two alerts held in one message; one fires and clears in the night: at 07:00 the
    message carries only the other, and each dropped part (the firing and its
    resolution) is logged as notify.dropped."""
    critical = "  - name: wallet-critical\n    kind: balance_below\n    mute_during: [nights]\n"
    h = await make_harness(QUIET.replace(critical, critical + "    mute_critical: true\n"))

    h.clock.current = datetime(2026, 11, 21, 23, 0, tzinfo=UTC)
    h.dial.account.balance_cents = 900
    await check_and_deliver(h)
    h.dial.account.balance_cents = 4500
    h.clock.current = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    await check_and_deliver(h)
    h.clock.current = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    await check_and_deliver(h)

    assert webhook.titles == ["[WARNING] dial / wallet-low: wallet balance $9.00 is below $50.00"]
    dropped = [
        (e["channel"], e["alert"], e["decision"])
        for e in log_lines()
        if e["event"] == "notify.dropped"
    ]
    assert dropped == [
        ("oncall", "dial/wallet-critical", "first"),
        ("oncall", "dial/wallet-critical", "resolved"),
    ]


async def test_resolution_held_for_a_firing_nobody_was_told_of_is_dropped(
    night: Any, webhook: WebhookReceiver
) -> None:
    """Fired and resolved in the afternoon (both sent), fired again at 23:00 and cleared at
    02:00 (both held): at 07:00 nothing goes out. The channel was told of the afternoon's
    firing, not of the night's, so the night's resolution is no news to it."""
    night.clock.current = datetime(2026, 11, 21, 15, 0, tzinfo=UTC)
    night.dial.account.balance_cents = 4000
    await check_and_deliver(night)
    night.clock.current = datetime(2026, 11, 21, 16, 0, tzinfo=UTC)
    night.dial.account.balance_cents = 9000
    await check_and_deliver(night)
    afternoon = list(webhook.titles)
    assert [t.split(":")[0] for t in afternoon] == [
        "[WARNING] dial / wallet-low",
        "[RESOLVED] dial / wallet-low",
    ]

    night.clock.current = datetime(2026, 11, 21, 23, 0, tzinfo=UTC)
    night.dial.account.balance_cents = 4000
    await check_and_deliver(night)
    night.clock.current = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    night.dial.account.balance_cents = 9000
    await check_and_deliver(night)
    night.clock.current = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    await check_and_deliver(night)
    assert webhook.titles == afternoon


async def test_resolution_held_for_an_announced_firing_goes_out(
    night: Any, webhook: WebhookReceiver
) -> None:
    """Fired at 21:00 (sent, before the night), cleared at 02:00 (held): the channel was
    told it fired, so at 07:00 it learns it ended."""
    night.clock.current = datetime(2026, 11, 21, 21, 0, tzinfo=UTC)
    night.dial.account.balance_cents = 4000
    await check_and_deliver(night)
    night.clock.current = datetime(2026, 11, 22, 2, 0, tzinfo=UTC)
    night.dial.account.balance_cents = 9000
    await check_and_deliver(night)
    assert len(webhook.titles) == 1
    night.clock.current = datetime(2026, 11, 22, 7, 0, tzinfo=UTC)
    await check_and_deliver(night)
    assert [t.split(":")[0] for t in webhook.titles] == [
        "[WARNING] dial / wallet-low",
        "[RESOLVED] dial / wallet-low",
    ]
