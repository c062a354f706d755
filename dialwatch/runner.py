"""Running the service: one loop per account around `run_cycle`, outbox delivery beside
them, reloading the rules, and building the watchers from settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from dialwatch import __version__
from dialwatch.clock import Clock, SystemClock
from dialwatch.delivery.notifier import AppriseNotifier, Notifier
from dialwatch.delivery.outbox import deliver_due
from dialwatch.errors import ConfigError
from dialwatch.logs import REDACTOR
from dialwatch.pipeline.cycle import CycleReport, Watcher, run_checks, run_cycle
from dialwatch.providers import DEFAULT_PROVIDER, open_provider
from dialwatch.providers.http import Sleep
from dialwatch.rules.loading import load_rules
from dialwatch.rules.schema import DEFAULT_ACCOUNT, Account, RulesFile
from dialwatch.settings import Settings
from dialwatch.store import Store, open_store
from dialwatch.web.metrics import Metrics

log = structlog.get_logger("dialwatch.runner")

SHUTDOWN_GRACE = 5.0  # seconds a check or a send in flight may take after SIGTERM


@dataclass
class Fleet:
    """The watchers of one service, one per account, and what they share."""

    rules: RulesFile
    store: Store
    notifier: Notifier
    clock: Clock
    metrics: Metrics
    # Builds the watcher of an account (new, or changed by a reload).
    build: Callable[[Account, RulesFile, Notifier], Watcher]
    settings: Settings
    watchers: dict[str, Watcher] = field(default_factory=dict)
    accounts: dict[str, Account] = field(default_factory=dict)
    wake_delivery: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def apply(self, rules: RulesFile) -> None:
        """Run `rules` from now on: new and changed accounts get new watchers, removed
        ones stop; the account loops follow at once (see `run_service`)."""
        accounts = {a.name: a for a in accounts_of(rules, self.settings)}
        self.rules = rules
        if isinstance(self.notifier, AppriseNotifier):
            self.notifier = self.notifier.with_channels(rules.channels)
        for name in list(self.watchers):
            if accounts.get(name) != self.accounts.get(name):
                del self.watchers[name]
        for name, account in accounts.items():
            if name in self.watchers:
                self.watchers[name].rules = rules
                self.watchers[name].notifier = self.notifier
            else:
                self.watchers[name] = self.build(account, rules, self.notifier)
        self.accounts = accounts
        self.changed.set()

    def all(self) -> list[Watcher]:
        return list(self.watchers.values())

    async def check(self, *, dry_run: bool = False) -> list[CycleReport]:
        """Check every account once, at the same time."""
        return await run_checks(self.all(), dry_run=dry_run)


def accounts_of(rules: RulesFile, settings: Settings) -> tuple[Account, ...]:
    """The accounts section, or without one the Dial account of DIALWATCH_API_KEY."""
    if rules.accounts:
        return rules.accounts
    if settings.api_key is None:
        raise ConfigError(
            "DIALWATCH_API_KEY is not set: the Dial API key is required "
            "(or list accounts in the rules file)"
        )
    return (
        Account(
            name=DEFAULT_ACCOUNT,
            provider=DEFAULT_PROVIDER,
            api_key=settings.api_key,
            base_url=settings.base_url,
        ),
    )


def reload_rules(fleet: Fleet, path: Path) -> bool:
    """Swap in the rules file at `path`; an invalid file is rejected, the old rules stay."""
    try:
        rules = load_rules(path)
        accounts_of(rules, fleet.settings)
    except ConfigError as exc:
        log.error(
            "config.reload_rejected",
            file=str(path),
            errors=[str(issue) for issue in exc.issues] or [str(exc)],
            kept="the previous rules keep running",
        )
        return False
    fleet.apply(rules)
    log.info(
        "config.reloaded",
        file=str(path),
        accounts=list(fleet.accounts),
        rules=[rule.name for rule in rules.rules],
        channels=list(rules.channels),
    )
    return True


async def run_service(fleet: Fleet, stop: asyncio.Event) -> None:
    """Check each account on its own schedule until `stop` is set; deliver the outbox
    alongside. A slow or failing account never delays another."""
    # A restart is often the fix for a broken channel: try what is pending at once.
    await fleet.store.retry_now(fleet.clock.now())
    log.info(
        "service.started",
        version=__version__,
        accounts={name: w.provider for name, w in fleet.watchers.items()},
        rules=[r.name for r in fleet.rules.rules],
        channels=list(fleet.rules.channels),
        pending_notifications=await fleet.store.pending_count(),
    )
    delivery = asyncio.create_task(_delivery_loop(fleet, stop))
    loops: dict[str, tuple[Watcher, asyncio.Event, asyncio.Task[None]]] = {}
    while True:
        fleet.changed.clear()
        for name, (watcher, halt, _) in list(loops.items()):
            if fleet.watchers.get(name) is not watcher or stop.is_set():
                halt.set()
                del loops[name]
        if stop.is_set():
            break
        for name, watcher in fleet.watchers.items():
            if name not in loops:
                halt = asyncio.Event()
                task = asyncio.create_task(_account_loop(watcher, halt))
                loops[name] = (watcher, halt, task)
        await _first(stop.wait(), fleet.changed.wait())
    tasks = [task for _, _, task in loops.values()]
    for _, halt, _ in loops.values():
        halt.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    await _until_done_or_stopped(delivery, stop)
    log.info("service.stopped", pending_notifications=await fleet.store.pending_count())


async def _account_loop(watcher: Watcher, halt: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    step_s = watcher.interval.total_seconds()
    while not halt.is_set():
        started = loop.time()
        watcher.health.loop_tick = watcher.clock.now()
        check = asyncio.create_task(run_cycle(watcher))
        await _until_done_or_stopped(check, halt)
        # Drift-free: the next check starts `interval` after this one started.
        wait = max(0.0, step_s - (loop.time() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(halt.wait(), wait)


async def _first(*waits: Any, limit_s: float | None = None) -> None:
    """Wait until the first of `waits` (coroutines) finishes, or `limit_s` seconds."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(tasks, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


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


