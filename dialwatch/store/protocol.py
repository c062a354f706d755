"""The one interface to dialwatch's durable state. The pipeline, the CLI and the web
pages use it; every SQL statement lives behind it, in a backend module.

A check's alert states and the notifications they lead to are committed in one
transaction (`commit_check`), before anything is sent; a notification is marked
delivered only after it was sent. A crash at any point therefore repeats a message at
worst, never loses one. Every method is a coroutine: no backend blocks the event loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import NamedTuple, Protocol

from dialwatch.alerting.lifecycle import AlertState
from dialwatch.alerting.silences import Silence
from dialwatch.delivery.outbox import OutboxEntry, OutboxRow, OutboxStore
from dialwatch.model import ItemMatches, LedgerItem, SpendSummary
from dialwatch.rules.schema import Match
from dialwatch.units import Money


class LedgerCursor(NamedTuple):
    """How far a committed check has read an account's ledger."""

    newest: datetime  # the newest instant read up to
    covers_since: datetime | None  # every item since then is stored (None: not known)


class Known(NamedTuple):
    """What a check starts from, read in one trip to the store."""

    cursor: LedgerCursor | None
    states: dict[str, AlertState]
    silences: list[Silence]
    failing_since: datetime | None
    balance: Money | None  # the previous check's
    history_at: datetime | None  # the newest balance-history point's
    waiting: frozenset[str]  # item rules with matched items not yet told
    spent: tuple[tuple[int, int], ...]  # each window asked for: its spend and item count


class SpendQuery(NamedTuple):
    """Spend items in `currency` in [since, until) (no until: to now) that `match` selects."""

    account: str
    since: datetime
    until: datetime | None
    currency: str
    match: Match | None = None


@dataclass(frozen=True)
class LedgerCheckpoint:
    """What a check read of the ledger, committed with its alerts."""

    newest: datetime
    keep_since: datetime  # items older than this are no longer needed by any rule
    delivered_rules: tuple[str, ...]  # item rules whose matches became messages
    covers_since: datetime | None = None  # every item since then is stored (before a prune)


@dataclass(frozen=True)
class Fence:
    """A replica's right to write for one account: the token of its lease. A write that
    carries a fence commits only while the token is current, else raises LeaseLost."""

    replica: str
    token: int


@dataclass(frozen=True)
class ReplicaInfo:
    """A replica of the cluster as the database last saw it."""

    name: str
    last_seen: datetime
    accounts: tuple[str, ...]  # the accounts whose lease it holds


