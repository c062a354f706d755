"""Running the service: the lease loop, a check loop per account this replica holds,
and outbox delivery beside them, until stopped. The fleet they run is `fleet.py`."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from typing import Any

import structlog

from dialwatch import __version__
from dialwatch.backtest.history import rebuild_balance
from dialwatch.cluster.leases import LeaseKeeper
from dialwatch.delivery.outbox import deliver_due
from dialwatch.errors import DialwatchError, LeaseLost, StateUnavailable
from dialwatch.fleet import Fleet
from dialwatch.pipeline.cycle import Watcher, run_cycle
from dialwatch.store import shown_location

log = structlog.get_logger("dialwatch.runner")

SHUTDOWN_GRACE = 5.0  # seconds a check or a send in flight may take after SIGTERM
START_STEP_S = 0.05  # at most this between two accounts' first checks


async def run_service(fleet: Fleet, stop: asyncio.Event) -> None:
    """Check, on its own schedule, each account whose lease this replica holds, until
    `stop` is set; keep the leases and deliver the outbox alongside. A slow or failing
    account never delays another. On the way out the leases are given back, so other
    replicas take the accounts over at their next tick."""
    # A restart is often the fix for a broken channel: try what is pending at once.
    await fleet.store.retry_now(fleet.clock.now())
    log.info(
        "service.started",
        version=__version__,
        replica=fleet.settings.replica,
        state=shown_location(fleet.settings.state.get_secret_value()),
        accounts={name: w.provider for name, w in fleet.watchers.items()},
        rules=[r.name for r in fleet.rules.rules],
        channels=list(fleet.rules.channels),
        pending_notifications=await fleet.store.pending_count(),
    )
    keeper = LeaseKeeper(fleet.store, fleet.settings.replica, fleet.settings.lease_ttl)
    delivery = asyncio.create_task(_delivery_loop(fleet, stop))
    leases = asyncio.create_task(_lease_loop(fleet, keeper, stop))
    while not stop.is_set():
        fleet.changed.clear()
        for name, (watcher, _, task) in list(fleet.loops.items()):
            if fleet.watchers.get(name) is not watcher or name not in fleet.held or task.done():
                await fleet.stop_checking([name])
        starting = [
            (name, watcher)
            for name, watcher in fleet.watchers.items()
            if name in fleet.held and name not in fleet.loops
        ]
        for k, (name, watcher) in enumerate(starting):
            # Spread over the interval: many accounts never start at the same moment.
            step_s = min(START_STEP_S, watcher.interval.total_seconds() / len(starting))
            halt = asyncio.get_running_loop().create_future()
            task = asyncio.create_task(_account_loop(fleet, watcher, halt, k * step_s))
            fleet.loops[name] = (watcher, halt, task)
            if k % 100 == 99:
                await asyncio.sleep(0)  # 10,000 loops to start: let the others run between
        # What lives now (the fleet, its rules, the modules) stays: the collector need
        # not walk it again. At 10,000 accounts a full collection that does stalls the
        # event loop for a second and more.
        gc.freeze()
        await _first(stop.wait(), fleet.changed.wait())
    await fleet.stop_checking(list(fleet.loops))
    await _until_done_or_stopped(delivery, stop)
    await _until_done_or_stopped(leases, stop)
    try:
        await keeper.leave()
        pending = await fleet.store.pending_count()
    except StateUnavailable:
        pending = None  # the leases lapse by themselves after DIALWATCH_LEASE_TTL
    log.info("service.stopped", pending_notifications=pending)


async def _lease_loop(fleet: Fleet, keeper: LeaseKeeper, stop: asyncio.Event) -> None:
    """Hold this replica's share of the leases; hand the fences to the watchers."""
    loop = asyncio.get_running_loop()
    ttl_s = fleet.settings.lease_ttl.total_seconds()
    renewed_at: float | None = None
    while not stop.is_set():
        fleet.reloaded.clear()  # before the round: a reload during it brings the next at once
        try:
            share = await keeper.tick(list(fleet.watchers))
            renewed_at = loop.time()
            fleet.state_ok("leases")
            await fleet.stop_checking(share.surplus)
            await keeper.give_back(share.surplus)
            fleet.hold(share.held)
        except StateUnavailable as exc:
            await fleet.state_down(exc, "leases")
            if renewed_at is not None and loop.time() - renewed_at >= ttl_s:
                # Unrenewed leases have expired: other replicas may hold them now.
                fleet.hold({})
        # A reload may add accounts to take; a change of holdings is this loop's own doing.
        await _first(stop.wait(), fleet.reloaded.wait(), limit_s=fleet.lease_tick())


async def _account_loop(
    fleet: Fleet, watcher: Watcher, halt: asyncio.Future[None], delay_s: float = 0.0
) -> None:
    """Check `watcher`'s account until `halt` is done. Between checks the loop waits on
    `halt` itself, with a timeout: no task of its own (at 10,000 accounts, an Event's
    wait in a task of its own would hold 13 MB more)."""
    source = f"check:{watcher.account}"  # how this loop reports the store's health
    try:
        if delay_s:
            await asyncio.wait({halt}, timeout=delay_s)
        await _check_until_halted(fleet, watcher, halt, source)
    finally:
        fleet.state_ok(source)  # a loop that stopped no longer holds an outage open


