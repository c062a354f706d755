"""Keeping the local copy of an account's activity ledger current, incrementally.

Each check reads newest-first down to `floor`: the previous cursor minus an overlap
window (late rows), or on first start the longest rule window (backfill, with no
per-item alerts for history). A window added or widened later reads the history it
lacks the same way, once: the cursor remembers since when the stored ledger is whole. Items are de-duplicated by identity as they are stored,
page by page, with the item rules each new one matches; the cursor moves only when
the check commits, together with the alerts it led to. A restart mid-backlog therefore
re-reads from the old cursor and neither skips nor double-counts.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

import structlog

from dialwatch.model import ActivityStats, LedgerItem
from dialwatch.rules.evaluate import history_needed, item_matches
from dialwatch.rules.schema import ItemRule, LedgerEvent, Rule, UsageItem
from dialwatch.store import Fence, LedgerCheckpoint, LedgerCursor, Store

log = structlog.get_logger("dialwatch.ledger")

# Items stored per transaction: few enough to bound memory during a backlog,
# many enough that commits do not dominate.
STORE_BATCH = 1000


class ActivitySource(Protocol):
    account: str

    def read_activity(
        self, floor: datetime, stats: ActivityStats, reach: datetime | None = None
    ) -> AsyncIterator[list[LedgerItem]]:
        """Every item at or after `floor`, newest first, in batches. With `reach`, no
        page is asked for once one reaches below it: the items of the pages read are
        still returned down to `floor` (a ledger read by page number reads it whole)."""
        ...


@dataclass(frozen=True)
class LedgerSync:
    new_items: int
    backfilled: bool
    newest: datetime
    keep_since: datetime
    stats: ActivityStats = field(default_factory=ActivityStats)
    covers_since: datetime | None = None  # the stored ledger is whole since then
    matched: frozenset[str] = frozenset()  # item rules that new items may have matched
    stored: bytes | None = None  # `fingerprint` of the last batch, every item of it stored

    def checkpoint(self, delivered_rules: tuple[str, ...]) -> LedgerCheckpoint:
        return LedgerCheckpoint(self.newest, self.keep_since, delivered_rules, self.covers_since)


PROGRESS_EVERY = 10_000  # items between two progress lines of a long read


async def sync_ledger(
    source: ActivitySource,
    store: Store,
    cursor: LedgerCursor | None,
    rules: tuple[Rule, ...],
    now: datetime,
    overlap: timedelta,
    fence: Fence | None = None,
    keep: timedelta = timedelta(0),
    sweep: bool = True,
    stored: bytes | None = None,
) -> LedgerSync:
    """Read what is new in the ledger into the store, and keep what the rules need and
    `keep` besides (the digests' periods), from `cursor` (the store's, as the check
    began); raises ProviderError.

    Late rows are looked for in the overlap on every page read anyway; pages that hold
    nothing but the overlap are asked for only when `sweep` is set (once per overlap,
    by the caller), so a busy account's check reads what is new, not ten minutes of it.
    A last batch whose fingerprint is `stored` (the previous sync's `stored`) is known
    to be in the store already, so a quiet account's check makes no trip to store it:
    stored items above the floor are never pruned (the cut is below every floor)."""
    account = source.account
    history = max(history_needed(rules, now), overlap, keep)
    backfill = cursor is None
    # Items from `news_from` on are new to the rules; older ones are only history.
    news_from = now - history if cursor is None else cursor.newest - overlap
    floor, covered = news_from, cursor.covers_since if cursor else None
    if cursor is not None and (covered is None or now - history < covered):
        # A window added or widened since the ledger was last read: fill it, once.
        floor = covered = min(news_from, now - history)
        log.info(
            "ledger.backfill",
            account=account,
            since=floor.isoformat(),
            why="a new or wider window needs history the stored ledger lacks",
        )
    item_rules: list[ItemRule] = [r for r in rules if isinstance(r, UsageItem | LedgerEvent)]
    matched: set[str] = set()

    async def store_items(items: list[LedgerItem]) -> int:
        """Store a batch, and for each item the item rules it matches (none while
        backfilling history, or for history read for a wider window)."""
        if backfill or not item_rules:
            return await store.add_ledger_items(account, items, None, fence)
        found = {}
        for item in items:
            if item.occurred_at < news_from:
                continue
            names = [rule.name for rule in item_rules if item_matches(rule, item)]
            if names:
                found[item.key] = names
                matched.update(names)
        return await store.add_ledger_items(account, items, found, fence)

    stats = ActivityStats()
    newest = cursor.newest if cursor else now
    new = 0
    pending: list[LedgerItem] = []
    read, reported = 0, 0
    reach = None if sweep or floor != news_from or cursor is None else cursor.newest
    async for batch in source.read_activity(floor, stats, reach):
        read += len(batch)
        if read - reported >= PROGRESS_EVERY and batch:
            # A first start reads weeks of history (spend_anomaly's baseline): say how far.
            reported = read
            log.info(
                "ledger.progress",
                account=account,
                items=read,
                pages=stats.requests,
                reached=batch[-1].occurred_at.isoformat(),
                reading_back_to=floor.isoformat(),
            )
        if batch:
            # The cursor never passes the check's own time: one item dated in the future
            # would otherwise push the next read's floor past everything before it.
            newest = max(newest, min(batch[0].occurred_at, now))
            for item in batch:
                if item.occurred_at <= now:
                    break
                log.warning(
                    "ledger.future_item",
                    account=account,
                    type=item.type,
                    occurred_at=item.occurred_at.isoformat(),
                    read_at=now.isoformat(),
                    why="dated after the check: stored, but the cursor stays at the check's time",
                )
        pending += batch
        # Bounded batches whatever a provider yields at once (a page-numbered history
        # comes whole): memory stays flat, and no statement outgrows the database's limits.
        while len(pending) >= STORE_BATCH:
            chunk, pending = pending[:STORE_BATCH], pending[STORE_BATCH:]
            new += await store_items(chunk)
    last = fingerprint(pending)
    if last != stored:
        new += await store_items(pending)
    # Keep what the window rules need, and everything the next read re-reads.
    keep_since = min(now - history, newest - overlap)
    covers_since = covered or floor  # until a commit prunes to keep_since
    log.debug(
        "ledger.synced",
        account=account,
        new_items=new,
        requests=stats.requests,
        backfill=backfill,
        floor=floor.isoformat(),
    )
    return LedgerSync(
        new, backfill, newest, keep_since, stats, covers_since, frozenset(matched), last
    )


def fingerprint(items: list[LedgerItem]) -> bytes:
    """The identity of a batch: its items' keys, hashed."""
    return hashlib.blake2b("\n".join(item.key for item in items).encode(), digest_size=16).digest()
