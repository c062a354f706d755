"""Thresholds learned from an account's history (`backtest --suggest`), as rules ready
to paste, each replayed over the same history to say how often it would have fired.

- balance_below: what the wallet needs to last `runway` (3 days) at the 95th
  percentile of daily burn;
- spend_above per window (1h, 24h): the 99th percentile of that window's rolling spend;
- usage_item: the 99.9th percentile of single spend items;
- runway_below: the same `runway`, judged at the burn of the last 24 hours.

Amounts are rounded up to a number a person would write ($45, not $43.17)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import yaml

from dialwatch.backtest.engine import AccountBacktest
from dialwatch.backtest.replay import Inputs, replay
from dialwatch.model import SpendSummary
from dialwatch.rules.schema import ANY_RULE, RulesFile, RunwayBelow, SpendAbove
from dialwatch.units import Money, format_duration

RUNWAY = timedelta(days=3)


def percentile(values: Sequence[int], share: float) -> int:
    """The nearest-rank percentile (`share` in 0..1) of `values`; 0 for none."""
    if not values:
        return 0
    ordered = sorted(values)
    rank = max(1, -(-int(share * 1000) * len(ordered) // 1000))  # ceil(share * n)
    return ordered[min(rank, len(ordered)) - 1]


def percentile_of_counts(counts: Counter[int], share: float) -> int:
    """The nearest-rank percentile of a histogram {value: how many}."""
    total = sum(counts.values())
    if not total:
        return 0
    rank = max(1, -(-int(share * 1000) * total // 1000))
    seen = 0
    for value in sorted(counts):
        seen += counts[value]
        if seen >= rank:
            return value
    return int(max(counts))


def round_up(cents: int) -> int:
    """Up to a number a person would write: $1 steps below $10, $5 below $100, $50
    below $1,000, $500 below $10,000, then two significant figures."""
    if cents <= 0:
        return 100
    for limit, step in ((1_000, 100), (10_000, 500), (100_000, 5_000), (1_000_000, 50_000)):
        if cents < limit:
            return -(-cents // step) * step
    step = int(10 ** (len(str(cents)) - 2))
    return -(-cents // step) * step


def suggest(a: AccountBacktest, rules: RulesFile) -> tuple[list[dict[str, Any]], list[str]]:
    """Suggested rules for one account, and a note on each (how often it would fire)."""
    currency, history = a.history.currency, a.history
    found: list[dict[str, Any]] = []
    notes: list[str] = []
    name = a.account
    if history.balance is not None and history.daily_burn:
        burn = percentile(history.daily_burn, 0.95)
        threshold = round_up(burn * RUNWAY.days)
        found.append(
            {"name": f"{name}-wallet-low", "kind": "balance_below",
             "threshold": str(Money(threshold, currency)), "accounts": [name]}
        )  # fmt: skip
        found.append(
            {"name": f"{name}-runway", "kind": "runway_below",
             "runway": format_duration(RUNWAY), "lookback": "24h", "accounts": [name]}
        )  # fmt: skip
    for window, rolling in sorted(history.rolling.items()):
        limit = round_up(percentile(rolling, 0.99))
        found.append(
            {"name": f"{name}-spend-{format_duration(window)}", "kind": "spend_above",
             "window": format_duration(window), "amount": str(Money(limit, currency)),
             "accounts": [name]}
        )  # fmt: skip
    sizes: Counter[int] = Counter()
    for (item_currency, cents), count in history.amounts.items():
        if item_currency == currency:
            sizes[cents] += count
    big_items = 0
    if sizes:
        smallest = round_up(percentile_of_counts(sizes, 0.999))
        big_items = sum(n for cents, n in sizes.items() if cents >= smallest)
        found.append(
            {"name": f"{name}-big-item", "kind": "usage_item",
             "min_amount": str(Money(smallest, currency)), "accounts": [name]}
        )  # fmt: skip
    fired = _replayed(a, rules, found)
    for rule in found:
        if rule["kind"] == "usage_item":
            notes.append(f"{big_items} item(s) at or above it over the period")
        else:
            episodes, sent = fired[rule["name"]]
            notes.append(f"would have fired {episodes} time(s), {sent} notification(s)")
    return found, notes


def _replayed(
    a: AccountBacktest, rules: RulesFile, found: list[dict[str, Any]]
) -> dict[str, tuple[int, int]]:
    """Each suggested (non-item) rule replayed over the account's history."""
    replayable = [
        ANY_RULE.validate_python({k: v for k, v in r.items() if k != "accounts"})
        for r in found
        if r["kind"] != "usage_item"
    ]
    suggested = rules.model_copy(update={"rules": tuple(replayable), "inhibit": ()})
    history, currency = a.history, a.history.currency
    inputs = []
    for index, at in enumerate(history.checks):
        cents = history.balances[index]
        spend = {}
        for rule in replayable:
            if isinstance(rule, SpendAbove) and rule.window in history.rolling:
                total = Money(history.rolling[rule.window][index], currency)
                spend[rule.name] = SpendSummary(at - rule.window, total, 0, (), ())
        burned = {
            rule.name: Money(history.rolling[timedelta(hours=24)][index], currency)
            for rule in replayable
            if isinstance(rule, RunwayBelow) and timedelta(hours=24) in history.rolling
        }
        balance = Money(cents, currency) if cents is not None else None
        inputs.append(Inputs(at, balance, spend, burned, {}))
    result = replay(suggested, replayable, a.account, a.provider, inputs)
    return {n: (len(r.episodes), r.notifications) for n, r in result.results.items()}


def as_yaml(found: list[dict[str, Any]], notes: list[str]) -> str:
    """The rules as YAML to paste under `rules:`, each with its note as a comment."""
    out = []
    for rule, note in zip(found, notes, strict=True):
        text = yaml.safe_dump([rule], sort_keys=False, default_flow_style=False).rstrip()
        out.append(f"# {note}\n{text}")
    return "\n".join(out)
