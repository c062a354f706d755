"""The fleet: the watchers of one service, one per account, and what they share; built
from settings (`open_fleet`), changed by a reload, told which accounts it holds; and
`check_once`, one round as `dialwatch check` runs it. The loops are in `runner.py`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import aiohttp
import structlog

from dialwatch import __version__
from dialwatch.alerting.routing import targets_for
from dialwatch.clock import Clock, ClockSteps, SystemClock
from dialwatch.cluster.outage import StateHealth, state_alert
from dialwatch.delivery.alertmanager import DIRECT_REPOST
from dialwatch.delivery.messages import Part
from dialwatch.delivery.notifier import ChannelNotifier, Notifier
from dialwatch.delivery.outbox import DeliveryReport, Unrecorded, deliver_due
from dialwatch.errors import ConfigError, DialwatchError
from dialwatch.logs import REDACTOR
from dialwatch.pipeline.cycle import UNHEALTHY_ALERT, CycleReport, Watcher, run_checks
from dialwatch.providers import DEFAULT_PROVIDER, open_provider
from dialwatch.providers.http import RequestLimit, Sleep
from dialwatch.rules.loading import load_rules
from dialwatch.rules.schema import DEFAULT_ACCOUNT, Account, AlertmanagerChannel, RulesFile
from dialwatch.settings import Settings
from dialwatch.store import Fence, Store, open_copy, open_store, shown_location
from dialwatch.units import format_duration
from dialwatch.web.metrics import Metrics

log = structlog.get_logger("dialwatch.fleet")


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
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # accounts or holdings
    reloaded: asyncio.Event = field(default_factory=asyncio.Event)  # the rules, by SIGHUP
    # The accounts this replica holds the lease of (-> token), and their check loops,
    # each with the future that halts it (an Event's wait would be a task per account).
    held: dict[str, int] = field(default_factory=dict)
    loops: dict[str, tuple[Watcher, asyncio.Future[None], asyncio.Task[None]]] = field(
        default_factory=dict
    )
    state: StateHealth = field(default_factory=StateHealth)
    lease_said: bool = False  # the first tick's leases are logged, even none
    unrecorded: Unrecorded = field(default_factory=Unrecorded)
    # After a step of the wall clock, what is pending is retried at once (see watch_clock).
    retry_pending: bool = False
    # Fresh installs' balance charts, rebuilt one account at a time: 10,000 at once
    # would take the CPU the first checks need.
    rebuilds: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    rebuilding: int = 0  # accounts whose rebuild waits for its turn or runs
    clock_steps: ClockSteps = field(init=False)

    def __post_init__(self) -> None:
        self.clock_steps = ClockSteps(self.clock)

    def count_rebuild(self, task: asyncio.Task[None]) -> None:
        """Count `task`, an account's rebuild, in `rebuilding` until it is over (done,
        failed or cancelled)."""
        self.rebuilding += 1
        task.add_done_callback(self._rebuilt)

    def _rebuilt(self, _: object) -> None:
        self.rebuilding -= 1

    def watch_clock(self) -> None:
        """Called by the loops. After a step of the wall clock the pending notifications
        are tried now: their retry times were set by the old clock, and a step back would
        stall them (and their channel's later messages) by as much as the step."""
        moved = self.clock_steps.step()
        if moved is not None:
            seconds = round(moved.total_seconds())  # the step, to the nearest second
            log.warning(
                "clock.stepped",
                by=("-" if seconds < 0 else "+") + format_duration(timedelta(seconds=abs(seconds))),
                then="pending notifications are tried now",
            )
            self.retry_pending = True
            self.wake_delivery.set()

    def apply(self, rules: RulesFile) -> None:
        """Run `rules` from now on: new and changed accounts get new watchers, removed
        ones stop; the account loops follow at once (see `run_service`)."""
        accounts = {a.name: a for a in accounts_of(rules, self.settings)}
        self.rules = rules
        if isinstance(self.notifier, ChannelNotifier):
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
        self.reloaded.set()

    def all(self) -> list[Watcher]:
        return list(self.watchers.values())

    def readiness_problem(self) -> str | None:
        """Why this replica is not ready, apart from its accounts' checks: the state
        store is unreachable, or it does not yet know which accounts it holds."""
        if self.state.error is not None:
            return f"the state store is unavailable ({self.state.error})"
        if not self.lease_said:
            return "starting: the first round of leases has not finished"
        return None

    def checked(self) -> list[Watcher]:
        """The watchers of the accounts this replica holds."""
        return [w for name, w in self.watchers.items() if name in self.held]

    def fence(self, held: dict[str, int]) -> list[Watcher]:
        """Fence every write of the accounts of `held` (account -> lease token); the
        others' watchers are fenced off. Returns the watchers of `held`."""
        for name, watcher in self.watchers.items():
            token = held.get(name)
            watcher.fence = Fence(self.settings.replica, token) if token else None
        return [w for name, w in self.watchers.items() if name in held]

    def hold(self, held: dict[str, int]) -> None:
        """From now on this replica checks exactly the accounts of `held`, each write
        fenced by its lease's token."""
        self.fence(held)
        if held != self.held or not self.lease_said:
            log.info("lease.held", replica=self.settings.replica, accounts=sorted(held))
            self.held, self.lease_said = dict(held), True
            self.changed.set()
        self.metrics.observe_leases(self.settings.replica, set(held), list(self.watchers))

    def lose(self, account: str) -> None:
        """A write found the lease on `account` taken over: stop checking it."""
        self.hold({name: token for name, token in self.held.items() if name != account})

    async def stop_checking(self, accounts: Sequence[str]) -> None:
        """Stop the check loops of `accounts` and wait until they have stopped."""
        stopping = [self.loops.pop(name) for name in accounts if name in self.loops]
        for _, halt, _ in stopping:
            if not halt.done():
                halt.set_result(None)
        await asyncio.gather(*(task for _, _, task in stopping), return_exceptions=True)

    def lease_tick(self) -> float:
        """How often leases are renewed and rebalanced: well inside their TTL, and no
        slower than the quickest account's interval (so a handover takes one)."""
        intervals = [w.interval.total_seconds() for w in self.watchers.values()]
        ttl = self.settings.lease_ttl.total_seconds()
        return max(0.5, min([ttl / 3, *intervals]))

    def state_ok(self, source: str) -> None:
        """A call of `source` (a loop: "leases", "delivery", "check:<account>") was
        served, or that loop stopped."""
        if not self.state.recovered(self.clock.now(), source):
            return
        self.metrics.observe_state(up=True)
        if self.state.alerted:
            self.state.alerted = False
            asyncio.get_running_loop().create_task(self._state_alert(firing=False))

    async def state_down(self, error: DialwatchError, source: str) -> None:
        """The store failed a call of `source`: say so once, and after `unhealthy_after`
        alert directly (the outbox is in the store), once per outage."""
        now = self.clock.now()
        self.state.failed(now, str(error), self.settings.replica, source)
        self.metrics.observe_state(up=False)
        if (
            not self.state.alerted
            and self.state.down_for(now) >= self.rules.defaults.unhealthy_after
        ):
            self.state.alerted, self.state.posted_at = True, now
            await self._state_alert(firing=True)
        elif self.state.alerted and now - (self.state.posted_at or now) >= DIRECT_REPOST:
            # Alertmanager resolves an alert that is not posted again: keep it alive.
            self.state.posted_at = now
            await self._state_alert(firing=True, alertmanager_only=True)

    async def _state_alert(self, *, firing: bool, alertmanager_only: bool = False) -> None:
        where = shown_location(self.settings.state.get_secret_value())
        message = state_alert(
            self.settings.replica, where, firing, self.state.since, self.clock.now()
        )
        parts = (Part(UNHEALTHY_ALERT, "first" if firing else "resolved", message),)
        channels = targets_for(self.rules, UNHEALTHY_ALERT, "watcher_unhealthy", "critical", "", "")
        for target in channels:
            kind = self.rules.channels.get(target.channel)
            if alertmanager_only and not isinstance(kind, AlertmanagerChannel):
                continue
            error = await self.notifier.send(target.channel, message, parts)
            if error is None:
                log.info("notify.sent", channel=target.channel, alert=UNHEALTHY_ALERT, direct=True)
            else:
                log.error(
                    "notify.failed", channel=target.channel, alert=UNHEALTHY_ALERT, error=error
                )

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


def accounts_named(rules: RulesFile, settings: Settings, names: Sequence[str]) -> list[Account]:
    """The accounts `names` lists (all for none); ConfigError naming any unknown one."""
    accounts = accounts_of(rules, settings)
    known = [a.name for a in accounts]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(
            f"no account named {', '.join(unknown)}; the accounts: {', '.join(known)}"
        )
    return [a for a in accounts if not names or a.name in names]


def only_accounts(rules: RulesFile, settings: Settings, names: Sequence[str]) -> RulesFile:
    """`rules` watching only the accounts `names` lists (all for none)."""
    accounts_named(rules, settings, names)
    if not names or not rules.accounts:
        return rules
    return rules.model_copy(
        update={"accounts": tuple(a for a in rules.accounts if a.name in names)}
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


@dataclass(frozen=True)
class Checked:
    """What `dialwatch check` did: a report per account it checked, the accounts it left
    to a running replica, and the delivery of what it queued."""

    reports: dict[str, CycleReport]
    skipped: tuple[str, ...]
    delivery: DeliveryReport


async def check_once(settings: Settings, rules: RulesFile, *, dry_run: bool) -> Checked:
    """Check every account once, as `dialwatch check`. A real check writes state, so it
    takes the lease of each account first and leaves those a running replica holds
    alone; a dry run checks them all on a copy of the state, which it neither writes,
    locks nor creates. Runs under a replica name of its own, so that it never renews or
    delivers as a running replica would."""
    settings = settings.model_copy(update={"replica_name": f"{settings.replica}-check"})
    async with open_fleet(settings, rules, copy=dry_run) as fleet:
        watchers, leases = fleet.all(), {}
        if not dry_run:
            leases = await fleet.store.acquire_leases(
                settings.replica, list(fleet.watchers), settings.lease_ttl
            )
            watchers = fleet.fence(leases)
        try:
            reports = await run_checks(watchers)
            delivery = DeliveryReport()
            if not dry_run:
                delivery = await deliver_due(fleet.store, fleet.notifier, fleet.clock.now())
        finally:
            await fleet.store.release_leases(settings.replica, list(leases))
    return Checked(
        {w.account: report for w, report in zip(watchers, reports, strict=True)},
        tuple(name for name in fleet.watchers if not dry_run and name not in leases),
        delivery,
    )


@contextlib.asynccontextmanager
async def open_fleet(
    settings: Settings,
    rules: RulesFile,
    *,
    clock: Clock | None = None,
    notifier: Notifier | None = None,
    sleep: Sleep = asyncio.sleep,
    interval: timedelta | None = None,
    copy: bool = False,
) -> AsyncIterator[Fleet]:
    """Build the service from settings: HTTP session, a provider per account, the state
    store and apprise. `interval` overrides every account's (the demo's quick pace);
    `copy` works on a private copy of the state in memory (a dry run)."""
    accounts_of(rules, settings)  # fails before anything is opened
    clock = clock or SystemClock()
    opened = open_copy if copy else open_store
    store = await opened(settings.state.get_secret_value(), settings.replica)
    metrics = Metrics()
    wake = asyncio.Event()
    try:
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"dialwatch/{__version__}"}
        ) as session:
            limits: dict[str, RequestLimit] = {}  # per provider, shared by its accounts

            def build(account: Account, rules: RulesFile, notifier: Notifier) -> Watcher:
                REDACTOR.add(account.api_key.get_secret_value())
                limit = limits.setdefault(
                    account.provider, RequestLimit(settings.api_concurrency, settings.api_rate)
                )
                return Watcher(
                    rules=rules,
                    source=open_provider(
                        account, session, sleep=sleep, observe=metrics.observe_api, limit=limit
                    ),
                    store=store,
                    notifier=notifier,
                    clock=fleet.clock,
                    interval=interval or account.interval or settings.interval,
                    outbox_expiry=settings.outbox_expiry,
                    status_page=settings.external_url,
                    ledger_overlap=settings.ledger_overlap,
                    wake_delivery=wake,
                    metrics=metrics,
                )

            fleet = Fleet(
                rules=rules,
                store=store,
                notifier=notifier or ChannelNotifier(rules.channels, clock),
                clock=clock,
                metrics=metrics,
                build=build,
                settings=settings,
                wake_delivery=wake,
            )
            fleet.apply(rules)
            yield fleet
    finally:
        await store.close()
