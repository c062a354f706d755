"""The evaluate stage: the findings of every rule whose inputs this check could read
(the spend rules' sums come from the store), and of dialwatch's own alerts."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta
from typing import Literal

from dialwatch.alerting.decide import AlertSpec, Decided, rule_spec, watcher_spec
from dialwatch.alerting.lifecycle import AlertState, Decision, Status, step
from dialwatch.alerting.routing import Target
from dialwatch.delivery.outbox import episode_key
from dialwatch.errors import AuthError, ProviderError
from dialwatch.model import BillingSnapshot, SpendSummary
from dialwatch.rules.evaluate import (
    SEASONAL_HISTORY,
    Finding,
    Seasonal,
    evaluate,
    evaluate_anomaly,
    evaluate_runway,
    evaluate_runway_seasonal,
    evaluate_spend,
    over_amount,
    spend_since,
    usual_week,
)
from dialwatch.rules.schema import (
    WATCHER_ALERTS,
    AlertmanagerChannel,
    Rule,
    RulesFile,
    RunwayBelow,
    SnapshotRule,
    SpendAbove,
    SpendAnomaly,
)
from dialwatch.store import SpendQuery, Store
from dialwatch.units import Money, format_duration

AUTH_ALERT, UNHEALTHY_ALERT = WATCHER_ALERTS
Evaluation = tuple[AlertSpec, Finding]


async def evaluate_rules(
    store: Store,
    rules: RulesFile,
    active: tuple[Rule, ...],
    account: str,
    provider: str,
    now: datetime,
    snapshot: BillingSnapshot | None,
    read_ledger: bool,
    states: Mapping[str, AlertState],
    previous_balance: Money | None,
    covers_since: datetime | None = None,
    spent: Mapping[str, tuple[int, int]] | None = None,
) -> tuple[list[Evaluation], dict[str, Money]]:
    """Findings for every rule in `active` whose inputs this check could read, and the
    spend each spend_above rule counted. `spent` has a spend_above rule's window read
    already (its `spend_windows` query's spend and item count), if it still holds."""
    evaluations = []
    spend: dict[str, Money] = {}
    for rule in active:
        finding: Finding | None = None
        spec = rule_spec(rules, rule, account, provider)
        state = states.get(rule.name, AlertState())
        if isinstance(rule, SnapshotRule) and snapshot is not None:
            # Hysteresis holds a firing alert; a pending one is judged by its threshold.
            was_active = state.status is Status.FIRING
            finding = evaluate(
                rule, snapshot, was_active=was_active, previous_balance=previous_balance
            )
        elif isinstance(rule, SpendAbove) and read_ledger:
            since = spend_since(rule, now)
            currency = rule.amount.currency
            if spent and rule.name in spent:
                cents, count = spent[rule.name]
                summary = SpendSummary(since, Money(cents, currency), count, (), ())
            else:
                summary = await store.spend(
                    account, since, currency, rule.match, contributors=False
                )
            if _may_tell(rules, spec, state, over_amount(rule, summary.total), now):
                summary = await store.spend(account, since, currency, rule.match)
            spend[rule.name] = summary.total
            finding = evaluate_spend(rule, summary)
        elif isinstance(rule, RunwayBelow) and read_ledger and snapshot is not None:
            balance = snapshot.balance
            if balance is not None:
                burned = await store.spend_total(account, now - rule.lookback, balance.currency)
                finding = evaluate_runway(rule, balance, burned)
                if rule.burn == "seasonal":
                    hours = await store.spend_per_hour(
                        account, now - SEASONAL_HISTORY, balance.currency
                    )
                    usual = usual_week(hours, now)
                    finding = evaluate_runway_seasonal(rule, balance, usual, burned, now)
        elif isinstance(rule, SpendAnomaly) and read_ledger:
            history = await seasonal(store, account, rule, now, covers_since, False)
            finding = evaluate_anomaly(rule, history)
            if _may_tell(rules, spec, state, finding.active, now):
                history = await seasonal(store, account, rule, now, covers_since, True)
                finding = evaluate_anomaly(rule, history)
        if finding is not None:
            evaluations.append((spec, finding))
    return evaluations, spend


def spend_windows(active: tuple[Rule, ...], account: str, now: datetime) -> dict[str, SpendQuery]:
    """The window each spend_above rule sums at `now`, by rule name (to read them with
    what the check starts from)."""
    return {
        rule.name: SpendQuery(
            account, spend_since(rule, now), None, rule.amount.currency, rule.match
        )
        for rule in active
        if isinstance(rule, SpendAbove)
    }


def _may_tell(
    rules: RulesFile, spec: AlertSpec, state: AlertState, active: bool, now: datetime
) -> bool:
    """Whether an alert in `state` can become a message at this check (it fires,
    reminds or resolves; a firing one is posted to Alertmanager at every check). Only
    then are a spend rule's contributors read: that scans the window's items. Silences
    and inhibition only ever take a message away, so they are not asked."""
    if step(state, active, now, spec.timing)[1] is not Decision.NONE:
        return True
    return state.status is Status.FIRING and any(
        isinstance(rules.channels.get(t.channel), AlertmanagerChannel) for t in spec.targets
    )


DIMENSIONS = ("number", "prefix", "fare")


async def seasonal(
    store: Store,
    account: str,
    rule: SpendAnomaly,
    now: datetime,
    covers: datetime | None,
    contributors: bool = True,
) -> Seasonal:
    """The window's spend now and in the same window of each earlier week the stored
    ledger covers (each earlier day, with less than a week), and, with `contributors`,
    who drove an increase: per number, destination prefix and fare, their spend now
    against their own usual (this reads the windows' items)."""
    currency = await store.spend_currency(account)
    if covers is None:  # this check did not read the ledger: what the store knows
        cursor = await store.ledger_cursor(account)
        covers = cursor.covers_since if cursor and cursor.covers_since else now
    window, match = rule.window, rule.match
    # A new account's ledger is whole since long ago but holds a few hours: its history
    # starts at its first item, and no spend before that is not a quiet week. A window
    # counts if the stored ledger covers it and it ends after the history began.
    first = await store.ledger_starts(account) or now

    def known(end: datetime) -> bool:
        return end - window >= covers and end >= first

    weeks = [
        now - timedelta(weeks=k)
        for k in range(1, rule.baseline // timedelta(weeks=1) + 1)
        if known(now - timedelta(weeks=k))
    ]
    days = [now - timedelta(days=d) for d in range(1, 7) if known(now - timedelta(days=d))]
    per: Literal["week", "day"] | None = "week" if weeks else "day" if days else None
    ends = weeks or days
    spent = await store.spend_in(SpendQuery(account, now - window, None, currency, match))
    samples = tuple(
        [
            (await store.spend_in(SpendQuery(account, end - window, end, currency, match))).cents
            for end in ends
        ]
    )
    drivers: list[tuple[str, int]] = []
    if contributors and ends and spent.cents > sorted(samples)[len(samples) // 2]:
        until = now + timedelta(microseconds=1)
        for by in DIMENSIONS:
            current = await store.spend_by(
                SpendQuery(account, now - window, until, currency, match), by
            )
            before = [
                await store.spend_by(SpendQuery(account, e - window, e, currency, match), by)
                for e in ends
            ]
            grew = {
                key: cents - _median([b.get(key, 0) for b in before])
                for key, cents in current.items()
            }
            top = max(grew.items(), key=lambda kv: kv[1], default=None)
            if top is not None and top[1] > 0:
                label = f"{top[0]}…" if by == "prefix" else top[0]
                drivers.append((f"{label} ({by})", top[1]))
    return Seasonal(now, spent, samples, per, now - max(covers, first), tuple(drivers))


def _median(values: list[int]) -> int:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else 0


def watcher_alerts(
    rules: RulesFile,
    account: str,
    provider: str,
    errors: list[ProviderError],
    failing_since: datetime | None,
    now: datetime,
) -> list[Evaluation]:
    """dialwatch's own alerts: its key was rejected (by any read: Cloudflare's arrives
    on the ledger); checks have failed too long."""
    evaluations = []
    rejected = next((e for e in errors if isinstance(e, AuthError)), None)
    if rejected is not None or not errors:
        # Other failures say nothing about the key: its alert stays as it was.
        auth = watcher_spec(rules, AUTH_ALERT, "watcher_auth", account, provider)
        evaluations.append((auth, _auth_finding(rejected, account)))
    unhealthy = watcher_spec(rules, UNHEALTHY_ALERT, "watcher_unhealthy", account, provider)
    after = rules.defaults.unhealthy_after
    evaluations.append((unhealthy, _unhealthy_finding(errors, failing_since, now, after)))
    return evaluations


def _unhealthy_finding(
    errors: list[ProviderError], since: datetime | None, now: datetime, after: timedelta
) -> Finding:
    if since is None or now - since < after:
        return Finding(False, "checks succeed again")
    reasons = ", ".join(sorted({e.reason for e in errors})) or "unknown"
    return Finding(
        True,
        f"checks have failed for {format_duration(now - since)} ({reasons})",
        (
            ("Failing since", since.strftime("%Y-%m-%d %H:%M:%S UTC")),
            ("Last errors", "; ".join(str(e) for e in errors)),
            ("Meanwhile", "no rule can fire: dialwatch cannot see the account"),
        ),
    )


def _auth_finding(error: ProviderError | None, account: str) -> Finding:
    if isinstance(error, AuthError):
        return Finding(
            True,
            f"the billing API rejected dialwatch's API key for {account}; "
            "no rule can be checked until it is replaced",
            (
                ("Error", str(error)),
                (
                    "What to do",
                    "check or rotate the key (the account's api_key, or DIALWATCH_API_KEY); "
                    "dialwatch tries again every interval",
                ),
            ),
        )
    return Finding(False, f"the billing API accepts dialwatch's API key for {account} again")


REMOVED = "the rule no longer runs on this account (removed from the rules file, or renamed)"


async def closed_alerts(
    store: Store,
    channels: Collection[str],
    states: Mapping[str, AlertState],
    known: set[str],
    account: str,
) -> list[Decided]:
    """Alerts whose rule no longer runs on this account (removed, renamed, or moved to
    other accounts by a reload): closed, so nothing stays "firing" forever, and where one
    was announced, its resolution goes to the channels that were told it fired."""
    closed = []
    for name, previous in states.items():
        if name in known:
            continue
        told = [
            c
            for c in channels
            if await store.was_announced(c, f"{account}/{name}", episode_key(previous.active_since))
        ]
        announced = previous.status is Status.FIRING and previous.notifications > 0 and bool(told)
        spec = AlertSpec(
            name, "removed", "info", tuple(Target(c) for c in told), timedelta(0), None, True
        )
        decision = Decision.RESOLVED if announced else Decision.NONE
        closed.append(Decided(spec, Finding(False, REMOVED), AlertState(), decision, previous))
    return closed
