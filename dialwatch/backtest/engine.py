"""A backtest of one account: read its ledger back once, rebuild the balance, gather
every check's inputs, and replay them (`replay.py`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Literal

from dialwatch.backtest.history import (
    ONE_US,
    BalanceWalk,
    Select,
    SuffixSum,
    lowest,
    micros,
    read_back,
)
from dialwatch.backtest.replay import Inputs, Replay, replay
from dialwatch.clock import from_micros, to_micros
from dialwatch.model import SPEND_TYPES, ActivityStats, LedgerItem, SpendSummary
from dialwatch.providers import REGISTRY, Provider
from dialwatch.rules.evaluate import Seasonal, item_matches, selects, spend_since
from dialwatch.rules.schema import (
    BalanceBelow,
    ItemRule,
    Match,
    Rule,
    RulesFile,
    RunwayBelow,
    SpendAbove,
    SpendAnomaly,
)
from dialwatch.units import Money

# Windows whose rolling spend `--suggest` learns from.
SUGGEST_WINDOWS = (timedelta(hours=1), timedelta(hours=24))


@dataclass
class Balance:
    start_cents: int
    end_cents: int
    min_cents: int
    min_at: datetime


@dataclass
class History:
    """What the read gave: the items in range, the rebuilt balance (None where the
    provider's history cannot give it), and what `--suggest` learns from."""

    items: int
    pages: int
    currency: str
    balance: Balance | None
    checks: list[datetime]
    balances: list[int | None]  # at each check
    amounts: Counter[tuple[str, int]]
    rolling: dict[timedelta, list[int]]  # spend in each window, at each check
    daily_burn: list[int]  # wallet spend per day of the range
    hourly: list[tuple[datetime, int]] = field(default_factory=list)  # spend per hour
    daily: list[tuple[datetime, int]] = field(default_factory=list)  # spend per UTC day


@dataclass
class AccountBacktest:
    account: str
    provider: str
    history: History
    replay: Replay
    skipped: list[tuple[str, str]] = field(default_factory=list)


def why_skipped(rule: Rule, provider: str) -> str | None:
    """Why `rule` cannot be replayed on an account of `provider`, or None."""
    plugin = REGISTRY[provider]
    if isinstance(rule, BalanceBelow | RunwayBelow) and plugin.wallet_effect is None:
        return (
            f"{provider}'s history does not give the balance (it lists money, not the "
            f"balance's {plugin.balance_unit or 'units'}, or not every movement): only spend "
            "rules are backtested there"
        )
    if isinstance(rule, RunwayBelow) and rule.burn == "seasonal":
        return "runway_below with burn: seasonal is not replayed yet (burn: trailing is)"
    if isinstance(rule, BalanceBelow | RunwayBelow | SpendAbove | SpendAnomaly | ItemRule):
        return None
    return (
        f"{rule.kind} looks at the account's present state (subscription, numbers, cards, "
        "plan quota), which has no history to replay"
    )


def _spend_of(currency: str, match: Match | None = None) -> Select:
    """Spend items in `currency` that `match` selects, by their amount."""

    def select(item: LedgerItem) -> int | None:
        if item.type not in SPEND_TYPES or item.currency != currency:
            return None
        return item.cents if match is None or selects(match, item) else None

    return select


def _matching(rule: ItemRule) -> Select:
    return lambda item: item.cents if item_matches(rule, item) else None


async def backtest_account(
    rules: RulesFile,
    source: Provider,
    since: datetime,
    until: datetime,
    checks: Sequence[datetime],
    now: datetime,
    *,
    suggest: bool = False,
    progress: Callable[[int, int], None] = lambda items, pages: None,
) -> AccountBacktest:
    """Backtest one account over `checks` (times in [since, until]). Raises
    ProviderError if the API cannot be read."""
    account, provider = source.account, source.provider
    plugin = REGISTRY[provider]
    rules_here = rules.rules_for(account, provider)
    skipped = [(r.name, why) for r in rules_here if (why := why_skipped(r, provider))]
    runnable = [r for r in rules_here if why_skipped(r, provider) is None]
    snapshot = await source.fetch_billing(now)
    currency = snapshot.balance.currency if snapshot.balance else "USD"
    after = [t + ONE_US for t in checks]
    sums: dict[str, SuffixSum] = {}
    for rule in runnable:
        if isinstance(rule, SpendAbove):
            starts = [spend_since(rule, t) for t in checks]
            selector = _spend_of(rule.amount.currency, rule.match)
            sums[rule.name] = SuffixSum(selector, micros([*starts, *after]))
        elif isinstance(rule, RunwayBelow):
            starts = [t - rule.lookback for t in checks]
            sums[rule.name] = SuffixSum(_spend_of(currency), micros([*starts, *after]))
        elif isinstance(rule, ItemRule):
            sums[rule.name] = SuffixSum(_matching(rule), micros(after))
        elif isinstance(rule, SpendAnomaly):
            # The window now, and the same window a week (or a day) before, and before.
            edges = {
                to_micros(t - o) + edge
                for t in checks
                for o in _earlier(rule)
                for edge in (-to_us(rule.window), 0)
            }
            edges |= {to_micros(t) + 1 for t in checks}
            sums[rule.name] = SuffixSum(_spend_of(currency, rule.match), list(edges))
    hours = _hours(since, until)
    hourly = SuffixSum(_spend_of(currency), micros(hours))
    learn: dict[timedelta, SuffixSum] = {}
    days = [since + timedelta(days=d) for d in range((until - since).days + 2)]
    if suggest:
        for window in SUGGEST_WINDOWS:
            points = [t - window for t in checks] + after
            learn[window] = SuffixSum(_spend_of(currency), micros(points))
    walk = None
    burn = None
    if plugin.wallet_effect is not None and snapshot.balance is not None:
        walk = BalanceWalk(
            plugin.wallet_effect, snapshot.balance.cents, micros([since, until, *checks]),
            to_micros(since), to_micros(until),
        )  # fmt: skip
        effect = plugin.wallet_effect
        burn = SuffixSum(lambda i: -effect(i) if effect(i) < 0 else None, micros(days))
    # As far back as the first check's windows reach, as the service's first read does.
    earliest = [s.at[0] for s in [*sums.values(), *learn.values()] if s.at]
    floor = from_micros(min([to_micros(since), *earliest]))
    stats = ActivityStats()
    read = 0

    def step(count: int) -> None:
        nonlocal read
        read += count
        progress(read, stats.requests)

    passed = await read_back(
        source.read_activity(floor, stats),
        [*sums.values(), *learn.values(), hourly, *([burn] if burn else [])],
        walk,
        since,
        until,
        step,
    )
    history = _history(passed.items, stats.requests, currency, walk, checks, since, until)
    history.amounts = passed.amounts
    history.hourly = [
        (hour, hourly.sum_at(to_micros(hour)) - hourly.sum_at(to_micros(following)))
        for hour, following in pairwise(hours)
    ]
    per_day: dict[datetime, int] = {}
    for hour, cents in history.hourly:
        day = hour.replace(hour=0)
        per_day[day] = per_day.get(day, 0) + cents
    history.daily = sorted(per_day.items())
    for window, series in learn.items():
        history.rolling[window] = [series.between(t - window, t)[0] for t in checks]
    if burn is not None:
        history.daily_burn = [
            burn.sum_at(to_micros(day)) - burn.sum_at(to_micros(following))
            for day, following in pairwise(days)
            if day < until
        ]

    def each_check() -> Iterator[Inputs]:
        """Every check's inputs, made as the replay reaches it (never all at once)."""
        for index, t in enumerate(checks):
            spend, burned, new, anomaly = {}, {}, {}, {}
            for rule in runnable:
                if isinstance(rule, SpendAbove):
                    start = spend_since(rule, t)
                    total, count = sums[rule.name].between(start, t)
                    spent = Money(total, rule.amount.currency)
                    spend[rule.name] = SpendSummary(start, spent, count, (), ())
                elif isinstance(rule, RunwayBelow):
                    burned[rule.name] = Money(
                        sums[rule.name].between(t - rule.lookback, t)[0], currency
                    )
                elif isinstance(rule, SpendAnomaly):
                    anomaly[rule.name] = _seasonal(
                        rule, sums[rule.name], t, floor, passed.oldest, currency
                    )
                elif isinstance(rule, ItemRule) and index > 0:
                    # The first check reads history, not news: item rules start after it.
                    total, count = sums[rule.name].between(checks[index - 1] + ONE_US, t)
                    new[rule.name] = (count, Money(total, currency))
            at = history.balances[index]
            balance = Money(at, currency) if at is not None else None
            yield Inputs(t, balance, spend, burned, new, anomaly)

    replayed = replay(rules, runnable, account, provider, each_check())
    return AccountBacktest(account, provider, history, replayed, skipped)


def _history(
    items: int,
    pages: int,
    currency: str,
    walk: BalanceWalk | None,
    checks: Sequence[datetime],
    since: datetime,
    until: datetime,
) -> History:
    if walk is None:
        return History(
            items, pages, currency, None, list(checks), [None] * len(checks), Counter(), {}, []
        )
    start, end = walk.at_time(since), walk.at_time(until)
    low_cents, low_at = lowest(walk) or (start, since)  # no item in range: the start
    balance = Balance(start, end, low_cents, low_at)
    balances: list[int | None] = [walk.at_time(t) for t in checks]
    return History(items, pages, currency, balance, list(checks), balances, Counter(), {}, [])


def _hours(since: datetime, until: datetime) -> list[datetime]:
    """Every UTC hour boundary from the hour of `since` to the one after `until`."""
    first = since.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    count = int((until - first) / timedelta(hours=1)) + 2
    return [first + timedelta(hours=h) for h in range(count)]


def to_us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _earlier(rule: SpendAnomaly) -> list[timedelta]:
    """How far back each sample a spend_anomaly check compares lies: every week of the
    baseline, and the six days before (used before a week of history)."""
    weeks = [timedelta(weeks=k) for k in range(1, rule.baseline // timedelta(weeks=1) + 1)]
    return [timedelta(0), *weeks, *(timedelta(days=d) for d in range(1, 7))]


def _seasonal(
    rule: SpendAnomaly,
    sums: SuffixSum,
    now: datetime,
    floor: datetime,
    oldest: datetime | None,
    currency: str,
) -> Seasonal:
    """What the service's `pipeline.evaluate.seasonal` reads from its store, from the
    sums: the same windows, known when the read covers them and they end after the
    history began."""
    window = rule.window
    first = oldest or now

    def known(end: datetime) -> bool:
        return end - window >= floor and end >= first

    def spent(end: datetime, inclusive: bool) -> int:
        start, stop = to_micros(end - window), to_micros(end) + (1 if inclusive else 0)
        return sums.sum_at(start) - sums.sum_at(stop)

    weeks = [now - o for o in _earlier(rule) if o.days % 7 == 0 and o and known(now - o)]
    days = [now - o for o in _earlier(rule) if 0 < o.days < 7 and known(now - o)]
    per: Literal["week", "day"] | None = "week" if weeks else "day" if days else None
    samples = tuple(spent(end, inclusive=False) for end in weeks or days)
    history = now - max(floor, first)
    return Seasonal(now, Money(spent(now, inclusive=True), currency), samples, per, history)
