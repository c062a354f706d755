"""Rules evaluated against a snapshot. Pure: no I/O, `now` comes from the snapshot."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from fnmatch import fnmatchcase
from typing import Literal
from zoneinfo import ZoneInfo

from dialwatch.model import (
    SPEND_TYPES,
    BillingSnapshot,
    LedgerItem,
    PaymentMethod,
    QuotaPeriod,
    SpendSummary,
)
from dialwatch.rules.schema import (
    SENSITIVITY,
    BalanceBelow,
    ItemRule,
    LedgerEvent,
    Match,
    NumbersAtRisk,
    PaymentMethodExpiring,
    Period,
    QuotaAbove,
    Rule,
    RunwayBelow,
    SnapshotRule,
    SpendAbove,
    SpendAnomaly,
    SubscriptionCancelling,
    UsageItem,
)
from dialwatch.units import Money, format_duration, minor_digits


@dataclass(frozen=True)
class Finding:
    """Whether a rule's condition holds now, and the facts a person needs to act on it.
    `learning`: the rule cannot judge yet (a spend_anomaly with too little history)."""

    active: bool
    summary: str
    facts: tuple[tuple[str, str], ...] = ()
    learning: bool = False


def evaluate(
    rule: SnapshotRule, snap: BillingSnapshot, *, was_active: bool, previous_balance: Money | None
) -> Finding:
    """Evaluate one rule. `was_active` lets thresholds resolve with hysteresis."""
    match rule:
        case BalanceBelow():
            return _balance_below(rule, snap, was_active, previous_balance)
        case SubscriptionCancelling():
            return _subscription_cancelling(snap)
        case NumbersAtRisk():
            return _numbers_at_risk(snap)
        case PaymentMethodExpiring():
            return _payment_method_expiring(rule, snap)
        case QuotaAbove():
            return _quota_above(rule, snap)


def _balance_below(
    rule: BalanceBelow, snap: BillingSnapshot, was_active: bool, previous: Money | None
) -> Finding:
    balance, threshold = snap.balance, rule.threshold
    if balance is None or balance.currency != threshold.currency:
        # The provider changed what its balance is counted in: say so rather than
        # compare credits with dollars. Active, so it cannot pass unnoticed.
        unit = balance.currency if balance else "nothing"
        return Finding(
            True,
            f"the {snap.balance_meaning} is in {unit}, the threshold in {threshold.currency}: "
            "cannot compare; fix the rule's threshold",
            (("Balance", str(balance)), ("Threshold", str(threshold))),
        )
    clear_at = threshold + rule.clear_margin
    active = below_threshold(rule, balance, was_active)
    what = snap.balance_meaning
    if active:
        summary = f"{what} {balance} is below {threshold}"
    elif was_active:
        summary = f"{what} {balance} is back above {threshold}"
    else:
        summary = f"{what} {balance} is at or above {threshold}"
    facts = [("Balance", str(balance)), ("Threshold", str(threshold))]
    if active and was_active and balance >= threshold:
        facts.append(("Resolves at", f"{clear_at} or more"))
    if previous is not None and previous != balance:
        change = balance.cents - previous.cents
        direction = "up" if change > 0 else "down"
        facts.append(
            (
                "Change",
                f"{direction} {Money(abs(change), balance.currency)} since the last check "
                f"(was {previous})",
            )
        )
    return Finding(active, summary, tuple(facts))


def below_threshold(rule: BalanceBelow, balance: Money, was_active: bool) -> bool:
    """The balance_below condition, for a balance in the threshold's currency. Once
    firing, the balance must climb clear of the threshold to resolve, so a balance
    wobbling around it does not flap."""
    clear_at = rule.threshold + rule.clear_margin
    return balance < (clear_at if was_active else rule.threshold)


def _subscription_cancelling(snap: BillingSnapshot) -> Finding:
    sub = snap.subscription
    if sub is None:
        return Finding(False, "no subscription (the account is pay-as-you-go)")
    if not sub.cancel_at_period_end:
        return Finding(False, f"subscription renews on {_date(sub.period_end)}")
    facts = [
        ("Period ends", _date(sub.period_end)),
        ("Time left", _time_left(sub.period_end, snap.taken_at)),
    ]
    if sub.quantity is not None:
        facts.append(("Numbers covered", f"{sub.quantity} ({sub.interval or 'unknown interval'})"))
    facts.append(("Then", "numbers revert to pay-as-you-go and bill the wallet"))
    return Finding(
        True,
        f"subscription cancels at period end on {_date(sub.period_end)} "
        f"({_days_left(sub.period_end, snap.taken_at)})",
        tuple(facts),
    )


def _numbers_at_risk(snap: BillingSnapshot) -> Finding:
    release_at = snap.numbers_release_at
    if release_at is None:
        return Finding(False, "no numbers scheduled for release")
    numbers = ", ".join(n.number for n in snap.payg_numbers) or "none listed"
    return Finding(
        True,
        f"numbers will be released on {_date(release_at)} ({_days_left(release_at, snap.taken_at)}) "
        f"unless the balance ({snap.balance}) is topped up",
        (
            ("Release date", _date(release_at)),
            ("Time left", _time_left(release_at, snap.taken_at)),
            ("Balance", str(snap.balance)),
            ("PAYG numbers", numbers),
        ),
    )


def _quota_above(rule: QuotaAbove, snap: BillingSnapshot) -> Finding:
    quota = snap.quota
    month = snap.taken_at.strftime("%Y-%m")
    if quota is None:
        return Finding(False, f"no usage reported for {month} yet")
    limit = quota.plan_limit
    used = f"{quota.used:,} messages"
    if limit is None:
        return Finding(False, f"{used} this month on an unlimited plan")
    # Integers only: used/limit >= percent/100, without a float in between.
    if rule.overage:
        active = quota.overage > 0
        threshold = "the plan limit"
    else:
        assert rule.percent is not None
        active = quota.used * 100 >= rule.percent * limit
        threshold = f"{rule.percent}% of the plan"
    share = _percent(quota.used, limit)
    facts = [
        ("Used", f"{used} ({share} of the plan)"),
        ("Plan limit", f"{limit:,} messages"),
        ("Overage", f"{quota.overage:,} messages"),
        ("Period", f"{quota.start} to {quota.end}"),
        ("Time left in the month", _month_left(quota, snap.taken_at)),
    ]
    if active and rule.overage:
        summary = f"{quota.overage:,} messages over the plan limit of {limit:,} this month"
    elif active:
        summary = f"{used} used this month, {share} of the {limit:,} plan limit"
    else:
        summary = f"{used} used this month ({share}), below {threshold}"
    return Finding(active, summary, tuple(facts))


def _percent(part: int, whole: int) -> str:
    if whole <= 0:
        return "over 100%" if part > 0 else "0%"
    return f"{(Decimal(part) * 100 / whole).quantize(Decimal('0.1'), ROUND_HALF_UP)}%"


def _month_left(quota: QuotaPeriod, now: datetime) -> str:
    end = datetime(quota.end.year, quota.end.month, quota.end.day, tzinfo=UTC)
    return _time_left(end + timedelta(days=1), now)


def card_expires_at(method: PaymentMethod) -> datetime | None:
    """The first instant a card no longer works: the start of the month after expiry."""
    if method.exp_year <= 0 or not 1 <= method.exp_month <= 12:
        return None  # not a card (Link, bank account): it does not expire
    year, month = divmod(method.exp_month, 12)
    return datetime(method.exp_year + year, month + 1, 1, tzinfo=UTC)


def _payment_method_expiring(rule: PaymentMethodExpiring, snap: BillingSnapshot) -> Finding:
    method = snap.default_payment_method
    if method is None:
        payg = snap.payg_numbers
        if payg:
            return Finding(
                True,
                f"no payment method on file while {len(payg)} number(s) are pay-as-you-go",
                (("PAYG numbers", ", ".join(n.number for n in payg)),),
            )
        return Finding(False, "no payment method on file, and no pay-as-you-go numbers")
    expires_at = card_expires_at(method)
    if expires_at is None:
        return Finding(False, f"default payment method {method.label} does not expire")
    expiry = f"{method.exp_month:02d}/{method.exp_year}"
    left = expires_at - snap.taken_at
    if left > rule.within:
        return Finding(False, f"default payment method {method.label} expires {expiry}")
    state = (
        "has expired"
        if left <= timedelta(0)
        else f"expires {expiry} ({_days_left(expires_at, snap.taken_at)})"
    )
    return Finding(
        True,
        f"default payment method {method.label} {state}",
        (
            ("Payment method", method.label),
            ("Expires", expiry),
            ("Warning window", f"{rule.within.days} days"),
        ),
    )


def _date(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _time_left(moment: datetime, now: datetime) -> str:
    """ "20 days", "less than a day", or "none: already passed" (a fact's value)."""
    seconds = (moment - now).total_seconds()
    if seconds <= 0:
        return "none: already passed"
    days = int(seconds // 86400)
    if days == 0:
        return "less than a day"
    return f"{days} day{'s' if days != 1 else ''}"


def _days_left(moment: datetime, now: datetime) -> str:
    """The same, as said in a summary: "20 days left", "already passed"."""
    left = _time_left(moment, now)
    return "already passed" if left.startswith("none") else f"{left} left"


def period_start(period: Period, timezone: str, now: datetime) -> datetime:
    """The start of the calendar day, week (Monday) or month containing `now`, in `timezone`."""
    local = now.astimezone(ZoneInfo(timezone))
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        start -= timedelta(days=start.weekday())
    elif period == "month":
        start = start.replace(day=1)
    # Rebuild from the date so a DST change inside the period lands on local midnight.
    midnight = datetime(start.year, start.month, start.day, tzinfo=ZoneInfo(timezone))
    return midnight.astimezone(UTC)


def spend_since(rule: SpendAbove, now: datetime) -> datetime:
    if rule.period is not None:
        return period_start(rule.period, rule.timezone, now)
    assert rule.window is not None
    return now - rule.window


def history_needed(rules: tuple[Rule, ...], now: datetime) -> timedelta:
    """How far back the ledger must reach for every window rule to see real spend."""
    spans = [timedelta(0)]
    for rule in rules:
        if isinstance(rule, SpendAbove):
            spans.append(now - spend_since(rule, now))
        elif isinstance(rule, RunwayBelow):
            spans.append(SEASONAL_HISTORY if rule.burn == "seasonal" else rule.lookback)
        elif isinstance(rule, SpendAnomaly):
            spans.append(rule.baseline + rule.window)
    return max(spans)


def evaluate_spend(rule: SpendAbove, spend: SpendSummary) -> Finding:
    """Spend in the rule's window or period against its amount."""
    if rule.period is not None:
        window = f"this {rule.period} (since {_local(spend.since, rule.timezone)})"
    else:
        assert rule.window is not None
        window = f"in the last {format_duration(rule.window)}"
    active = over_amount(rule, spend.total)
    relation = "is above" if active else "is within"
    facts = [
        ("Spend", f"{spend.total} over {spend.count} item(s)"),
        ("Threshold", str(rule.amount)),
        ("Window", window),
    ]
    if _describe_match(rule.match):
        facts.append(("Counting", _describe_match(rule.match)))
    if spend.by_number:
        facts.append(("Top numbers", _contributors(spend.by_number)))
    if spend.by_fare:
        facts.append(("Top items", _contributors(spend.by_fare)))
    return Finding(active, f"spend {spend.total} {window} {relation} {rule.amount}", tuple(facts))


def over_amount(rule: SpendAbove, total: Money) -> bool:
    """The spend_above condition."""
    return total > rule.amount


def empties_in(rule: RunwayBelow, balance: Money, burned: Money) -> timedelta | None:
    """When the wallet is empty at the burn of the rule's lookback; None without burn."""
    if burned.cents <= 0:
        return None
    if balance.cents <= 0:
        return timedelta(0)
    # Time to empty = balance / (burned / lookback), kept in integers.
    lookback_s = int(rule.lookback.total_seconds())
    return timedelta(seconds=balance.cents * lookback_s // burned.cents)


def runs_out(rule: RunwayBelow, balance: Money, burned: Money) -> bool:
    """The runway_below condition: the wallet empties within `runway`."""
    left = empties_in(rule, balance, burned)
    return left is not None and left <= rule.runway


def evaluate_runway(rule: RunwayBelow, balance: Money, burned: Money) -> Finding:
    """Whether the wallet empties within `runway` at the trailing burn rate."""
    lookback_s = int(rule.lookback.total_seconds())
    if burned.cents <= 0:
        return Finding(False, f"no spend in the last {format_duration(rule.lookback)}: no burn")
    per_day = Money(int((Decimal(burned.cents) * 86400 / lookback_s).quantize(0, ROUND_HALF_UP)))
    facts = [
        ("Balance", str(balance)),
        (
            "Burn rate",
            f"{per_day}/day (spend {burned} in the last {format_duration(rule.lookback)})",
        ),
        ("Runway threshold", format_duration(rule.runway)),
    ]
    if balance.cents <= 0:
        return Finding(
            True, f"the wallet is empty ({balance}) while burning {per_day}/day", tuple(facts)
        )
    empty_in = empties_in(rule, balance, burned) or timedelta(0)
    facts.insert(2, ("Time to empty", f"about {format_duration(_round_to_minutes(empty_in))}"))
    active = runs_out(rule, balance, burned)
    relation = "within" if active else "beyond"
    return Finding(
        active,
        f"at {per_day}/day the wallet ({balance}) empties in about "
        f"{format_duration(_round_to_minutes(empty_in))}, {relation} {format_duration(rule.runway)}",
        tuple(facts),
    )


def item_matches(rule: ItemRule, item: LedgerItem) -> bool:
    """Whether one new ledger item is an event for `rule`."""
    if isinstance(rule, LedgerEvent):
        return item.type in rule.types and selects(rule.match, item)
    return (
        item.type in SPEND_TYPES
        and item.currency == rule.min_amount.currency
        and item.cents >= rule.min_amount.cents
        and selects(rule.match, item)
    )


def describe_item(item: LedgerItem) -> str:
    """One line per item in a grouped message."""
    when = item.occurred_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{when}  {_what(item)}"


def _what(item: LedgerItem) -> str:
    invoice = f", invoice {item.invoice_id}" if item.invoice_id else ""
    if item.type == "usage" and item.description and not item.fare:
        return f"{item.amount} usage: {item.description}"
    if item.type == "usage":
        return f"{item.amount} {item.fare or 'usage'} on {item.number or 'no number'}"
    if item.type == "credit":
        return f"credit of {item.amount} ({item.kind or 'unknown kind'}){invoice}"
    about = ": ".join(x for x in (item.action, item.description or item.reason) if x)
    zone = f", zone {item.zone}" if item.zone else ""
    return f"{item.type} of {item.amount} ({about or 'no reason given'}){zone}{invoice}"


def item_rule_summary(rule: ItemRule, count: int, total: Money, first: LedgerItem) -> str:
    if isinstance(rule, UsageItem):
        return f"{count} spend item(s) at or above {rule.min_amount} (total {total})"
    if count == 1:
        return f"new {_what(first)}"
    return f"{count} new ledger items: {', '.join(rule.types)} (total {total})"


def selects(match: Match, item: LedgerItem) -> bool:
    """Whether `match` selects `item` (as the stores' spend queries do)."""
    return (
        _glob(match.fare, item.fare)
        and _glob(match.action, item.action)
        and _glob(match.description, item.description)
        and (match.number is None or item.number == match.number)
        and (match.attribution is None or item.attribution == match.attribution)
        and (match.zone is None or item.zone == match.zone)
    )


def _glob(pattern: str | None, value: str | None) -> bool:
    return pattern is None or (value is not None and fnmatchcase(value, pattern))


def _describe_match(match: Match) -> str:
    parts = [f"{name} {value}" for name, value in match.model_dump().items() if value is not None]
    return ", ".join(parts)


def _contributors(rows: tuple[tuple[str, Money], ...]) -> str:
    return ", ".join(f"{name} {amount}" for name, amount in rows)


def _local(moment: datetime, timezone: str) -> str:
    return moment.astimezone(ZoneInfo(timezone)).strftime(f"%Y-%m-%d %H:%M {timezone}")


def _round_to_minutes(delta: timedelta) -> timedelta:
    return timedelta(minutes=int(delta.total_seconds() // 60))


@dataclass(frozen=True)
class Seasonal:
    """What a spend_anomaly rule judges: the window's spend now, and the same window at
    this hour in each earlier week (`per` "week") or, with less than a week of history,
    each earlier day ("day"); `per` None: too little history (learning)."""

    now: datetime
    spend: Money
    samples: tuple[int, ...]  # cents, newest first
    per: Literal["week", "day"] | None
    history: timedelta  # how much stored history there is
    contributors: tuple[tuple[str, int], ...] = ()  # (who, cents above their own usual)


@dataclass(frozen=True)
class Expected:
    """The usual spend of a window: the median of the samples, the range they span, and
    the scale a deviation is measured in (1.4826 MADs, at least a tenth of the median
    and one whole unit: a usually idle hour does not fire on one call)."""

    median: int
    low: int
    high: int
    scale: int


def expected(samples: tuple[int, ...], currency: str) -> Expected:
    ordered = sorted(samples)
    middle = len(ordered) // 2
    median = ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) // 2
    deviations = sorted(abs(x - median) for x in ordered)
    mad = deviations[middle] if len(deviations) % 2 else (
        deviations[middle - 1] + deviations[middle]) // 2  # fmt: skip
    floor = max(10 ** minor_digits(currency), median // 10)
    return Expected(median, ordered[0], ordered[-1], max(mad * 14_826 // 10_000, floor))


def anomalous(rule: SpendAnomaly, spend: int, usual: Expected) -> bool:
    """The spend_anomaly condition: beyond the usual by the sensitivity's robust z-score,
    by `min_impact` and by `min_percent`, all three, in the rule's direction."""
    z10 = int(SENSITIVITY[rule.sensitivity] * 10)

    def beyond(excess: int) -> bool:
        return (
            excess * 10 >= z10 * usual.scale
            and excess >= rule.min_impact.cents
            and excess * 100 >= rule.min_percent * usual.median
        )

    up = beyond(spend - usual.median)
    down = beyond(usual.median - spend) if usual.median > 0 else False
    return {"up": up, "down": down, "both": up or down}[rule.direction]


def evaluate_anomaly(rule: SpendAnomaly, seasonal: Seasonal) -> Finding:
    """Spend in the window against the same window of the account's usual week."""
    spend, currency = seasonal.spend, seasonal.spend.currency
    window = format_duration(rule.window)
    if seasonal.per is None or not seasonal.samples:
        had = format_duration(_round_to_minutes(seasonal.history))
        return Finding(
            False,
            f"learning: {had} of history; judges spend from one day on (daily), "
            "and by the week from one week on",
            (("History", had),),
            learning=True,
        )
    usual = expected(seasonal.samples, currency)
    active = anomalous(rule, spend.cents, usual)
    end = seasonal.now.astimezone(UTC)
    when = f"on {end:%A}s at {end:%H:%M} UTC" if seasonal.per == "week" else f"at {end:%H:%M} UTC"
    low, high = Money(usual.low, currency), Money(usual.high, currency)
    usually = f"usually {low} to {high} {when}" if low != high else f"usually {low} {when}"
    change = spend.cents - usual.median
    sign = "+" if change >= 0 else "-"
    percent = f" ({sign}{abs(change) * 100 // usual.median:,}%)" if usual.median else ""
    facts = [
        ("Spend", f"{spend} in the last {window}"),
        ("Usually", usually),
        (
            "Impact",
            f"{sign}{Money(abs(change), currency)}{percent} against the usual "
            f"{Money(usual.median, currency)}",
        ),
    ]
    if seasonal.contributors and change > 0:
        facts.append(("Increase from", _increase_from(seasonal.contributors, currency)))
    span = len(seasonal.samples)
    facts.append(("Baseline", f"the same {window} in the last {span} {seasonal.per}(s)"))
    facts.append(("Window", window))
    what = f"{rule.match.fare} " if rule.match.fare else ""
    if active and change < 0 and spend.cents == 0:
        summary = f"no {what}spend for {window}; {usually}"
    elif active:
        summary = f"{spend} in the last {window}; {usually}"
    else:
        summary = f"{spend} in the last {window}, within the usual ({usually})"
    return Finding(active, summary, tuple(facts))


def _increase_from(contributors: tuple[tuple[str, int], ...], currency: str) -> str:
    return ", ".join(f"+{Money(cents, currency)} from {who}" for who, cents in contributors)


SEASONAL_HISTORY = timedelta(weeks=4)


def _hour(moment: datetime) -> int:
    """Hours since the epoch (the store's `spend_per_hour` keys)."""
    return int(moment.timestamp()) // 3600


def usual_week(per_hour: Mapping[int, int], now: datetime) -> dict[int, int] | None:
    """Each hour of the week's usual spend: the median over the last weeks of what that
    hour spent (`per_hour`: hour index since the epoch -> cents). None with less than a
    week of history (the first hour with spend is where it starts)."""
    if not per_hour:
        return None
    current = _hour(now)
    start = max(min(per_hour), current - SEASONAL_HISTORY // timedelta(hours=1))
    weeks = (current - start) // 168
    if weeks < 1:
        return None
    usual = {}
    for slot in range(168):
        samples = sorted(per_hour.get(current - slot - 168 * k, 0) for k in range(1, weeks + 1))
        usual[(current - slot) % 168] = samples[len(samples) // 2]
    return usual


def empties_seasonally(
    rule: RunwayBelow, balance: Money, usual: Mapping[int, int], now: datetime
) -> timedelta | None:
    """When the wallet is empty if each coming hour spends what it usually does; None
    if not within the runway (or the weeks usually spend nothing)."""
    if balance.cents <= 0:
        return timedelta(0)
    current = _hour(now)
    left = balance.cents
    for ahead in range(1, rule.runway // timedelta(hours=1) + 1):
        left -= usual.get((current + ahead) % 168, 0)
        if left <= 0:
            return timedelta(hours=ahead)
    return None


def evaluate_runway_seasonal(
    rule: RunwayBelow, balance: Money, usual: Mapping[int, int] | None, burned: Money, now: datetime
) -> Finding:
    """runway_below with `burn: seasonal`; the trailing burn until a week of history."""
    if usual is None:
        finding = evaluate_runway(rule, balance, burned)
        return Finding(
            finding.active,
            finding.summary,
            (*finding.facts, ("Burn", "trailing until a week of history (then seasonal)")),
        )
    week = sum(usual.values())
    empty = empties_seasonally(rule, balance, usual, now)
    facts = (
        ("Balance", str(balance)),
        ("Burn rate", f"{Money(week, balance.currency)}/week, by each hour's usual spend"),
        ("Runway threshold", format_duration(rule.runway)),
    )
    if empty is None:
        return Finding(
            False,
            f"the wallet ({balance}) outlasts {format_duration(rule.runway)} at the usual "
            "spend of the hours ahead",
            facts,
        )
    return Finding(
        True,
        f"at the usual spend of the hours ahead the wallet ({balance}) empties in about "
        f"{format_duration(empty)}, within {format_duration(rule.runway)}",
        (*facts, ("Time to empty", f"about {format_duration(empty)}")),
    )
