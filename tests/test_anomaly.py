"""spend_anomaly: spend judged against the account's own week, with time and history
passed in (a stepped clock, a generated ledger served by the simulated Dial API)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from dialwatch.alerting.lifecycle import Decision, Status
from dialwatch.pipeline.cycle import CycleReport, run_cycle
from dialwatch.rules.evaluate import Seasonal, evaluate_anomaly, expected
from dialwatch.rules.schema import SpendAnomaly
from dialwatch.simulators.dial import DialSimulator
from dialwatch.units import Money
from tests.conftest import Harness, MakeFleet, MakeHarness
from tests.ledger_items import usage
from tests.servers import WebhookReceiver

RULES = """
channels: {{oncall: "{webhook}"}}
defaults: {{notify: [oncall]}}
rules:
  - name: spend-spike
    kind: spend_anomaly
    window: 1h
  - name: voice-stopped
    kind: spend_anomaly
    window: 1h
    direction: down
    match: {{fare: "voice.*"}}
"""
SUNDAY_NIGHT = datetime(2026, 11, 22, 3, 45, tzinfo=UTC)  # usually $2 an hour
TUESDAY_MORNING = datetime(2026, 11, 24, 10, 45, tzinfo=UTC)  # usually $30 an hour


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def rhythm(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Business hours (Mon-Fri 9-17 UTC): six $5 calls an hour; other hours one $2 call."""
    items, hour = [], start.replace(minute=0, second=0, microsecond=0)
    while hour < end:
        busy = hour.weekday() < 5 and 9 <= hour.hour < 17
        for minute, cents in ((m, 500) for m in range(5, 65, 10)) if busy else ((20, 200),):
            at = hour + timedelta(minutes=minute)
            if at < end:
                items.append(usage(stamp(at), cents, call=f"c{at:%m%d%H%M}"))
        hour += timedelta(hours=1)
    return items


async def checked(
    make_harness: MakeHarness,
    now: datetime,
    history: timedelta,
    extra: list[dict[str, Any]] | None = None,
) -> tuple[Harness, CycleReport]:
    h = await make_harness(RULES)
    h.dial.ledger.extend(rhythm(now - history, now) + (extra or []))
    h.clock.current = now
    return h, await run_cycle(h.watcher)


def outcome(report: CycleReport, rule: str) -> Any:
    return next(o for o in report.outcomes if o.spec.name == rule)


async def test_a_spike_on_a_quiet_hour_fires_though_a_flat_limit_would_miss_it(
    make_harness: MakeHarness,
) -> None:
    """$32 at 03:00 on a Sunday, usually $2: far below any flat limit set for weekdays'
    $30 hours, and named: the new premium number and fare that drove it."""
    spike = [
        usage(stamp(SUNDAY_NIGHT - timedelta(minutes=m)), 300, fare="sms.intl",
              number="+442079460001", call=f"s{m}")
        for m in range(2, 12)
    ]  # fmt: skip
    h, report = await checked(make_harness, SUNDAY_NIGHT, timedelta(weeks=4, hours=2), spike)
    found = outcome(report, "spend-spike")
    assert found.decision is Decision.FIRST
    assert found.finding.summary == ("$32.00 in the last 1h; usually $2.00 on Sundays at 03:45 UTC")
    facts = dict(found.finding.facts)
    assert facts["Impact"] == "+$30.00 (+1,500%) against the usual $2.00"
    assert facts["Increase from"] == (
        "+$30.00 from +442079460001 (number), +$30.00 from +4420… (prefix), "
        "+$30.00 from sms.intl (fare)"
    )
    assert facts["Baseline"] == "the same 1h in the last 4 week(s)"
    assert 3200 < 4000  # a flat hourly limit for the $30 weekday hours would say nothing

    # The next hour is back to the usual: resolved.
    h.clock.current = SUNDAY_NIGHT + timedelta(hours=1)
    h.dial.ledger.extend(rhythm(SUNDAY_NIGHT, h.clock.current))
    again = await run_cycle(h.watcher)
    assert outcome(again, "spend-spike").decision is Decision.RESOLVED


