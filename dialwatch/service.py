"""One check end to end (`run_cycle`): read, evaluate, decide, mute, template, queue.

The loop that repeats it lives in `runner.py`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import structlog

from dialwatch import templates
from dialwatch.alerts import AlertState, Decision, Status, Timing, step
from dialwatch.clock import Clock
from dialwatch.config import (
    LEDGER_KINDS,
    PROVIDERS,
    WATCHER_ALERTS,
    LedgerEvent,
    Rule,
    RulesFile,
    RunwayBelow,
    SnapshotRule,
    SpendAbove,
    Target,
    UsageItem,
)
from dialwatch.digest import DigestFacts, compose_digest, due_at, period
from dialwatch.errors import AuthError, ProviderError
from dialwatch.evaluate import (
    Finding,
    describe_item,
    evaluate,
    evaluate_runway,
    evaluate_spend,
    item_rule_summary,
    spend_since,
)
from dialwatch.ledger import LedgerSync, sync_ledger
from dialwatch.messages import AlertSpec, Message, compose, compose_event
from dialwatch.metrics import Metrics
from dialwatch.model import BillingSnapshot
from dialwatch.notify import Notifier
from dialwatch.providers import Provider
from dialwatch.quiet_hours import quiet_until
from dialwatch.store import OutboxEntry, Store
from dialwatch.units import Money, format_duration

log = structlog.get_logger("dialwatch.service")

AUTH_ALERT, UNHEALTHY_ALERT = WATCHER_ALERTS


@dataclass
class Health:
    """What the endpoints report: is the loop alive, and did checks succeed lately."""

    loop_tick: datetime | None = None
    last_check: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None


@dataclass
class Watcher:
    """Everything one account's check needs; built by `open_watchers`, or by tests.
    The watchers of one service share the store, notifier, metrics and rules."""

    rules: RulesFile
    source: Provider
    store: Store
    notifier: Notifier
    clock: Clock
    interval: timedelta = timedelta(seconds=60)
    outbox_expiry: timedelta = timedelta(hours=24)
    ledger_overlap: timedelta = timedelta(minutes=10)
    wake_delivery: asyncio.Event = field(default_factory=asyncio.Event)
    health: Health = field(default_factory=Health)
    metrics: Metrics = field(default_factory=Metrics)

    @property
    def account(self) -> str:
        return self.source.account

    @property
    def provider(self) -> str:
        return self.source.provider

    @property
    def active_rules(self) -> tuple[Rule, ...]:
        """The rules that run on this account."""
        return self.rules.rules_for(self.account, self.provider)


@dataclass(frozen=True)
class Outcome:
    spec: AlertSpec
    finding: Finding
    state: AlertState
    decision: Decision
    message: Message | None
    silenced_by: int | None = None  # the silence that kept it quiet
    inhibited_by: str | None = None  # the firing alert that kept it quiet
    context: dict[str, Any] = field(default_factory=dict)  # what templates see


@dataclass(frozen=True)
class CycleReport:
    now: datetime
    snapshot: BillingSnapshot | None
    error: ProviderError | None
    outcomes: tuple[Outcome, ...]
    ledger: LedgerSync | None = None
    ledger_error: ProviderError | None = None
    spend: dict[str, Money] = field(default_factory=dict)  # per spend_above rule

    @property
    def errors(self) -> list[ProviderError]:
        return [e for e in (self.error, self.ledger_error) if e is not None]

    @property
    def firing(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state.status is Status.FIRING]

    @property
    def notifications(self) -> list[tuple[str, Outcome]]:
        return [(t.channel, o) for t, o in self.deliveries]

    @property
    def deliveries(self) -> list[tuple[Target, Outcome]]:
        return [(t, o) for o in self.outcomes if o.message for t in o.spec.targets]


def rule_spec(watcher: Watcher, rule: Rule) -> AlertSpec:
    targets = watcher.rules.targets_for(
        rule.name, rule.kind, rule.severity, watcher.account, watcher.provider, rule
    )
    return AlertSpec(
        name=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        targets=targets,
        hold=rule.for_,
        repeat_every=rule.repeat_every,
        send_resolved=rule.send_resolved,
        max_repeats=rule.max_repeats,
        title_template=rule.title,
        body_template=rule.body,
    )


def watcher_spec(watcher: Watcher, name: str, kind: str) -> AlertSpec:
    """One of dialwatch's own alerts: routed like any other, else to the default channels,
    else to all."""
    return AlertSpec(
        name=name,
        kind=kind,
        severity="critical",
        targets=watcher.rules.targets_for(
            name, kind, "critical", watcher.account, watcher.provider
        ),
        hold=timedelta(0),
        repeat_every=watcher.rules.defaults.repeat_every,
        send_resolved=True,
    )


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


async def run_cycle(watcher: Watcher) -> CycleReport:
    """Read the account, evaluate every rule, decide, and queue notifications."""
    report = await _cycle(watcher)
    if report.notifications:
        watcher.wake_delivery.set()
    _record_health(watcher, report)
    return report


async def run_checks(watchers: list[Watcher], *, dry_run: bool = False) -> list[CycleReport]:
    """Check several accounts at the same time (they share one store). With `dry_run`,
    the same cycles run and everything they wrote is rolled back together: the reports
    say what would be sent."""
    if dry_run and watchers:
        with watchers[0].store.rolled_back():
            return list(await asyncio.gather(*(_cycle(w) for w in watchers)))
    return list(await asyncio.gather(*(run_cycle(w) for w in watchers)))


def _record_health(watcher: Watcher, report: CycleReport) -> None:
    health = watcher.health
    health.last_check = report.now
    if report.errors:
        health.last_error = "; ".join(f"{e.reason}: {e}" for e in report.errors)
    else:
        health.last_success = report.now
        health.last_error = None
    watcher.metrics.observe_cycle(report, watcher.account)


async def _cycle(watcher: Watcher) -> CycleReport:
    now = watcher.clock.now()
    account = watcher.account
    rules = watcher.active_rules
    bound = log.bind(account=account, provider=watcher.provider)
    snapshot: BillingSnapshot | None = None
    error: ProviderError | None = None
    try:
        snapshot = await watcher.source.fetch_billing(now)
    except AuthError as exc:
        error = exc
        bound.error("check.auth_failed", error=str(exc), hint="API key wrong or revoked?")
    except ProviderError as exc:
        error = exc
        bound.error("check.failed", reason=exc.reason, error=str(exc), retry="next interval")

    ledger: LedgerSync | None = None
    ledger_error: ProviderError | None = None
    if any(isinstance(rule, LEDGER_KINDS) for rule in rules) and not isinstance(error, AuthError):
        try:
            ledger = await sync_ledger(
                watcher.source, watcher.store, rules, now, watcher.ledger_overlap
            )
        except ProviderError as exc:
            ledger_error = exc
            bound.error("ledger.failed", reason=exc.reason, error=str(exc), retry="next interval")

    states = watcher.store.alert_states(account)
    spend: dict[str, Money] = {}
    evaluations = _evaluate_all(watcher, now, snapshot, ledger, states, spend)
    if error is None or isinstance(error, AuthError):
        # Other failures say nothing about the key: its alert stays as it was.
        auth = watcher_spec(watcher, AUTH_ALERT, "watcher_auth")
        evaluations.append((auth, _auth_finding(error, account)))
    errors = [e for e in (error, ledger_error) if e is not None]
    failing_since = (watcher.store.failing_since(account) or now) if errors else None
    unhealthy = watcher_spec(watcher, UNHEALTHY_ALERT, "watcher_unhealthy")
    after = watcher.rules.defaults.unhealthy_after
    evaluations.append((unhealthy, _unhealthy_finding(errors, failing_since, now, after)))

    silences = watcher.store.silences(now)

    def silence_for(rule: str) -> int | None:
        return next((s.id for s in silences if s.mutes(rule, account)), None)

    outcomes = []
    for spec, finding in evaluations:
        silence = silence_for(spec.name)
        decided = _decide(account, spec, finding, states, now, muted=silence is not None)
        outcomes.append(replace(decided, silenced_by=silence))
    outcomes = _inhibit(watcher.rules, outcomes, states, account, now)
    outcomes += _item_events(watcher, ledger, silence_for)
    for outcome in outcomes:
        was = states.get(outcome.spec.name, AlertState()).status
        if outcome.decision is not Decision.NONE or outcome.state.status is not was:
            bound.info(
                "alert.decision",
                rule=outcome.spec.name,
                decision=outcome.decision.value,
                status=outcome.state.status.value,
                was=was.value,
                summary=outcome.finding.summary,
                channels=list(outcome.spec.notify) if outcome.message else [],
                silenced_by=outcome.silenced_by,
                inhibited_by=outcome.inhibited_by,
            )

    balance = snapshot.balance if snapshot else None
    digest_outcomes, digests_due = _digests(watcher, now, ledger is not None, balance)
    outcomes += digest_outcomes
    report = CycleReport(now, snapshot, error, tuple(outcomes), ledger, ledger_error, spend)
    if not report.errors:
        bound.debug("check.ok", balance=str(balance), firing=len(report.firing))
    watcher.store.commit_check(
        account,
        now,
        {o.spec.name: o.state for o in outcomes if o.decision is not Decision.EVENT},
        [
            OutboxEntry(
                f"{account}/{o.spec.name}",
                o.decision.value,
                target.channel,
                _for_channel(watcher.rules, target.channel, o.message, o.context),
                quiet_until(target.quiet, now),
            )
            for target, o in report.deliveries
            if o.message is not None
        ],
        expires_at=now + watcher.outbox_expiry,
        balance=balance,
        ledger=ledger.checkpoint(
            tuple(o.spec.name for o in outcomes if o.decision is Decision.EVENT)
        )
        if ledger
        else None,
        failing_since=failing_since,
        group_wait=watcher.rules.defaults.group_wait,
        decisions=[
            (o.spec.name, o.decision.value) for o in outcomes if o.decision is not Decision.NONE
        ],
        digests=digests_due,
    )
    return report


def _evaluate_all(
    watcher: Watcher,
    now: datetime,
    snapshot: BillingSnapshot | None,
    ledger: LedgerSync | None,
    states: dict[str, AlertState],
    spend: dict[str, Money],
) -> list[tuple[AlertSpec, Finding]]:
    """Findings for every condition rule whose inputs this check could read; the spend
    each spend_above rule counted goes into `spend`."""
    store, account = watcher.store, watcher.account
    previous_balance = store.last_balance(account)
    evaluations = []
    for rule in watcher.active_rules:
        finding: Finding | None = None
        if isinstance(rule, SnapshotRule) and snapshot is not None:
            was_active = states.get(rule.name, AlertState()).status is not Status.INACTIVE
            finding = evaluate(
                rule, snapshot, was_active=was_active, previous_balance=previous_balance
            )
        elif isinstance(rule, SpendAbove) and ledger is not None:
            since = spend_since(rule, now)
            summary = store.spend(account, since, rule.amount.currency, rule.match)
            spend[rule.name] = summary.total
            finding = evaluate_spend(rule, summary)
        elif isinstance(rule, RunwayBelow) and ledger is not None and snapshot is not None:
            balance = snapshot.balance
            if balance is not None:
                burned = store.spend_total(account, now - rule.lookback, balance.currency)
                finding = evaluate_runway(rule, balance, burned)
        if finding is not None:
            evaluations.append((rule_spec(watcher, rule), finding))
    return evaluations


def _inhibit(
    rules: RulesFile,
    outcomes: list[Outcome],
    states: dict[str, AlertState],
    account: str,
    now: datetime,
) -> list[Outcome]:
    """Decide again, muted, the alerts that a firing `inhibit` source holds back."""
    firing = [o.spec for o in outcomes if o.state.status is Status.FIRING]
    result = []
    for outcome in outcomes:
        spec = outcome.spec
        source = next(
            (
                src.name
                for inhibit in rules.inhibit
                if inhibit.target.matches(spec.name, spec.kind, spec.severity)
                for src in firing
                if src.name != spec.name
                and inhibit.source.matches(src.name, src.kind, src.severity)
            ),
            None,
        )
        if source is None or outcome.silenced_by is not None:
            result.append(outcome)
            continue
        muted = _decide(account, spec, outcome.finding, states, now, muted=True)
        result.append(replace(muted, inhibited_by=source))
    return result


def _decide(
    account: str,
    spec: AlertSpec,
    finding: Finding,
    states: dict[str, AlertState],
    now: datetime,
    *,
    muted: bool,
) -> Outcome:
    previous = states.get(spec.name, AlertState())
    timing = Timing(spec.hold, spec.repeat_every, spec.send_resolved, spec.max_repeats)
    state, decision = step(previous, finding.active, now, timing, muted=muted)
    if decision is Decision.NONE:
        return Outcome(spec, finding, state, decision, None)
    shown = previous if decision is Decision.RESOLVED else state
    message = compose(account, spec, finding, decision, shown, now)
    context = templates.context(
        account,
        spec,
        decision.value,
        finding.summary,
        finding.facts,
        since=shown.active_since.isoformat() if shown.active_since else "",
        reminder=max(0, shown.notifications - 1),
    )
    message = _apply_templates(message, spec.title_template, spec.body_template, context)
    return Outcome(spec, finding, state, decision, message, context=context)


def _for_channel(
    rules: RulesFile, channel: str, message: Message, context: dict[str, Any]
) -> Message:
    spec = rules.channels.get(channel)
    if spec is None:
        return message
    return _apply_templates(message, spec.title, spec.body, context)


def _apply_templates(
    message: Message, title: str | None, body: str | None, context: dict[str, Any]
) -> Message:
    """`message` rewritten by the templates given; the default text if rendering fails."""
    if title is None and body is None:
        return message
    fields = {**context, "title": message.title, "body": message.body}
    try:
        return message._replace(
            title=templates.render(title, fields) if title is not None else message.title,
            body=templates.render(body, fields) if body is not None else message.body,
        )
    except Exception as exc:  # validated at start; a render error must not cost the alert
        log.error("template.failed", rule=context.get("rule"), error=str(exc))
        return message


ITEMS_SHOWN = 10


def _digests(
    watcher: Watcher, now: datetime, reads_ledger: bool, balance: Money | None
) -> tuple[list[Outcome], list[tuple[str, datetime]]]:
    """Digests whose time has come, and when each was due. The first time a digest is
    seen it is only scheduled: starting the service sends no summary of the past."""
    store, account = watcher.store, watcher.account
    outcomes: list[Outcome] = []
    due: list[tuple[str, datetime]] = []
    if not PROVIDERS[watcher.provider].has_money:
        return outcomes, due  # nothing a digest would say (HookBridge: the quota alerts)
    for digest in watcher.rules.digest:
        until = due_at(digest, now)
        key = f"{account}/{digest.name}"
        sent_for = store.digest_sent_for(key)
        if sent_for is not None and sent_for >= until:
            continue
        due.append((key, until))
        if sent_for is None:
            continue
        since = until - period(digest)
        currency = store.spend_currency(account)
        spend = store.spend(account, since, currency, until=until) if reads_ledger else None
        facts = DigestFacts(
            account=account,
            balance=balance or store.balance_at(account, until),
            balance_before=store.balance_at(account, since),
            spend_by_day=store.spend_by_day(account, since) if reads_ledger else {},
            top_numbers=spend.by_number if spend else (),
            top_items=spend.by_fare if spend else (),
            alerts=store.fired_between(account, since, until),
            spend_total=spend.total if spend else None,
        )
        message = compose_digest(digest, facts, since, until)
        spec = AlertSpec(
            name=f"digest:{digest.name}",
            kind="digest",
            severity="info",
            targets=tuple(Target(channel) for channel in digest.notify),
            hold=timedelta(0),
            repeat_every=None,
            send_resolved=False,
        )
        finding = Finding(True, message.title)
        outcomes.append(Outcome(spec, finding, AlertState(), Decision.EVENT, message))
    return outcomes, due


def _item_events(
    watcher: Watcher, ledger: LedgerSync | None, silence_for: Callable[[str], int | None]
) -> list[Outcome]:
    """One grouped message per item rule for the new items it matched (none if silenced:
    the items are then let go, not saved up for later)."""
    if ledger is None:
        return []
    outcomes = []
    for rule in watcher.active_rules:
        if not isinstance(rule, UsageItem | LedgerEvent):
            continue
        matches = watcher.store.item_matches(watcher.account, rule.name, ITEMS_SHOWN)
        if not matches.count:
            continue
        spec = rule_spec(watcher, rule)
        summary = item_rule_summary(rule, matches.count, matches.total, matches.shown[0])
        lines = [describe_item(item) for item in matches.shown]
        context = templates.context(
            watcher.account,
            spec,
            Decision.EVENT.value,
            summary,
            count=matches.count,
            total=str(matches.total),
            items=lines,
        )
        silenced_by = silence_for(rule.name)
        message = None
        if silenced_by is None:
            more = matches.count - len(matches.shown)
            message = compose_event(watcher.account, spec, summary, lines, more)
            message = _apply_templates(message, rule.title, rule.body, context)
        outcome = Outcome(spec, Finding(True, summary), AlertState(), Decision.EVENT, message)
        outcomes.append(replace(outcome, silenced_by=silenced_by, context=context))
    return outcomes
