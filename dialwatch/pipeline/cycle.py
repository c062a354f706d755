"""One check of one account, end to end (`run_cycle`), as a pipeline of stages:

    read -> sync ledger -> evaluate -> silence, inhibit, decide -> render -> events
    -> route and commit to the outbox -> wake delivery

Each stage is a function of its own package; this module only composes them, and
keeps what the endpoints report about the account. The loop that repeats a check
lives in `runner.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from dialwatch.alerting.decide import decide_all
from dialwatch.alerting.lifecycle import AlertState, Decision, Status
from dialwatch.alerting.routing import Target
from dialwatch.clock import Clock
from dialwatch.delivery.alertmanager import INTERVALS_VALID
from dialwatch.delivery.digest import history_needed as digest_history
from dialwatch.delivery.notifier import Notifier
from dialwatch.delivery.outbox import OutboxEntry
from dialwatch.delivery.render import Outcome, render, to_outbox
from dialwatch.errors import (
    AuthError,
    InternalError,
    LeaseLost,
    ProviderError,
    StateUnavailable,
)
from dialwatch.model import BillingSnapshot, QuotaPeriod
from dialwatch.pipeline.evaluate import (
    AUTH_ALERT,
    UNHEALTHY_ALERT,
    closed_alerts,
    evaluate_rules,
    spend_windows,
    watcher_alerts,
)
from dialwatch.pipeline.events import digests_due, item_events
from dialwatch.pipeline.ledger import LedgerSync, sync_ledger
from dialwatch.providers import REGISTRY, Provider
from dialwatch.rules.schema import LEDGER_KINDS, WATCHER_ALERTS, Rule, RulesFile
from dialwatch.store import Fence, Known, LedgerCursor, Store
from dialwatch.units import Money

__all__ = ["AUTH_ALERT", "UNHEALTHY_ALERT", "CycleReport", "Watcher", "run_checks", "run_cycle"]

log = structlog.get_logger("dialwatch.service")

PRUNE_EVERY = timedelta(minutes=10)


@dataclass
class Health:
    """What the endpoints report: is the loop alive, and did checks succeed lately."""

    loop_tick: datetime | None = None
    last_check: datetime | None = None
    last_success: datetime | None = None
    last_error: str | None = None
    summaries: dict[str, str] = field(default_factory=dict)  # rule -> what it found last
    learning: set[str] = field(default_factory=set)  # rules with too little history yet
    quota: QuotaPeriod | None = None  # the plan's usage, where the provider meters one


class CycleObserver(Protocol):
    """Told the report of every check (the service's metrics)."""

    def observe_cycle(self, report: CycleReport, account: str, interval: float) -> None: ...


@dataclass
class Watcher:
    """Everything one account's check needs; built by `fleet.open_fleet`, or by tests.
    The watchers of one service share the store, notifier, metrics and rules."""

    rules: RulesFile
    source: Provider
    store: Store
    notifier: Notifier
    clock: Clock
    interval: timedelta = timedelta(seconds=60)
    outbox_expiry: timedelta = timedelta(hours=24)
    status_page: str | None = None  # DIALWATCH_EXTERNAL_URL: Alertmanager's link back
    ledger_overlap: timedelta = timedelta(minutes=10)
    wake_delivery: asyncio.Event = field(default_factory=asyncio.Event)
    health: Health = field(default_factory=Health)
    metrics: CycleObserver | None = None
    # Where replicas share the store: this replica's lease on the account. Every write
    # of a check carries it, so a replica that lost the account writes nothing.
    fence: Fence | None = None
    swept_at: datetime | None = None  # when the ledger's overlap was last read whole
    pruned_at: datetime | None = None  # when a commit last deleted what no longer counts
    ledger_stored: bytes | None = None  # the last ledger sync's `stored`

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
class CycleReport:
    now: datetime
    snapshot: BillingSnapshot | None
    error: ProviderError | None
    outcomes: tuple[Outcome, ...]
    ledger: LedgerSync | None = None
    ledger_error: ProviderError | None = None
    spend: dict[str, Money] = field(default_factory=dict)  # per spend_above rule
    queued: tuple[OutboxEntry, ...] = ()  # what the check wrote to the outbox

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


async def run_cycle(watcher: Watcher) -> CycleReport:
    """Check one account and queue its notifications, then wake delivery."""
    try:
        report = await _cycle(watcher)
    except (LeaseLost, StateUnavailable):
        raise  # the runner's to handle: another replica has it, or the store is down
    except Exception as exc:
        # A bug, not an API failure: it must still count as a failed check.
        log.exception("check.crashed", account=watcher.account, provider=watcher.provider)
        error = InternalError(exc)
        watcher.health.last_check = watcher.clock.now()  # even if recording it fails too
        watcher.health.last_error = f"{error.reason}: {error}"
        report = await _crashed(watcher, error)
    if report.queued:
        watcher.wake_delivery.set()
    _record_health(watcher, report)
    return report


async def run_checks(watchers: list[Watcher], *, dry_run: bool = False) -> list[CycleReport]:
    """Check several accounts at the same time (they share one store). With `dry_run`,
    the same cycles run on a private copy of the state, thrown away after: the reports
    say what would be sent, and the state is neither written nor locked."""
    if dry_run and watchers:
        scratch = await watchers[0].store.in_memory_copy()
        try:
            return list(
                await asyncio.gather(
                    *(_cycle(replace(w, store=scratch, fence=None)) for w in watchers)
                )
            )
        finally:
            await scratch.close()
    return list(await asyncio.gather(*(run_cycle(w) for w in watchers)))


async def _cycle(w: Watcher) -> CycleReport:
    """The pipeline. The store is read as the stages need it and written once, at the
    end, in one transaction: a check that dies half-way leaves no trace."""
    now, store, account, provider = w.clock.now(), w.store, w.account, w.provider
    rules, active = w.rules, w.active_rules
    bound = log.bind(account=account, provider=provider)
    # read (what the store knows, in one trip, and the account)
    windows = spend_windows(active, account, now)
    stored = await store.known(account, now, list(windows.values()))
    snapshot, error = await _read(w.source, now, bound)
    # sync ledger
    ledger, ledger_error = await _sync_ledger(w, stored.cursor, active, now, error, bound)
    errors = [e for e in (error, ledger_error) if e is not None]
    states, silences = stored.states, stored.silences
    failing_since = (stored.failing_since or now) if errors else None
    # evaluate (the windows read at the start still hold if no item was stored since)
    spent = dict(zip(windows, stored.spent, strict=True))
    evaluations, spend = await evaluate_rules(
        store, rules, active, account, provider, now, snapshot, ledger is not None, states,
        stored.balance, ledger.covers_since if ledger else None,
        spent if ledger is not None and not ledger.new_items else {},
    )  # fmt: skip
    evaluations += watcher_alerts(rules, account, provider, errors, failing_since, now)
    # silence, inhibit, decide
    decided = decide_all(evaluations, states, silences, rules.inhibit, account, now)
    known = {r.name for r in active} | set(WATCHER_ALERTS)
    decided += await closed_alerts(store, rules.channels, states, known, account)
    # render
    outcomes = [render(account, provider, d, now) for d in decided]
    # events: new ledger items, digests
    if ledger is not None:
        waiting = stored.waiting | ledger.matched
        outcomes += await item_events(store, rules, active, account, provider, silences, waiting)
    _log_decisions(bound, outcomes, states)
    balance = snapshot.balance if snapshot else None
    digests, digests_sent = await digests_due(
        store, rules, account, REGISTRY[provider].has_money, now, ledger is not None, balance
    )
    # route
    outcomes += digests
    queued = _route(w, outcomes, now)
    report = CycleReport(now, snapshot, error, tuple(outcomes), ledger, ledger_error, spend, queued)
    if not errors:
        bound.debug("check.ok", balance=str(balance), firing=len(report.firing))
    # commit to the outbox
    await _commit(w, report, failing_since, digests_sent, stored)
    return report


async def _crashed(w: Watcher, error: InternalError) -> CycleReport:
    """A check that failed inside dialwatch, recorded as a failed check: the failing
    streak goes on, and dialwatch's own alerts are decided and committed as for a read
    that failed (every other alert stays as it was)."""
    now, account, provider = w.clock.now(), w.account, w.provider
    stored = await w.store.known(account, now)
    failing_since = stored.failing_since or now
    evaluations = watcher_alerts(w.rules, account, provider, [error], failing_since, now)
    decided = decide_all(evaluations, stored.states, stored.silences, w.rules.inhibit, account, now)
    outcomes = [render(account, provider, d, now) for d in decided]
    report = CycleReport(now, None, error, tuple(outcomes), queued=_route(w, outcomes, now))
    await _commit(w, report, failing_since, [], stored)
    return report


async def _commit(
    w: Watcher,
    report: CycleReport,
    failing_since: datetime | None,
    digests: list[tuple[str, datetime]],
    stored: Known,
) -> None:
    """The commit stage: what changed since the check began (`stored`) of the alert
    states, the ledger cursor, the balance and its history, and the outbox rows the
    messages were routed to, in one transaction (a check that changed nothing writes
    nothing); what no longer counts is pruned every PRUNE_EVERY."""
    outcomes, now = report.outcomes, report.now
    events = tuple(o.spec.name for o in outcomes if o.decision is Decision.EVENT)
    prune = w.pruned_at is None or not timedelta(0) <= now - w.pruned_at < PRUNE_EVERY
    states = {
        o.spec.name: o.state
        for o in outcomes
        if o.decision is not Decision.EVENT
        and o.state != stored.states.get(o.spec.name, AlertState())
    }
    await w.store.commit_check(
        w.account,
        now,
        states,
        report.queued,
        expires_at=now + w.outbox_expiry,
        balance=report.snapshot.balance if report.snapshot else None,
        ledger=report.ledger.checkpoint(events) if report.ledger else None,
        failing_since=failing_since,
        group_wait=w.rules.defaults.group_wait,
        decisions=[
            (o.spec.name, o.decision.value) for o in outcomes if o.decision is not Decision.NONE
        ],
        digests=digests,
        fence=w.fence,
        prune=prune,
        known=stored,
    )
    if prune:
        w.pruned_at = now


def _route(w: Watcher, outcomes: list[Outcome], now: datetime) -> tuple[OutboxEntry, ...]:
    """The route stage: each message per channel it goes to, and each firing alert to
    the Alertmanager channels that hear of it at every check."""
    valid_for = INTERVALS_VALID * w.interval
    return tuple(to_outbox(w.account, outcomes, w.rules.channels, now, valid_for, w.status_page))


async def _read(
    source: Provider, now: datetime, bound: structlog.typing.FilteringBoundLogger
) -> tuple[BillingSnapshot | None, ProviderError | None]:
    """The read stage: the account's billing status, or why it could not be read."""
    try:
        return await source.fetch_billing(now), None
    except AuthError as exc:
        bound.error("check.auth_failed", error=str(exc), hint="API key wrong or revoked?")
        return None, exc
    except ProviderError as exc:
        bound.error("check.failed", reason=exc.reason, error=str(exc), retry="next interval")
        return None, exc


async def _sync_ledger(
    w: Watcher,
    cursor: LedgerCursor | None,
    active: tuple[Rule, ...],
    now: datetime,
    error: ProviderError | None,
    bound: structlog.typing.FilteringBoundLogger,
) -> tuple[LedgerSync | None, ProviderError | None]:
    """The ledger stage, for accounts with a rule that reads it and a key that works."""
    if not any(isinstance(rule, LEDGER_KINDS) for rule in active) or isinstance(error, AuthError):
        return None, None
    # Digests summarise a whole day or week of spend, longer than rules may look back.
    keep = digest_history(w.rules.digest if REGISTRY[w.provider].has_money else (), now)
    # The whole overlap is read again once per its length, and after every start.
    sweep = w.swept_at is None or now - w.swept_at >= w.ledger_overlap
    try:
        synced = await sync_ledger(
            w.source, w.store, cursor, active, now, w.ledger_overlap, w.fence, keep, sweep,
            w.ledger_stored,
        )  # fmt: skip
        if sweep:
            w.swept_at = now
        w.ledger_stored = synced.stored
        return synced, None
    except ProviderError as exc:
        bound.error("ledger.failed", reason=exc.reason, error=str(exc), retry="next interval")
        return None, exc


def _log_decisions(
    bound: structlog.typing.FilteringBoundLogger,
    outcomes: list[Outcome],
    states: Mapping[str, AlertState],
) -> None:
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


def _record_health(watcher: Watcher, report: CycleReport) -> None:
    health = watcher.health
    health.last_check = report.now
    if report.errors:
        health.last_error = "; ".join(f"{e.reason}: {e}" for e in report.errors)
    else:
        health.last_success = report.now
        health.last_error = None
    for outcome in report.outcomes:
        if outcome.decision is not Decision.EVENT:
            health.summaries[outcome.spec.name] = outcome.finding.summary
            if outcome.finding.learning:
                health.learning.add(outcome.spec.name)
            else:
                health.learning.discard(outcome.spec.name)
    if report.snapshot is not None:
        health.quota = report.snapshot.quota
    if watcher.metrics is not None:
        watcher.metrics.observe_cycle(report, watcher.account, watcher.interval.total_seconds())