async def _check_until_halted(
    fleet: Fleet, watcher: Watcher, halt: asyncio.Future[None], source: str
) -> None:
    loop = asyncio.get_running_loop()
    step_s = watcher.interval.total_seconds()
    rebuilding: asyncio.Task[None] | None = None
    try:
        while not halt.done():
            started = loop.time()
            fleet.watch_clock()
            watcher.health.loop_tick = watcher.clock.now()
            check = asyncio.create_task(run_cycle(watcher))
            await _until_done_or_stopped(check, halt, expected=(LeaseLost, StateUnavailable))
            if not check.cancelled() and isinstance(error := check.exception(), LeaseLost):
                log.warning("lease.lost", account=watcher.account, why="another replica holds it")
                fleet.lose(watcher.account)
                return
            if not check.cancelled() and isinstance(error, StateUnavailable):
                await fleet.state_down(error, source)
            elif not check.cancelled() and error is None:
                fleet.state_ok(source)
                if rebuilding is None:  # once per start, off the check's path
                    rebuilding = asyncio.create_task(_rebuild_balance(watcher, fleet.rebuilds))
                    fleet.count_rebuild(rebuilding)
            # The finished check holds its whole report: not kept through the wait (at
            # 10,000 accounts, that alone is 100 MB).
            del check
            error = None
            # Drift-free: the next check starts `interval` after this one started.
            await asyncio.wait({halt}, timeout=max(0.0, step_s - (loop.time() - started)))
    finally:
        if rebuilding is not None:
            rebuilding.cancel()


async def _rebuild_balance(watcher: Watcher, turns: asyncio.Semaphore) -> None:
    """Fill a fresh install's balance chart from the ledger, when its turn comes; a
    failure only logs."""
    try:
        async with turns:
            added = await rebuild_balance(
                watcher.account,
                watcher.provider,
                watcher.source,
                watcher.store,
                watcher.clock.now(),
            )
    except DialwatchError as exc:
        log.warning("balance.rebuild_failed", account=watcher.account, error=str(exc))
        return
    if added:
        log.info("balance.rebuilt", account=watcher.account, readings=added, source="ledger")


async def _first(*waits: Any, limit_s: float | None = None) -> None:
    """Wait until the first of `waits` (coroutines) finishes, or `limit_s` seconds."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    await asyncio.wait(tasks, timeout=limit_s, return_when=asyncio.FIRST_COMPLETED)
    for task in tasks:
        task.cancel()


async def _until_done_or_stopped(
    task: asyncio.Task[Any],
    stop: asyncio.Event | asyncio.Future[None],
    expected: tuple[type[BaseException], ...] = (),
) -> None:
    """Await `task`; once `stop` is set (an Event) or done (a future), give it
    SHUTDOWN_GRACE seconds, then cancel it. An error of the `expected` kinds is left to
    the caller; any other is logged."""
    stopping = stop if isinstance(stop, asyncio.Future) else asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if stopping is not stop:
        stopping.cancel()
    if task not in done:
        done, _ = await asyncio.wait({task}, timeout=SHUTDOWN_GRACE)
        if not done:
            log.warning("service.cancelled_in_flight", grace_s=SHUTDOWN_GRACE)
            task.cancel()
            await asyncio.wait({task})
    error = None if task.cancelled() else task.exception()
    if error is not None and not isinstance(error, expected):
        # A bug, not an API failure (those are handled in the cycle): log it, keep running.
        log.error("service.task_failed", error=repr(error), exc_info=error)


async def _delivery_loop(fleet: Fleet, stop: asyncio.Event) -> None:
    while not stop.is_set():
        fleet.wake_delivery.clear()
        wait = 30.0
        fleet.watch_clock()
        try:
            if fleet.retry_pending:
                await fleet.store.retry_now(fleet.clock.now())
                fleet.retry_pending = False
            delivery = await deliver_due(
                fleet.store, fleet.notifier, fleet.clock.now(), fleet.unrecorded
            )
            fleet.metrics.observe_delivery(delivery)
            next_at = await fleet.store.next_attempt_at()
            fleet.state_ok("delivery")
            if next_at is not None:
                wait = min(wait, max(0.2, (next_at - fleet.clock.now()).total_seconds()))
        except StateUnavailable as exc:
            await fleet.state_down(exc, "delivery")
            wait = fleet.lease_tick()
        except Exception:  # one bad send must not end delivery for good
            log.exception("notify.loop_error")
        await _first(fleet.wake_delivery.wait(), stop.wait(), limit_s=wait)
    # Last chance for what the final checks queued.
    with contextlib.suppress(StateUnavailable):
        await deliver_due(fleet.store, fleet.notifier, fleet.clock.now(), fleet.unrecorded)