async def test_a_busy_hour_as_busy_as_usual_does_not_fire(make_harness: MakeHarness) -> None:
    """$35 on a Tuesday morning, usually $30: a flat $32 limit would page; this does not."""
    extra = [usage(stamp(TUESDAY_MORNING - timedelta(minutes=1)), 500, call="extra")]
    _, report = await checked(make_harness, TUESDAY_MORNING, timedelta(weeks=4, hours=2), extra)
    found = outcome(report, "spend-spike")
    assert found.state.status is Status.INACTIVE
    assert found.finding.summary.startswith("$35.00 in the last 1h, within the usual")
    assert 3500 > 3200  # the flat limit's false alert


async def test_spend_that_stops_fires_a_down_rule(make_harness: MakeHarness) -> None:
    """No voice spend in a Tuesday morning hour that usually spends $30."""
    h = await make_harness(RULES)
    history = rhythm(TUESDAY_MORNING - timedelta(weeks=4, hours=2), TUESDAY_MORNING)
    quiet = TUESDAY_MORNING - timedelta(hours=1)
    h.dial.ledger.extend([i for i in history if i["occurredAt"] < stamp(quiet)])
    h.clock.current = TUESDAY_MORNING
    report = await run_cycle(h.watcher)
    found = outcome(report, "voice-stopped")
    assert found.decision is Decision.FIRST
    assert found.finding.summary == (
        "no voice.* spend for 1h; usually $30.00 on Tuesdays at 10:45 UTC"
    )


async def test_with_hours_of_history_the_rule_is_learning_and_says_so(
    make_harness: MakeHarness,
) -> None:
    """Six hours of history: learning, said so (check, status page, metrics), never
    silently inactive."""
    h, report = await checked(make_harness, SUNDAY_NIGHT, timedelta(hours=6))
    found = outcome(report, "spend-spike")
    assert found.finding.learning
    assert found.finding.summary.startswith("learning: ")
    assert "spend-spike" in h.watcher.health.learning
    text = (await h.metrics.render(h.watcher.store, [], SUNDAY_NIGHT)).decode()
    assert 'dialwatch_rule_learning{account="dial",rule="spend-spike"} 1.0' in text


async def test_before_a_week_the_same_hour_of_earlier_days_is_the_baseline(
    make_harness: MakeHarness,
) -> None:
    spike = [usage(stamp(SUNDAY_NIGHT - timedelta(minutes=5)), 3000, call="big")]
    _, report = await checked(make_harness, SUNDAY_NIGHT, timedelta(days=3), spike)
    found = outcome(report, "spend-spike")
    assert not found.finding.learning
    assert found.decision is Decision.FIRST
    assert found.finding.summary == "$32.00 in the last 1h; usually $2.00 at 03:45 UTC"
    assert dict(found.finding.facts)["Baseline"] == "the same 1h in the last 3 day(s)"


async def test_a_restart_keeps_the_history_and_reads_only_what_is_new(
    make_harness: MakeHarness,
) -> None:
    """Four weeks are read once; the next check (a restart: a new watcher on the same
    state) reads only the pages since its cursor."""
    h, _ = await checked(make_harness, SUNDAY_NIGHT, timedelta(weeks=4, hours=2))
    first_read = len(h.dial.requests)
    assert first_read > 10  # four weeks, many pages
    again = await make_harness(RULES)
    again.clock.current = SUNDAY_NIGHT + timedelta(minutes=1)
    report = await run_cycle(again.watcher)
    assert len(h.dial.requests) - first_read <= 3  # billing and one page of activity
    assert not outcome(report, "spend-spike").finding.learning


def test_the_expectation_is_robust_to_one_odd_week() -> None:
    """A holiday week that spent nothing moves the median and MAD little."""
    usual = expected((3_000, 3_100, 0, 2_900), "USD")
    assert (usual.median, usual.low, usual.high) == (2_950, 0, 3_100)
    rule = SpendAnomaly.model_validate({"name": "x", "kind": "spend_anomaly"})
    quiet = Seasonal(
        TUESDAY_MORNING, Money(3_300), (3_000, 3_100, 0, 2_900), "week", timedelta(weeks=4)
    )
    assert not evaluate_anomaly(rule, quiet).active


