"""Replaying an account's history through the real rule evaluation and alert lifecycle,
one check per interval with the time passed in, as the service would have run. Pure:
the inputs of every check (balance, spend sums, new items) were gathered beforehand
(`history.py`); nothing is sent and nothing is stored.

The lifecycle is the service's own (`alerting.decide`: `for`, hysteresis,
`repeat_every`, `max_repeats`, `send_resolved`, inhibition) and so is routing; quiet
hours hold messages as the outbox does (released when they end if still news, a
reminder not queued behind one that waits). Silences are not replayed: they are
about the present.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from dialwatch.alerting.decide import AlertSpec, decide_all, rule_spec
from dialwatch.alerting.lifecycle import AlertState, Decision, Status
from dialwatch.alerting.quiet_hours import quiet_until
from dialwatch.model import BillingSnapshot, SpendSummary
from dialwatch.rules.evaluate import (
    Finding,
    Seasonal,
    anomalous,
    below_threshold,
    evaluate,
    expected,
    over_amount,
    runs_out,
)
from dialwatch.rules.schema import (
    BalanceBelow,
    ItemRule,
    Rule,
    RulesFile,
    RunwayBelow,
    SpendAbove,
    SpendAnomaly,
)
from dialwatch.units import Money


@dataclass(frozen=True)
class Inputs:
    """What the check at `at` would have read."""

    at: datetime
    balance: Money | None
    spend: Mapping[str, SpendSummary]  # per spend_above rule
    burned: Mapping[str, Money]  # per runway_below rule
    new_items: Mapping[str, tuple[int, Money]]  # per item rule: count and total
    seasonal: Mapping[str, Seasonal] = field(default_factory=dict)  # per spend_anomaly rule


@dataclass
class Episode:
    start: datetime
    value_at_start: int | None  # cents: the balance, the spend
    worst: int | None
    end: datetime | None = None


@dataclass
class RuleResult:
    rule: str
    kind: str
    episodes: list[Episode] = field(default_factory=list)
    notifications: int = 0
    by_channel: Counter[str] = field(default_factory=Counter)

    def firing_seconds(self, until: datetime) -> int:
        return sum(int(((e.end or until) - e.start).total_seconds()) for e in self.episodes)


@dataclass
class Held:
    """A message the outbox would hold until quiet hours end."""

    until: datetime
    channel: str
    rule: str
    decision: Decision
    episode: datetime | None


@dataclass
class Replay:
    results: dict[str, RuleResult]
    per_channel_day: Counter[tuple[str, date]] = field(default_factory=Counter)


Value = Callable[[Inputs], int | None]
ACTIVE, INACTIVE = Finding(True, ""), Finding(False, "")


def replay(
    rules: RulesFile,
    runnable: Sequence[Rule],
    account: str,
    provider: str,
    checks: Iterable[Inputs],
) -> Replay:
    """Run `runnable` over `checks` (in time order) and say what would have happened."""
    specs = {rule.name: rule_spec(rules, rule, account, provider) for rule in runnable}
    results = {rule.name: RuleResult(rule.name, rule.kind) for rule in runnable}
    out = Replay(results)
    states: dict[str, AlertState] = {}
    held: list[Held] = []
    announced: set[tuple[str, str, datetime | None]] = set()
    values = {rule.name: _value(rule) for rule in runnable}

    def deliver(
        channel: str, rule: str, decision: Decision, at: datetime, episode: datetime | None
    ) -> None:
        result = results[rule]
        result.notifications += 1
        result.by_channel[channel] += 1
        out.per_channel_day[(channel, at.date())] += 1
        if decision in (Decision.FIRST, Decision.REPEAT):
            announced.add((channel, rule, episode))

    for check in checks:
        now = check.at
        for message in [h for h in held if h.until <= now]:
            held.remove(message)
            if _still_news(message, states, announced):
                deliver(message.channel, message.rule, message.decision, now, message.episode)
        evaluations: list[tuple[AlertSpec, Finding]] = []
        for rule in runnable:
            if isinstance(rule, ItemRule):
                continue
            was = states.get(rule.name, AlertState()).status is Status.FIRING
            active = condition(rule, check, was)
            if active is not None:
                evaluations.append((specs[rule.name], ACTIVE if active else INACTIVE))
        decided = decide_all(evaluations, states, (), rules.inhibit, account, now)
        for d in decided:
            name, before = d.spec.name, states.get(d.spec.name, AlertState())
            states[name] = d.state
            _track(results[name], before, d.state, now, values[name](check))
            episode = d.shown.active_since
            if d.decision is not Decision.NONE:
                _route(d.spec, d.decision, now, episode, held, deliver)
        for rule in runnable:
            count = check.new_items.get(rule.name, (0, Money(0)))[0]
            if isinstance(rule, ItemRule) and count:
                results[rule.name].episodes.append(Episode(now, count, count, now))
                _route(specs[rule.name], Decision.EVENT, now, None, held, deliver)
    return out


def _route(
    spec: AlertSpec,
    decision: Decision,
    now: datetime,
    episode: datetime | None,
    held: list[Held],
    deliver: Callable[[str, str, Decision, datetime, datetime | None], None],
) -> None:
    for target in spec.targets:
        hold = quiet_until(target.quiet, now)
        if hold is None:
            deliver(target.channel, spec.name, decision, now, episode)
            continue
        waiting = any(h.channel == target.channel and h.rule == spec.name for h in held)
        if decision is Decision.REPEAT and waiting:
            continue  # a reminder adds nothing while an earlier message waits
        held.append(Held(hold, target.channel, spec.name, decision, episode))


def _still_news(
    message: Held,
    states: Mapping[str, AlertState],
    announced: set[tuple[str, str, datetime | None]],
) -> bool:
    """As the outbox judges a held message when quiet hours end."""
    if message.decision in (Decision.FIRST, Decision.REPEAT):
        return states.get(message.rule, AlertState()).status is Status.FIRING
    if message.decision is Decision.RESOLVED:
        return (message.channel, message.rule, message.episode) in announced
    return True


def _track(
    result: RuleResult, before: AlertState, after: AlertState, now: datetime, value: int | None
) -> None:
    firing_before = before.status is Status.FIRING
    firing_now = after.status is Status.FIRING
    if firing_now and not firing_before:
        result.episodes.append(Episode(now, value, value))
    elif firing_before and not firing_now and result.episodes:
        result.episodes[-1].end = now
    elif firing_now and result.episodes and value is not None:
        episode = result.episodes[-1]
        worse = min if result.kind in ("balance_below", "runway_below") else max
        episode.worst = value if episode.worst is None else worse(episode.worst, value)


def _value(rule: Rule) -> Value:
    """The number an episode reports at its start and at its worst, in cents."""
    if isinstance(rule, SpendAbove):
        return lambda check: (
            check.spend[rule.name].total.cents if rule.name in check.spend else None
        )
    if isinstance(rule, BalanceBelow | RunwayBelow):
        return lambda check: check.balance.cents if check.balance is not None else None
    return lambda check: None


def condition(rule: Rule, check: Inputs, was_active: bool) -> bool | None:
    """Whether `rule`'s condition holds at `check`, by the service's own predicates
    (`rules.evaluate`: the messages' text is all that is left out); None where the
    check has no input for it."""
    if isinstance(rule, BalanceBelow):
        if check.balance is None:
            return None
        if check.balance.currency != rule.threshold.currency:
            snapshot = BillingSnapshot("", check.at, check.balance)
            return evaluate(rule, snapshot, was_active=was_active, previous_balance=None).active
        return below_threshold(rule, check.balance, was_active)
    if isinstance(rule, SpendAbove):
        spend = check.spend.get(rule.name)
        return None if spend is None else over_amount(rule, spend.total)
    if isinstance(rule, RunwayBelow):
        burned = check.burned.get(rule.name)
        if check.balance is None or burned is None:
            return None
        return runs_out(rule, check.balance, burned)
    if isinstance(rule, SpendAnomaly):
        seasonal = check.seasonal.get(rule.name)
        if seasonal is None:
            return None
        if seasonal.per is None or not seasonal.samples:
            return False  # learning
        usual = expected(seasonal.samples, seasonal.spend.currency)
        return anomalous(rule, seasonal.spend.cents, usual)
    return None


def steps(since: datetime, until: datetime, interval: timedelta) -> list[datetime]:
    """The checks from `since` to `until`, one per interval."""
    count = int((until - since) / interval)
    return [since + interval * k for k in range(count + 1)]
