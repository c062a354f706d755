"""Running the service: the thin loop around `run_cycle`, outbox delivery beside it,
reloading the rules, and building a Watcher from settings."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from dialwatch import __version__
from dialwatch.api_client import ApiClient, RetryPolicy, Sleep
from dialwatch.clock import Clock, SystemClock
from dialwatch.config import RulesFile, load_rules
from dialwatch.dial import DialProvider
from dialwatch.errors import ConfigError
from dialwatch.logs import REDACTOR
from dialwatch.metrics import Metrics
from dialwatch.notify import AppriseNotifier, Notifier
from dialwatch.outbox import deliver_due
from dialwatch.service import Watcher, run_cycle
from dialwatch.settings import Settings
from dialwatch.store import Store

log = structlog.get_logger("dialwatch.runner")

SHUTDOWN_GRACE = 5.0  # seconds a check or a send in flight may take after SIGTERM


def reload_rules(watcher: Watcher, path: Path) -> bool:
    """Swap in the rules file at `path`; an invalid file is rejected, the old rules stay."""
    try:
        rules = load_rules(path)
    except ConfigError as exc:
        log.error(
            "config.reload_rejected",
            file=str(path),
            errors=[str(issue) for issue in exc.issues] or [str(exc)],
            kept="the previous rules keep running",
        )
        return False
    watcher.rules = rules
    if isinstance(watcher.notifier, AppriseNotifier):
        watcher.notifier = watcher.notifier.with_channels(rules.channels)
    log.info(
        "config.reloaded",
        file=str(path),
        rules=[rule.name for rule in rules.rules],
        channels=list(rules.channels),
    )
    return True


async def run_service(watcher: Watcher, interval: timedelta, stop: asyncio.Event) -> None:
    """Check every `interval` until `stop` is set; deliver the outbox alongside."""
    # A restart is often the fix for a broken channel: try what is pending at once.
    watcher.store.retry_now(watcher.clock.now())
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
        watcher.health.loop_tick = watcher.clock.now()
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
            delivery = await deliver_due(watcher.store, watcher.notifier, now)
            watcher.metrics.observe_delivery(delivery)
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
    metrics = Metrics()
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
                observe=metrics.observe_api,
            )
            yield Watcher(
                rules=rules,
                source=DialProvider("dial", client),
                store=store,
                notifier=notifier or AppriseNotifier(rules.channels),
                clock=clock or SystemClock(),
                outbox_expiry=settings.outbox_expiry,
                ledger_overlap=settings.ledger_overlap,
                metrics=metrics,
            )
    finally:
        store.close()