class Store(OutboxStore, Protocol):
    """All of dialwatch's state: alerts, balances, the ledger, silences, digests and the
    outbox (whose delivery side is `OutboxStore`)."""

    async def close(self) -> None: ...

    async def in_memory_copy(self) -> Store:
        """A private copy of this state, as of now, in memory (the caller closes it). A
        dry run works on it: nothing it writes reaches this state, and making it takes
        no write lock here, so a dry run never delays a running service."""
        ...

    # What a check reads before it decides.
    async def known(self, account: str, now: datetime, windows: Sequence[SpendQuery] = ()) -> Known:
        """The ledger cursor, alert states, silences, failing-since, last balance and
        balance-history point of `account`, the item rules with matches waiting, and
        the spend of `windows` (as `spend_in` and `spend` count it), in one trip (most
        are also a method of their own)."""
        ...

    async def alert_states(self, account: str) -> dict[str, AlertState]: ...

    async def last_balance(self, account: str) -> Money | None: ...

    async def silences(self, now: datetime) -> list[Silence]:
        """Silences in force at `now`, oldest first; expired ones drop out by themselves."""
        ...

    # What a check writes, at once.
    async def commit_check(
        self,
        account: str,
        now: datetime,
        states: dict[str, AlertState],
        outbox: Iterable[OutboxEntry],
        expires_at: datetime,
        balance: Money | None = None,
        ledger: LedgerCheckpoint | None = None,
        failing_since: datetime | None = None,
        group_wait: timedelta = timedelta(0),
        decisions: Iterable[tuple[str, str]] = (),
        digests: Iterable[tuple[str, datetime]] = (),
        fence: Fence | None = None,
        prune: bool = True,
        known: Known | None = None,
    ) -> None:
        """Record one check's outcome and queue its notifications, atomically.

        A channel's notifications of one check become one message. With `group_wait`,
        that message waits so long, and later checks add to it until it goes out.
        With a `fence`, nothing is written unless its lease is current (LeaseLost).
        `states` may hold only the alerts whose state changed. With `prune`, what no
        longer counts is deleted too (see `store.sql.check_writes`). With `known` (what
        the check started from), what is unchanged is not written again, and a check
        that changed nothing costs no trip.
        """
        ...

    # The ledger.
    async def ledger_cursor(self, account: str) -> LedgerCursor | None:
        """How far committed checks have read the ledger (None: never)."""
        ...

    async def add_ledger_items(
        self,
        account: str,
        items: list[LedgerItem],
        matches: Mapping[str, Sequence[str]] | None,
        fence: Fence | None = None,
    ) -> int:
        """Store items not seen before, and for each new one the item rules it matches
        (`matches`: item key -> rule names; None while backfilling history). Returns
        how many were new. Until the check commits its cursor, a crash only means these
        are read again. Fenced like `commit_check`."""
        ...

    async def spend(
        self,
        account: str,
        since: datetime,
        currency: str,
        match: Match | None = None,
        until: datetime | None = None,
        contributors: bool = True,
    ) -> SpendSummary:
        """Spend in [since, until) among items that `match` selects, with the biggest
        contributors unless `contributors` is false."""
        ...

    async def spend_total(self, account: str, since: datetime, currency: str) -> Money: ...

    async def spend_in(self, query: SpendQuery) -> Money:
        """The spend `query` selects (one query, no contributors)."""
        ...

    async def spend_by(self, query: SpendQuery, by: str) -> dict[str, int]:
        """The spend `query` selects per number, fare or destination prefix (`by`)."""
        ...

    async def spend_per_hour(self, account: str, since: datetime, currency: str) -> dict[int, int]:
        """Spend since `since` per hour since the epoch (cents)."""
        ...

    async def ledger_starts(self, account: str) -> datetime | None:
        """When the account's oldest stored ledger item happened (None: none stored)."""
        ...

    async def spend_currency(self, account: str) -> str:
        """The currency of the account's latest spend item (USD before there is one)."""
        ...

    async def spend_by_day(self, account: str, since: datetime, currency: str) -> dict[str, Money]:
        """Spend in `currency` per UTC day since `since`'s day."""
        ...

    async def item_matches(self, account: str, rule: str, limit: int) -> ItemMatches:
        """New items that matched `rule` and are not notified yet: all counted, and the
        first `limit` of them (oldest first) to show."""
        ...

    # History, for digests and the status page.
    async def digest_sent_for(self, name: str) -> datetime | None: ...

    async def fired_between(self, account: str, since: datetime, until: datetime) -> dict[str, int]:
        """How often each rule fired (first notifications) in [since, until)."""
        ...

    async def balance_at(self, account: str, moment: datetime) -> Money | None:
        """The balance recorded last at or before `moment` (15-minute resolution)."""
        ...

    async def balance_history(
        self, account: str, since: datetime
    ) -> list[tuple[datetime, Money]]: ...

    # Silences, from the CLI.
    async def add_balance_history(self, account: str, points: list[tuple[datetime, Money]]) -> int:
        """Add balance readings rebuilt from the ledger (never replacing a recorded one);
        returns how many were new."""
        ...

    async def add_silence(
        self, rule: str, account: str | None, ends_at: datetime, reason: str, now: datetime
    ) -> int: ...

    async def end_silence(self, silence_id: int, now: datetime) -> bool:
        """End a silence now; False if there is no such silence in force."""
        ...

    # The outbox, beyond delivery.
    async def next_attempt_at(self) -> datetime | None:
        """When the earliest channel is next due, if anything is undelivered."""
        ...

    async def retry_now(self, now: datetime) -> int:
        """Make every undelivered notification due now (at start-up), except those that
        quiet hours hold; returns how many."""
        ...

    async def recent_notifications(self, limit: int, search: str | None = None) -> list[OutboxRow]:
        """The newest notifications, delivered or not, newest first; with `search`,
        those whose title, channel or alert contains it (any case)."""
        ...

    async def pending_by_channel(self) -> dict[str, int]: ...

    async def waiting_since_by_channel(self) -> dict[str, datetime]:
        """When each channel's oldest undelivered notification was written, of those
        not held by quiet hours."""
        ...

    async def pending_count(self) -> int: ...

    # The cluster: replicas, and a lease per account (times by the database's clock).
    async def heartbeat(self, replica: str) -> None:
        """Record that `replica` is alive now."""
        ...

    async def replicas(self, seen_within: timedelta) -> list[ReplicaInfo]:
        """The replicas seen within `seen_within`, with the accounts each holds."""
        ...

    async def leave(self, replica: str) -> None:
        """`replica` stops: its leases are released and it is no longer listed."""
        ...

    async def renew_leases(self, replica: str, ttl: timedelta) -> dict[str, int]:
        """Extend every lease `replica` holds by `ttl`; returns account -> token."""
        ...

    async def free_accounts(self, accounts: Sequence[str]) -> list[str]:
        """Those of `accounts` that no replica holds (no lease, or an expired one)."""
        ...

    async def acquire_leases(
        self, replica: str, accounts: Sequence[str], ttl: timedelta
    ) -> dict[str, int]:
        """Take the leases of those `accounts` that are still free, each with a new,
        larger token; returns what was taken (another replica may win a race)."""
        ...

    async def release_leases(self, replica: str, accounts: Sequence[str]) -> None:
        """Let go of these leases now (graceful handover); the next holder's token grows."""
        ...
