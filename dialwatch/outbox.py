"""Delivering the outbox: send what is due, record it after sending, retry with backoff."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import groupby

import structlog

from dialwatch.messages import combine
from dialwatch.notify import Notifier
from dialwatch.store import OutboxRow, Part, Store

log = structlog.get_logger("dialwatch.outbox")

FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(minutes=15)


def _still_news(store: Store, row: OutboxRow) -> list[Part]:
    """The parts of a message held by quiet hours that still matter when they end: an
    alert that still fires, the resolution of one this channel was told about, and
    events (new ledger items), which stay news."""

    def matters(part: Part) -> bool:
        if part.decision in ("first", "repeat"):
            return store.is_firing(part.alert)
        if part.decision == "resolved":
            return store.was_announced(row.channel, part.alert)
        return True

    return [part for part in row.parts if matters(part)]


def retry_delay(attempts: int) -> timedelta:
    """30s, 1m, 2m, 4m ... capped at 15m, after the `attempts`-th failure."""
    doublings = min(max(0, attempts - 1), 10)  # 30s * 2**10 is well past the cap
    delay: timedelta = FIRST_RETRY * 2**doublings
    return min(MAX_RETRY, delay)


@dataclass
class DeliveryReport:
    delivered: list[OutboxRow] = field(default_factory=list)
    failed: list[tuple[OutboxRow, str]] = field(default_factory=list)
    expired: list[OutboxRow] = field(default_factory=list)


async def deliver_due(store: Store, notifier: Notifier, now: datetime) -> DeliveryReport:
    """Try every due notification once. Channels are sent to concurrently; within a
    channel, in order, stopping at the first failure so messages are not reordered."""
    report = DeliveryReport()
    by_channel = groupby(
        sorted(store.due(now), key=lambda r: (r.channel, r.id)), lambda r: r.channel
    )
    await asyncio.gather(
        *(_deliver_channel(store, notifier, list(rows), now, report) for _, rows in by_channel)
    )
    return report


async def _deliver_channel(
    store: Store, notifier: Notifier, rows: list[OutboxRow], now: datetime, report: DeliveryReport
) -> None:
    for row in rows:
        bound = log.bind(channel=row.channel, alert=row.alert, decision=row.decision)
        if row.held:
            kept = _still_news(store, row)
            if not kept:
                store.mark_expired(row.id, now, "dropped: cleared during quiet hours")
                bound.info("notify.dropped", why="cleared during quiet hours, never announced")
                continue
            if len(kept) < len(row.parts):
                account = kept[0].alert.partition("/")[0]
                message = combine(account, [(p.alert, p.message) for p in kept])
                store.keep_parts(row.id, kept, message)
                row = replace(row, message=message, parts=tuple(kept))
        if now >= row.expires_at:
            store.mark_expired(row.id, now)
            report.expired.append(row)
            bound.error(
                "notify.expired",
                attempts=row.attempts,
                last_error=row.last_error,
                title=row.message.title,
            )
            continue
        error = await notifier.send(row.channel, row.message)
        if error is None:
            store.mark_delivered(row.id, now)
            report.delivered.append(row)
            bound.info("notify.sent", attempt=row.attempts + 1)
            continue
        retry_at = now + retry_delay(row.attempts + 1)
        store.mark_failed(row.id, error, retry_at)
        report.failed.append((row, error))
        bound.warning(
            "notify.failed",
            attempt=row.attempts + 1,
            error=error,
            retry_at=retry_at.isoformat(),
            expires_at=row.expires_at.isoformat(),
        )
        return  # later messages wait behind this one, so they arrive in order
