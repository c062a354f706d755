"""The outbox: notifications written before they are sent, and delivering them: send
what is due, record it after sending, retry with backoff.

What delivery needs of the store is `OutboxStore`; every backend's Store has it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from itertools import groupby
from typing import Protocol

import structlog

from dialwatch.delivery.messages import Message, Part, combine
from dialwatch.delivery.notifier import Notifier

log = structlog.get_logger("dialwatch.outbox")


@dataclass(frozen=True)
class OutboxEntry:
    """A notification for one channel, to be written before it is sent."""

    alert: str
    decision: str
    channel: str
    message: Message
    hold_until: datetime | None = None  # quiet hours on this channel end then
    episode: datetime | None = None  # when the firing it is about began
    grouped: bool = True  # joins other alerts' messages (group_wait); not for Alertmanager

    @property
    def part(self) -> Part:
        return Part(self.alert, self.decision, self.message, episode_key(self.episode))


def episode_key(began: datetime | None) -> str | None:
    return began.isoformat() if began else None


@dataclass(frozen=True)
class OutboxRow:
    id: int
    alert: str
    decision: str
    channel: str
    message: Message
    created_at: datetime
    expires_at: datetime
    attempts: int
    last_error: str | None
    delivered_at: datetime | None = None
    expired_at: datetime | None = None
    parts: tuple[Part, ...] = ()
    held: bool = False


class OutboxStore(Protocol):
    """The outbox's side of the Store, as delivery uses it. Several replicas may deliver
    from one outbox: a channel is claimed by one replica at a time (with an expiry, so
    a dead replica's claim passes to another), which keeps its messages in order and
    sends each once."""

    async def due(self, now: datetime) -> list[OutboxRow]:
        """Undelivered notifications of every channel whose oldest one is due, in order,
        of the channels this replica could claim."""
        ...

    async def still_claimed(self, channel: str) -> bool:
        """Whether this replica still holds `channel` (and extends the claim): checked
        before each send, so a replica that was paused past its claim sends nothing."""
        ...

    async def release_claim(self, channel: str) -> None: ...

    async def mark_delivered(self, row_id: int, now: datetime) -> None: ...

    async def mark_failed(self, row_id: int, error: str, retry_at: datetime) -> None: ...

    async def mark_expired(self, row_id: int, now: datetime, reason: str | None = None) -> None: ...

    async def keep_parts(self, row_id: int, parts: list[Part], message: Message) -> None:
        """Narrow a held message to the parts still worth sending."""
        ...

    async def is_firing(self, alert: str) -> bool:
        """Whether `alert` ("account/rule") is firing now."""
        ...

    async def was_announced(self, channel: str, alert: str, episode: str | None) -> bool:
        """Whether `channel` was sent `alert` as firing (first or reminder) in the firing
        `episode` (any firing, if None or for parts stored without one)."""
        ...


# The decision of a post that keeps a firing alert alive in Alertmanager (each check).
REFRESH = "refresh"
FIRST_RETRY = timedelta(seconds=30)
MAX_RETRY = timedelta(minutes=15)


async def _still_news(store: OutboxStore, row: OutboxRow) -> list[Part]:
    """The parts of a message held by quiet hours that still matter when they end: an
    alert that still fires, the resolution of one this channel was told about, and
    events (new ledger items), which stay news."""

    async def matters(part: Part) -> bool:
        if part.decision in ("first", "repeat", REFRESH):
            return await store.is_firing(part.alert)
        if part.decision == "resolved":
            return await store.was_announced(row.channel, part.alert, part.episode)
        return True

    return [part for part in row.parts if await matters(part)]


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


@dataclass
class Unrecorded:
    """Notifications this process sent but could not mark delivered, because the store
    failed right after the send (a lost connection, a locked or full disk). They are
    marked once the store answers and never sent again meanwhile: a store outage costs
    no duplicate, and a process that dies with some unmarked costs one each at most."""

    sent: dict[int, datetime] = field(default_factory=dict)  # row id -> when it was sent

    async def record(self, store: OutboxStore) -> None:
        for row_id, at in list(self.sent.items()):
            await store.mark_delivered(row_id, at)
            del self.sent[row_id]
            log.info("notify.recorded", row=row_id, why="sent before the state store failed")


async def deliver_due(
    store: OutboxStore, notifier: Notifier, now: datetime, unrecorded: Unrecorded | None = None
) -> DeliveryReport:
    """Try every due notification once. Channels are sent to concurrently; within a
    channel, in order, stopping at the first failure so messages are not reordered.
    Raises StateUnavailable if the store fails; what was sent by then is in `unrecorded`."""
    memo = unrecorded or Unrecorded()
    await memo.record(store)
    report = DeliveryReport()
    by_channel = groupby(
        sorted(await store.due(now), key=lambda r: (r.channel, r.id)), lambda r: r.channel
    )
    await asyncio.gather(
        *(
            _deliver_channel(store, notifier, list(rows), now, report, memo)
            for _, rows in by_channel
        )
    )
    return report


async def _deliver_channel(
    store: OutboxStore,
    notifier: Notifier,
    rows: list[OutboxRow],
    now: datetime,
    report: DeliveryReport,
    memo: Unrecorded,
) -> None:
    try:
        await _deliver_rows(store, notifier, rows, now, report, memo)
    finally:
        await store.release_claim(rows[0].channel)


async def _deliver_rows(
    store: OutboxStore,
    notifier: Notifier,
    rows: list[OutboxRow],
    now: datetime,
    report: DeliveryReport,
    memo: Unrecorded,
) -> None:
    for row in rows:
        bound = log.bind(channel=row.channel, alert=row.alert, decision=row.decision)
        if not await store.still_claimed(row.channel):
            bound.warning("notify.claim_lost", why="another replica delivers this channel now")
            return
        if row.held:
            kept = await _still_news(store, row)
            if not kept:
                await store.mark_expired(row.id, now, "dropped: cleared during quiet hours")
                bound.info("notify.dropped", why="cleared during quiet hours, never announced")
                continue
            if len(kept) < len(row.parts):
                for part in row.parts:
                    if part not in kept:
                        log.info(
                            "notify.dropped",
                            channel=row.channel,
                            alert=part.alert,
                            decision=part.decision,
                            why="cleared during quiet hours, never announced",
                        )
                account = kept[0].alert.partition("/")[0]
                message = combine(account, [(p.alert, p.message) for p in kept])
                await store.keep_parts(row.id, kept, message)
                row = replace(row, message=message, parts=tuple(kept))
        if now >= row.expires_at:
            await store.mark_expired(row.id, now)
            report.expired.append(row)
            bound.error(
                "notify.expired",
                attempts=row.attempts,
                last_error=row.last_error,
                title=row.message.title,
            )
            continue
        error = await notifier.send(row.channel, row.message, row.parts)
        if error is None:
            memo.sent[row.id] = now  # until it is marked: never sent twice by this process
            await store.mark_delivered(row.id, now)
            del memo.sent[row.id]
            report.delivered.append(row)
            bound.info("notify.sent", attempt=row.attempts + 1)
            continue
        retry_at = now + retry_delay(row.attempts + 1)
        await store.mark_failed(row.id, error, retry_at)
        report.failed.append((row, error))
        bound.warning(
            "notify.failed",
            attempt=row.attempts + 1,
            error=error,
            retry_at=retry_at.isoformat(),
            expires_at=row.expires_at.isoformat(),
        )
        return  # later messages wait behind this one, so they arrive in order


def by_channel(
    entries: Iterable[OutboxEntry], group_wait: timedelta
) -> dict[tuple[str, datetime | None, timedelta], list[Part]]:
    """A check's notifications as one message per channel, and per end of the quiet
    hours that hold some back, with the time each waits for more (none where
    Alertmanager groups). The stores queue these groups; `check --dry-run` shows them."""
    groups: dict[tuple[str, datetime | None, timedelta], list[Part]] = {}
    for e in entries:
        wait = group_wait if e.grouped else timedelta(0)
        groups.setdefault((e.channel, e.hold_until, wait), []).append(e.part)
    return groups


def group_decision(decisions: Sequence[str]) -> str:
    """A message's decision: its one part's, or "group"."""
    return decisions[0] if len(decisions) == 1 else "group"


def planned_messages(
    account: str, entries: Iterable[OutboxEntry]
) -> list[tuple[str, str, Message, datetime | None]]:
    """A check's outbox entries as the messages each channel would get, grouped as the
    stores queue them (`by_channel`, without the `group_wait` that joins later checks)."""
    return [
        (channel, group_decision([p.decision for p in parts]),
         combine(account, [(p.alert, p.message) for p in parts]), held)
        for (channel, held, _), parts in by_channel(entries, timedelta(0)).items()
    ]  # fmt: skip
