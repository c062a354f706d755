"""`dialwatch backtest`: every account (or those named) backtested at once over one
HTTP session, with a progress bar on a terminal; an account that cannot be read is
reported and the others still run."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import aiohttp
import structlog
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from dialwatch import __version__
from dialwatch.backtest.engine import AccountBacktest, backtest_account
from dialwatch.backtest.replay import steps
from dialwatch.backtest.report import Backtest
from dialwatch.backtest.suggest import as_yaml, suggest
from dialwatch.errors import ConfigError, ProviderError
from dialwatch.fleet import accounts_named
from dialwatch.logs import REDACTOR
from dialwatch.providers import open_provider
from dialwatch.rules.schema import Account, RulesFile
from dialwatch.settings import Settings
from dialwatch.units import format_duration, parse_duration

log = structlog.get_logger("dialwatch.backtest")
MAX_CHECKS = 1_000_000  # a year at one-minute checks is 525,600


def parse_range(since: str, until: str | None, now: datetime) -> tuple[datetime, datetime]:
    """`--until` (an ISO time; default now) and `--since` (a duration before it, or an
    ISO time)."""
    end = _time(until, "--until") if until else now
    try:
        start = end - parse_duration(since)
    except ValueError:
        start = _time(since, "--since")
    if start >= end:
        raise ConfigError(f"--since ({start:%Y-%m-%dT%H:%M:%SZ}) must be before --until")
    return start, end


def _time(text: str, flag: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"{flag}: {text!r} is neither a duration (30d, 12h) nor an ISO time "
            "(2026-11-01 or 2026-11-01T08:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def run_backtest(
    settings: Settings,
    rules: RulesFile,
    since: datetime,
    until: datetime,
    names: Sequence[str] = (),
    *,
    with_suggestions: bool = False,
    show_progress: bool = False,
    now: datetime | None = None,
) -> Backtest:
    accounts = accounts_named(rules, settings, names)
    for chosen_account in accounts:
        interval = chosen_account.interval or settings.interval
        if (until - since) / interval > MAX_CHECKS:
            raise ConfigError(
                f"{chosen_account.name}: {int((until - since) / interval):,} checks at its "
                f"interval of {format_duration(interval)}: backtest a shorter range "
                f"(at most {MAX_CHECKS:,} checks)"
            )
    result = Backtest(since, until, rules)
    current = now or datetime.now(UTC)
    with _progress(show_progress) as bar:
        async with aiohttp.ClientSession(
            headers={"User-Agent": f"dialwatch/{__version__}"}
        ) as session:

            async def one(account: Account) -> AccountBacktest | tuple[str, str, str]:
                REDACTOR.add(account.api_key.get_secret_value())
                task = bar.add_task(account.name, total=None, pages=0) if bar else None

                def progress(items: int, pages: int) -> None:
                    if bar is not None and task is not None:
                        bar.update(task, completed=items, pages=pages)

                source = open_provider(account, session, sleep=asyncio.sleep)
                interval = account.interval or settings.interval
                try:
                    return await backtest_account(
                        rules, source, since, until, steps(since, until, interval), current,
                        suggest=with_suggestions, progress=progress,
                    )  # fmt: skip
                except ProviderError as exc:
                    log.error("backtest.failed", account=account.name, error=str(exc))
                    return account.name, account.provider, REDACTOR.redact(f"{exc.reason}: {exc}")

            done = await asyncio.gather(*(one(a) for a in accounts))
    for outcome in done:
        if isinstance(outcome, AccountBacktest):
            result.accounts.append(outcome)
        else:
            result.failed.append(outcome)
    if with_suggestions:
        found, notes = [], []
        for done_account in result.accounts:
            rules_found, notes_found = suggest(done_account, rules)
            found += rules_found
            notes += notes_found
        result.suggestions = as_yaml(found, notes)
    return result


@contextlib.contextmanager
def _progress(show: bool) -> Iterator[Progress | None]:
    """A bar per account on a terminal (stderr): items and pages read."""
    if not show:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,} items, {task.fields[pages]} pages"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
        yield bar
