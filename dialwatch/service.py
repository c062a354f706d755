"""One check end to end (`run_cycle`), and the thin loop that repeats it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

import aiohttp
import structlog

from dialwatch import __version__
from dialwatch.alerts import AlertState, Decision, Status, Timing, step
from dialwatch.api_client import ApiClient, RetryPolicy, Sleep
from dialwatch.clock import Clock, SystemClock
from dialwatch.config import Rule, RulesFile
from dialwatch.dial import DialProvider
from dialwatch.errors import AuthError, ConfigError, ProviderError
from dialwatch.evaluate import Finding, evaluate
from dialwatch.logs import REDACTOR
from dialwatch.messages import AlertSpec, Message, compose
from dialwatch.model import BillingSnapshot
from dialwatch.notify import AppriseNotifier, Notifier
from dialwatch.outbox import deliver_due
from dialwatch.settings import Settings
from dialwatch.store import OutboxEntry, Store

log = structlog.get_logger("dialwatch.service")

AUTH_ALERT = "dialwatch-api-auth"
SHUTDOWN_GRACE = 5.0  # seconds a check or a send in flight may take after SIGTERM
KEEP_DELIVERED = timedelta(days=7)


class BillingSource(Protocol):
    account: str

    async def fetch_billing(self, now: datetime) -> BillingSnapshot: ...


@dataclass
class Watcher:
    """Everything one check needs; built once by `open_watcher`, or by tests."""

    rules: RulesFile
    source: BillingSource
    store: Store
    notifier: Notifier
    clock: Clock
    outbox_expiry: timedelta = timedelta(hours=24)
    wake_delivery: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def account(self) -> str:
        return self.source.account


@dataclass(frozen=True)
class Outcome:
    spec: AlertSpec
    finding: Finding
    state: AlertState
    decision: Decision
    message: Message | None


@dataclass(frozen=True)
class CycleReport:
    now: datetime
    snapshot: BillingSnapshot | None
    error: ProviderError | None
    outcomes: tuple[Outcome, ...]

    @property
    def firing(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.state.status is Status.FIRING]

    @property
    def notifications(self) -> list[tuple[str, Outcome]]:
        return [(ch, o) for o in self.outcomes if o.message for ch in o.spec.notify]


def rule_spec(rule: Rule) -> AlertSpec:
    return AlertSpec(
        name=rule.name,
        kind=rule.kind,
        severity=rule.severity,
        notify=rule.notify,
        hold=rule.for_,
        repeat_every=rule.repeat_every,
        send_resolved=rule.send_resolved,
    )


def auth_spec(rules: RulesFile) -> AlertSpec:
    """dialwatch's own alert for a rejected API key, sent to the default channels."""
    return AlertSpec(
        name=AUTH_ALERT,
        kind="watcher_auth",
        severity="critical",
        notify=rules.defaults.notify or tuple(rules.channels),
        hold=timedelta(0),
        repeat_every=rules.defaults.repeat_every,
        send_resolved=True,
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
                    "check or rotate the key (DIALWATCH_API_KEY); "
                    "dialwatch tries again every interval",
                ),
            ),
        )
    return Finding(False, f"the billing API accepts dialwatch's API key for {account} again")


async def run_cycle(watcher: Watcher, *, dry_run: bool = False) -> CycleReport:
    """Read the account, evaluate every rule, decide, and queue notifications.

    With `dry_run`, nothing is written: the report says what would be sent.
    """
    now = watcher.clock.now()
    account = watcher.account
    bound = log.bind(account=account)
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

    states = watcher.store.alert_states(account)
    previous_balance = watcher.store.last_balance(account)
    evaluations: list[tuple[AlertSpec, Finding]] = []
    if snapshot is not None:
        for rule in watcher.rules.rules:
            was_active = states.get(rule.name, AlertState()).status is not Status.INACTIVE
            finding = evaluate(
                rule, snapshot, was_active=was_active, previous_balance=previous_balance
            )
            evaluations.append((rule_spec(rule), finding))
    if error is None or isinstance(error, AuthError):
        # Other failures say nothing about the key: its alert stays as it was.
        evaluations.append((auth_spec(watcher.rules), _auth_finding(error, account)))

    outcomes = []
    for spec, finding in evaluations:
        previous = states.get(spec.name, AlertState())
        state, decision = step(
            previous,
            finding.active,
            now,
            Timing(spec.hold, spec.repeat_every, spec.send_resolved),
        )
        message = (
            compose(
                account,
                spec,
                finding,
                decision,
                previous if decision is Decision.RESOLVED else state,
                now,
            )
            if decision is not Decision.NONE
            else None
        )
        outcomes.append(Outcome(spec, finding, state, decision, message))
        if decision is not Decision.NONE or state.status is not previous.status:
            bound.info(
                "alert.decision",
                rule=spec.name,
                decision=decision.value,
                status=state.status.value,
                was=previous.status.value,
                summary=finding.summary,
                channels=list(spec.notify) if message else [],
            )

    report = CycleReport(now, snapshot, error, tuple(outcomes))
    if snapshot is not None:
        bound.debug("check.ok", balance=str(snapshot.balance), firing=len(report.firing))
    if not dry_run:
        watcher.store.commit_check(
            account,
            now,
            {o.spec.name: o.state for o in outcomes},
            [
                OutboxEntry(f"{account}/{o.spec.name}", o.decision.value, channel, o.message)
                for channel, o in report.notifications
                if o.message is not None
            ],
            expires_at=now + watcher.outbox_expiry,
            balance=snapshot.balance if snapshot else None,
        )
        if report.notifications:
            watcher.wake_delivery.set()
    return report


