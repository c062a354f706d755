"""One pass over an account's ledger, newest first as the API serves it, that keeps
only what a replay needs: running sums sampled at times known in advance. Memory
grows with the number of replayed checks and sampled times, never with the items.

Every spend figure a rule asks for at a check is a difference of two suffix sums
(the total of the selected items at or after a time): spend in [t - 24h, t] is
S(t - 24h) - S(t + 1us). The balance is one too: the wallet now, minus what every
later item did to it (`ProviderPlugin.wallet_effect`), so the balance after each
item is exact, to the cent, from the current balance alone.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from dialwatch.clock import from_micros, to_micros
from dialwatch.model import ActivityStats, LedgerItem
from dialwatch.providers import REGISTRY, Provider
from dialwatch.store import Store
from dialwatch.units import Money

ONE_US = timedelta(microseconds=1)
Select = Callable[[LedgerItem], int | None]  # what an item adds to a sum; None: not selected


@dataclass
class SuffixSum:
    """The total `select` gives the items at or after each of `at` (times, in
    microseconds since the epoch), and how many items it selected."""

    select: Select
    at: list[int]
    sums: array[int] = field(init=False)
    counts: array[int] = field(init=False)
    total: int = 0
    count: int = 0
    _next: int = -1  # index into `at` of the next time to sample, going down

    def __post_init__(self) -> None:
        self.at = sorted(set(self.at))
        self.sums = array("q", bytes(8 * len(self.at)))
        self.counts = array("q", bytes(8 * len(self.at)))
        self._next = len(self.at) - 1

    def before(self, when: int) -> None:
        """Sample every time after `when`: the items read so far are all the items
        at or after them (the next item is older)."""
        at, i = self.at, self._next
        while i >= 0 and at[i] > when:
            self.sums[i], self.counts[i] = self.total, self.count
            i -= 1
        self._next = i

    def add(self, item: LedgerItem) -> None:
        value = self.select(item)
        if value is not None:
            self.total += value
            self.count += 1

    def sum_at(self, micros: int) -> int:
        return self.sums[bisect_left(self.at, micros)]

    def between(self, start: datetime, end: datetime) -> tuple[int, int]:
        """The sum and count of the selected items in [start, end]."""
        low = bisect_left(self.at, to_micros(start))
        high = bisect_left(self.at, to_micros(end + ONE_US))
        return self.sums[low] - self.sums[high], self.counts[low] - self.counts[high]


@dataclass
class BalanceWalk:
    """The balance at each of `at`, walked back from `now_cents` through the items."""

    effect: Callable[[LedgerItem], int]
    now_cents: int
    at: list[int]
    since: int  # items from here to `until` count for the lowest balance
    until: int
    balance: SuffixSum = field(init=False)
    low: tuple[int, int] | None = None  # (cents, micros) after the lowest item in range
    end_cents: int | None = None

    def __post_init__(self) -> None:
        self.balance = SuffixSum(self.effect, [t + 1 for t in self.at])

    def after(self, item: LedgerItem, when: int) -> None:
        """Before undoing `item` (the newest not undone yet), the running balance is the
        balance right after it."""
        if self.since <= when <= self.until:
            cents = self.now_cents - self.balance.total
            if self.low is None or cents < self.low[0]:
                self.low = (cents, when)

    def at_time(self, moment: datetime) -> int:
        return self.now_cents - self.balance.sum_at(to_micros(moment) + 1)


@dataclass
class Pass:
    """What one read of the ledger leaves behind."""

    items: int = 0  # items in [since, until]
    oldest: datetime | None = None  # the oldest item read: where the history begins
    amounts: Counter[tuple[str, int]] = field(default_factory=Counter)  # spend item sizes


async def read_back(
    batches: AsyncIterator[list[LedgerItem]],
    sums: Iterable[SuffixSum],
    walk: BalanceWalk | None,
    since: datetime,
    until: datetime,
    progress: Callable[[int], None] = lambda _: None,
) -> Pass:
    """Feed every item (newest first) to the sums and the walk; items newer than
    `until` only move the balance back to it."""
    series = [*sums, *([walk.balance] if walk else [])]
    low, high = to_micros(since), to_micros(until)
    result = Pass()
    async for batch in batches:
        for item in batch:
            when = to_micros(item.occurred_at)
            for s in series:
                s.before(when)
            if walk is not None:
                walk.after(item, when)
            for s in series:
                s.add(item)
            result.oldest = item.occurred_at
            if low <= when <= high:
                result.items += 1
                if item.type in ("usage", "charge"):
                    result.amounts[(item.currency, item.cents)] += 1
        progress(len(batch))
    for s in series:
        s.before(-(2**62))  # the rest: nothing older was read
    return result


def micros(times: Iterable[datetime]) -> list[int]:
    return [to_micros(t) for t in times]


def lowest(walk: BalanceWalk) -> tuple[int, datetime] | None:
    if walk.low is None:
        return None
    cents, when = walk.low
    return cents, from_micros(when)


STEP = timedelta(minutes=15)


async def rebuild_balance(
    account: str,
    provider: str,
    source: Provider,
    store: Store,
    now: datetime,
    days: int = 7,
) -> int:
    """A fresh install's balance chart, filled at once: the wallet's last `days`, one
    reading per 15 minutes before the first one recorded, walked back from the latest
    reading through the ledger (where the provider's history gives the balance).
    Returns how many readings were added."""
    effect = REGISTRY[provider].wallet_effect
    latest = await store.last_balance(account)
    since = now - timedelta(days=days)
    recorded = await store.balance_history(account, since)
    if effect is None or latest is None or not recorded or recorded[0][0] - since < 2 * STEP:
        return 0
    first = recorded[0][0]
    points = []
    at = since
    while at < first - STEP:
        points.append(at)
        at += STEP
    walk = BalanceWalk(effect, latest.cents, micros(points), 0, 0)
    await read_back(source.read_activity(since, ActivityStats()), [], walk, since, now)
    rebuilt = [(p, Money(walk.at_time(p), latest.currency)) for p in points]
    return await store.add_balance_history(account, rebuilt)
