"""Digests: a week of hourly checks (injected clock) sends each summary once, on time."""

from __future__ import annotations

from datetime import UTC, datetime

from dialwatch.delivery.digest import DigestFacts, compose_digest, due_at, period
from dialwatch.rules.schema import Digest
from dialwatch.units import Money
from tests.conftest import Harness, MakeHarness
from tests.ledger_items import at, usage
from tests.servers import WebhookReceiver
from tests.test_ledger import RULES
from tests.test_service import check_and_deliver

DIGESTS = (
    RULES
    + """
  - name: wallet-low
    kind: balance_below
    threshold: "$4,800.00"
digest:
  - name: daily
    every: day
    at: "08:00"
    timezone: Europe/Berlin
    notify: [oncall]
  - name: weekly
    every: week
    weekday: monday
    at: "09:00"
    notify: [oncall]
"""
)


def test_due_time_is_the_last_scheduled_local_time() -> None:
    """08:00 in Berlin is 07:00 UTC in November; a weekly digest waits for its weekday."""
    daily = Digest.model_validate(
        {"name": "d", "at": "08:00", "timezone": "Europe/Berlin", "notify": ["x"]}
    )
    weekly = Digest.model_validate(
        {"name": "w", "every": "week", "weekday": "monday", "notify": ["x"]}
    )
    now = datetime(2026, 11, 21, 6, 59, tzinfo=UTC)  # a Saturday
    assert due_at(daily, now) == datetime(2026, 11, 20, 7, 0, tzinfo=UTC)
    assert due_at(weekly, now) == datetime(2026, 11, 16, 8, 0, tzinfo=UTC)


async def test_a_week_of_checks_sends_each_digest_once_with_the_figures(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """Seven daily digests and one weekly, each with balance change, spend and alerts."""
    h: Harness = await make_harness(DIGESTS)
    balance = 500_000
    for hour in range(7 * 24):
        h.dial.account.balance_cents = balance
        h.dial.ledger.add(usage(at(1, base=h.clock.now()), 250, call=f"c{hour}"))
        await check_and_deliver(h)
        balance -= 250
        h.clock.advance(hours=1)

    digests = [m for m in webhook.received if "digest" in m["title"]]
    daily = [m for m in digests if "daily digest" in m["title"]]
    weekly = [m for m in digests if "weekly digest" in m["title"]]
    assert [m["title"].split(":")[0] for m in daily] == [
        f"[INFO] dial daily digest 2026-11-{day}" for day in range(22, 29)
    ]
    assert len(weekly) == 1
    assert weekly[0]["title"].startswith("[INFO] dial weekly digest 2026-11-23")

    # Nov 22 08:00 to Nov 23 08:00 in Berlin; the check at 07:00 UTC (hour 43) sends it.
    body = daily[1]["message"]
    assert "Period: 2026-11-22 08:00 to 2026-11-23 08:00 Europe/Berlin" in body
    assert "Balance: $4,892.50, was $4,952.50 (down $60.00)" in body
    assert "Spend: $60.00 in the period" in body  # 24 hourly items of $2.50
    assert "Spend by UTC day: 2026-11-22 $60.00, 2026-11-23 $20.00" in body
    assert "Top numbers: +14155550123 $60.00" in body
    assert "Runway: about 81d13h at $60.00/day" in body
    assert "Alerts fired: none" in body
    # The balance fell under $4,800.00 at hour 81 (Nov 24 21:00 UTC).
    assert "Alerts fired: wallet-low (1)" in daily[3]["message"]


HOURLY_RULE_AND_WEEKLY_DIGEST = """
channels:
  oncall: "{webhook}"
defaults:
  notify: [oncall]
rules:
  - name: hourly-spend
    kind: spend_above
    window: 1h
    amount: "$100.00"
digest:
  - name: weekly
    every: week
    weekday: monday
    at: "09:00"
    notify: [oncall]
"""


async def test_a_weekly_digest_counts_the_whole_week_though_rules_need_an_hour(
    make_harness: MakeHarness, webhook: WebhookReceiver
) -> None:
    """The only spend rule looks back one hour; the weekly digest still reports the
    week's spend ($7.50 every 3 hours: $420.00) and the runway it implies."""
    h: Harness = await make_harness(HOURLY_RULE_AND_WEEKLY_DIGEST)
    h.dial.account.balance_cents = 600_000
    for _ in range(72):  # Saturday 12:00 to Monday 30 Nov 09:00, every 3 hours
        h.dial.ledger.add(usage(at(-1, base=h.clock.now()), 750, call=f"c{len(h.dial.ledger)}"))
        await check_and_deliver(h)
        h.clock.advance(hours=3)

    weekly = [m for m in webhook.received if "weekly digest" in m["title"]][-1]
    assert "Period: 2026-11-23 09:00 to 2026-11-30 09:00 UTC" in weekly["message"]
    assert "Spend: $420.00 in the period" in weekly["message"]
    assert "Runway: about 100d at $60.00/day" in weekly["message"]


def test_digest_figures_keep_their_units() -> None:
    """A EUR account's burn is in euros; an SMS account's balance in credits against
    spend in dollars gives no runway (they cannot be divided), and says why."""
    daily = Digest.model_validate({"name": "d", "notify": ["x"]})
    until = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    since = until - period(daily)

    def facts(balance: Money, spend: Money) -> DigestFacts:
        return DigestFacts(
            account="a", balance=balance, balance_before=None,
            spend_by_day={"2026-11-21": spend}, top_numbers=(), top_items=(),
            alerts={}, spend_total=spend,
        )  # fmt: skip

    eur = compose_digest(daily, facts(Money(300_00, "EUR"), Money(30_00, "EUR")), since, until)
    assert "Spend by UTC day: 2026-11-21 €30.00" in eur.body
    assert "Runway: about 10d at €30.00/day" in eur.body

    sms = compose_digest(daily, facts(Money(5000, "credits"), Money(40_00)), since, until)
    assert "Balance: 5,000 credits" in sms.body
    assert "Runway: not estimated (the balance is in credits, the spend in USD)" in sms.body