async def run_service(watcher: Watcher, interval: timedelta, stop: asyncio.Event) -> None:
    """Check every `interval` until `stop` is set; deliver the outbox alongside."""
    log.info(
        "service.started",
        version=__version__,
        account=watcher.account,
        interval_s=interval.total_seconds(),
        rules=[r.name for r in watcher.rules.rules],
        channels=list(watcher.rules.channels),
        pending_notifications=watcher.store.pending_count(),
    )
    delivery = asyncio.create_task(_delivery_loop(watcher, stop))
    loop = asyncio.get_running_loop()
    step_s = interval.total_seconds()
    while not stop.is_set():
        started = loop.time()
        check = asyncio.create_task(run_cycle(watcher))
        await _until_done_or_stopped(check, stop)
        # Drift-free: the next check starts `interval` after this one started.
        wait = max(0.0, step_s - (loop.time() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), wait)
    await _until_done_or_stopped(delivery, stop)
    log.info("service.stopped", pending_notifications=watcher.store.pending_count())


async def _until_done_or_stopped(task: asyncio.Task[Any], stop: asyncio.Event) -> None:
    """Await `task`; once `stop` is set, give it SHUTDOWN_GRACE seconds, then cancel it."""
    stopping = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if task not in done:
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_GRACE)
        if not done:
            log.warning("service.cancelled_in_flight", grace_s=SHUTDOWN_GRACE)
            task.cancel()
            await asyncio.wait({task})
    if not task.cancelled() and (error := task.exception()) is not None:
        # A bug, not an API failure (those are handled in the cycle): log it, keep running.
        log.error("service.task_failed", error=repr(error), exc_info=error)


async def _delivery_loop(watcher: Watcher, stop: asyncio.Event) -> None:
    while not stop.is_set():
        watcher.wake_delivery.clear()
        now = watcher.clock.now()
        try:
            await deliver_due(watcher.store, watcher.notifier, now)
            watcher.store.prune(now - KEEP_DELIVERED)
        except Exception:  # one bad send must not end delivery for good
            log.exception("notify.loop_error")
        next_at = watcher.store.next_attempt_at()
        wait = 30.0
        if next_at is not None:
            wait = min(wait, max(0.2, (next_at - watcher.clock.now()).total_seconds()))
        woken = asyncio.create_task(watcher.wake_delivery.wait())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({woken, stopping}, timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        woken.cancel()
        stopping.cancel()
    # Last chance for what the final check queued.
    await deliver_due(watcher.store, watcher.notifier, watcher.clock.now())


@contextlib.asynccontextmanager
async def open_watcher(
    settings: Settings,
    rules: RulesFile,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    sleep: Sleep = asyncio.sleep,
) -> AsyncIterator[Watcher]:
    """Build a Watcher from settings: HTTP session, Dial provider, state store, apprise."""
    if settings.api_key is None:
        raise ConfigError("DIALWATCH_API_KEY is not set: the Dial API key is required")
    key = settings.api_key.get_secret_value()
    REDACTOR.add(key)
    store = Store(settings.state)
    try:
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"dialwatch/{__version__}"}
        ) as session:
            client = ApiClient(
                session,
                settings.base_url,
                {"Authorization": f"Bearer {key}", "Accept": "application/json"},
                policy=RetryPolicy(),
                sleep=sleep,
            )
            yield Watcher(
                rules=rules,
                source=DialProvider("dial", client),
                store=store,
                notifier=notifier or AppriseNotifier(rules.channels),
                clock=clock or SystemClock(),
                outbox_expiry=settings.outbox_expiry,
            )
    finally:
        store.close()