async def _delivery_loop(fleet: Fleet, stop: asyncio.Event) -> None:
    while not stop.is_set():
        fleet.wake_delivery.clear()
        now = fleet.clock.now()
        try:
            delivery = await deliver_due(fleet.store, fleet.notifier, now)
            fleet.metrics.observe_delivery(delivery)
        except Exception:  # one bad send must not end delivery for good
            log.exception("notify.loop_error")
        next_at = await fleet.store.next_attempt_at()
        wait = 30.0
        if next_at is not None:
            wait = min(wait, max(0.2, (next_at - fleet.clock.now()).total_seconds()))
        await _first(fleet.wake_delivery.wait(), stop.wait(), limit_s=wait)
    # Last chance for what the final checks queued.
    await deliver_due(fleet.store, fleet.notifier, fleet.clock.now())


@contextlib.asynccontextmanager
async def open_fleet(
    settings: Settings,
    rules: RulesFile,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    sleep: Sleep = asyncio.sleep,
    interval: timedelta | None = None,
) -> AsyncIterator[Fleet]:
    """Build the service from settings: HTTP session, a provider per account, the state
    store and apprise. `interval` overrides every account's (the demo's quick pace)."""
    accounts_of(rules, settings)  # fails before anything is opened
    store = await open_store(settings.state)
    metrics = Metrics()
    wake = asyncio.Event()
    try:
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"dialwatch/{__version__}"}
        ) as session:

            def build(account: Account, rules: RulesFile, notifier: Notifier) -> Watcher:
                REDACTOR.add(account.api_key.get_secret_value())
                return Watcher(
                    rules=rules,
                    source=open_provider(
                        account, session, sleep=sleep, observe=metrics.observe_api
                    ),
                    store=store,
                    notifier=notifier,
                    clock=fleet.clock,
                    interval=interval or account.interval or settings.interval,
                    outbox_expiry=settings.outbox_expiry,
                    ledger_overlap=settings.ledger_overlap,
                    wake_delivery=wake,
                    metrics=metrics,
                )

            fleet = Fleet(
                rules=rules,
                store=store,
                notifier=notifier or AppriseNotifier(rules.channels),
                clock=clock or SystemClock(),
                metrics=metrics,
                build=build,
                settings=settings,
                wake_delivery=wake,
            )
            fleet.apply(rules)
            yield fleet
    finally:
        await store.close()