RUNWAY_RULES = """
channels: {{oncall: "{webhook}"}}
defaults: {{notify: [oncall]}}
rules:
  - {{name: runway-trailing, kind: runway_below, runway: 2d}}
  - {{name: runway-seasonal, kind: runway_below, runway: 2d, burn: seasonal}}
"""
FRIDAY_EVENING = datetime(2026, 11, 27, 18, 0, tzinfo=UTC)


async def test_a_seasonal_runway_counts_the_quiet_weekend_ahead(
    make_harness: MakeHarness,
) -> None:
    """$300 on a Friday evening after a $272 day: at the trailing burn it lasts about a
    day; at each coming hour's usual spend ($2 an hour all weekend) it lasts until
    Monday afternoon, beyond 2 days."""
    h = await make_harness(RUNWAY_RULES)
    h.dial.account.balance_cents = 30_000
    h.dial.ledger.extend(rhythm(FRIDAY_EVENING - timedelta(weeks=4, hours=1), FRIDAY_EVENING))
    h.clock.current = FRIDAY_EVENING
    report = await run_cycle(h.watcher)
    trailing = outcome(report, "runway-trailing").finding
    seasonal = outcome(report, "runway-seasonal").finding
    assert trailing.active
    assert trailing.summary == (
        "at $272.00/day the wallet ($300.00) empties in about 26h28m, within 2d"
    )
    assert not seasonal.active
    assert seasonal.summary == (
        "the wallet ($300.00) outlasts 2d at the usual spend of the hours ahead"
    )
    assert dict(seasonal.facts)["Burn rate"] == "$1,456.00/week, by each hour's usual spend"

    # Monday morning with $60 left: the business hours ahead empty it by noon.
    monday = FRIDAY_EVENING + timedelta(days=2, hours=15)
    h.dial.ledger.extend(rhythm(FRIDAY_EVENING, monday))
    h.dial.account.balance_cents = 6_000
    h.clock.current = monday
    report = await run_cycle(h.watcher)
    seasonal = outcome(report, "runway-seasonal").finding
    assert seasonal.active
    assert seasonal.summary == (
        "at the usual spend of the hours ahead the wallet ($60.00) empties in about 2h, within 2d"
    )


async def test_the_service_alerts_within_one_interval_of_a_spike_naming_the_culprit(
    make_fleet: MakeFleet, dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """The service as `dialwatch run` builds it, after four weeks of history: a burst to
    a premium number is in the next check's message, culprit and all."""
    h = await make_fleet(
        "accounts:\n"
        '  - {name: dial, provider: dial, api_key: "${DIAL_KEY}", base_url: "${DIAL_URL}"}\n'
        'channels: {oncall: "${WEBHOOK}"}\ndefaults: {notify: [oncall]}\n'
        "rules:\n  - {name: spend-spike, kind: spend_anomaly, window: 1h}\n"
    )
    start = SUNDAY_NIGHT - timedelta(minutes=30)
    dial.ledger.extend(rhythm(start - timedelta(weeks=4, hours=2), start))
    h.clock.current = start
    await h.check()
    assert webhook.received == []  # a usual Sunday night
    burst = [
        usage(stamp(start + timedelta(seconds=20 + s)), 500, fare="sms.intl",
              number="+882351234567", call=f"b{s}")
        for s in range(8)
    ]  # fmt: skip
    dial.ledger.extend(burst)
    h.clock.advance(minutes=1)  # one interval
    await h.check()
    (message,) = webhook.received
    assert message["title"] == (
        "[WARNING] dial / spend-spike: $42.00 in the last 1h; usually $2.00 on Sundays at 03:16 UTC"
    )
    assert "Increase from: +$40.00 from +882351234567 (number)" in message["message"]
    assert "sms.intl (fare)" in message["message"]
