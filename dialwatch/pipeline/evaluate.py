"""The evaluate stage: the findings of every rule whose inputs this check could read
(the spend rules' sums come from the store), and of dialwatch's own alerts."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime, timedelta

from dialwatch.alerting.decide import AlertSpec, Decided, rule_spec, watcher_spec
from dialwatch.alerting.lifecycle import AlertState, Decision, Status
from dialwatch.alerting.routing import Target
from dialwatch.delivery.outbox import episode_key
from dialwatch.errors import AuthError, ProviderError
from dialwatch.model import BillingSnapshot
from dialwatch.rules.evaluate import (
    Finding,
    evaluate,
    evaluate_runway,
    evaluate_spend,
    spend_since,
)
from dialwatch.rules.schema import (
    WATCHER_ALERTS,
    Rule,
    RulesFile,
    RunwayBelow,
    SnapshotRule,
    SpendAbove,
)
from dialwatch.store import Store
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
) -> tuple[list[Evaluation], dict[str, Money]]:
    """Findings for every rule in `active` whose inputs this check could read, and the
    spend each spend_above rule counted."""
    previous_balance = await store.last_balance(account)
    evaluations = []
    spend: dict[str, Money] = {}
    for rule in active:
        finding: Finding | None = None
        if isinstance(rule, SnapshotRule) and snapshot is not None:
            # Hysteresis holds a firing alert; a pending one is judged by its threshold.
            was_active = states.get(rule.name, AlertState()).status is Status.FIRING
            finding = evaluate(
                rule, snapshot, was_active=was_active, previous_balance=previous_balance
            )
        elif isinstance(rule, SpendAbove) and read_ledger:
            since = spend_since(rule, now)
            summary = await store.spend(account, since, rule.amount.currency, rule.match)
            spend[rule.name] = summary.total
            finding = evaluate_spend(rule, summary)
        elif isinstance(rule, RunwayBelow) and read_ledger and snapshot is not None:
            balance = snapshot.balance
            if balance is not None:
                burned = await store.spend_total(account, now - rule.lookback, balance.currency)
                finding = evaluate_runway(rule, balance, burned)
        if finding is not None:
            evaluations.append((rule_spec(rules, rule, account, provider), finding))
    return evaluations, spend


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
