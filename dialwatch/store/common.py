"""What both SQL backends do the same way: every method that is a single statement or
two, written once, with `?` placeholders. A backend's Database supplies `_all`, `_one`
and `_write` (PostgreSQL's read `?` as `%s`) and its clock; the methods that differ
(a check's commit, the ledger batch, claiming the outbox, taking leases) are its own."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any, ClassVar

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.alerting.silences import Silence
from dialwatch.clock import from_iso, from_micros, to_iso, to_micros
from dialwatch.delivery.messages import Message, Part
from dialwatch.delivery.outbox import REFRESH, OutboxRow
from dialwatch.model import SPEND_TYPES, SpendSummary
from dialwatch.rules.schema import Match
from dialwatch.store.protocol import Known, LedgerCursor, SpendQuery
from dialwatch.store.sql import (
    CLAIM_TTL,
    HISTORY_STEP_US,
    NEXT,
    OUTBOX_COLUMNS,
    TOP,
    UNDELIVERED,
    alert_state,
    outbox_row,
    part_value,
    spend_filter,
    window_sum,
)
from dialwatch.units import Money

Row = tuple[Any, ...]


def micros(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


SPEND_BY = {"number": "number", "fare": "COALESCE(fare, description)",
            "prefix": "substr(number, 1, 5)"}  # fmt: skip


_CURSOR = "SELECT newest, covers_since FROM ledger_cursor WHERE account = ?"
_FAILING = "SELECT since FROM failing WHERE account = ?"
_BALANCE = "SELECT cents, currency FROM balances WHERE account = ?"
_CHARTED = "SELECT MAX(at) FROM balance_history WHERE account = ?"
_WAITING = "SELECT DISTINCT rule FROM item_matches WHERE account = ?"
_STATES = (
    "SELECT rule, status, active_since, last_notified, notifications FROM alerts WHERE account = ?"
)
_SILENCES = (
    "SELECT id, rule, account, ends_at, reason, created_at FROM silences WHERE ends_at > ? "
    "ORDER BY id"
)


def _cursor(rows: list[Row]) -> LedgerCursor | None:
    if not rows:
        return None
    newest, covers = rows[0]
    return LedgerCursor(from_iso(newest), from_iso(covers) if covers else None)


def _states(rows: list[Row]) -> dict[str, AlertState]:
    return {rule: alert_state(*state) for rule, *state in rows}


def _silences(rows: list[Row]) -> list[Silence]:
    return [
        Silence(id, rule, account, from_iso(ends), reason, from_iso(created))
        for id, rule, account, ends, reason, created in rows
    ]


def _failing(rows: list[Row]) -> datetime | None:
    return from_iso(rows[0][0]) if rows else None


def _balance(rows: list[Row]) -> Money | None:
    return Money(int(rows[0][0]), rows[0][1]) if rows else None


def _charted(rows: list[Row]) -> datetime | None:
    return from_micros(int(rows[0][0])) if rows and rows[0][0] is not None else None


def _sums(rows: list[Row]) -> tuple[int, int]:
    """A window's (spend, items) row."""
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


class SqlTables(ABC):
    """The shared half of a SQL Store."""

    now_us: ClassVar[str]  # SQL for the database's clock, in microseconds since the epoch
    postgres: ClassVar[bool] = False  # globs as regular expressions (no GLOB)
    replica: str

    @abstractmethod
    async def _all(self, sql: str, params: Any = ()) -> list[Row]: ...

    @abstractmethod
    async def _one(self, sql: str, params: Any = ()) -> Row | None: ...

    @abstractmethod
    async def _write(self, sql: str, params: Any = ()) -> int:
        """One statement, committed; returns how many rows it touched."""

    @abstractmethod
    async def _reads(self, reads: list[tuple[str, Any]]) -> list[list[Row]]:
        """Several SELECTs in one trip to the database."""

    # What a check starts from: each read alone, or all in one trip (`known`).
    async def known(self, account: str, now: datetime, windows: Sequence[SpendQuery] = ()) -> Known:
        reads = [
            (_CURSOR, (account,)),
            (_STATES, (account,)),
            (_SILENCES, (to_iso(now),)),
            (_FAILING, (account,)),
            (_BALANCE, (account,)),
            (_CHARTED, (account,)),
            (_WAITING, (account,)),
            *(self._window_read(q) for q in windows),
        ]
        cursor, states, silences, failing, balance, charted, waiting, *spent = await self._reads(
            reads
        )
        return Known(
            _cursor(cursor), _states(states), _silences(silences), _failing(failing),
            _balance(balance), _charted(charted), frozenset(rule for (rule,) in waiting),
            tuple(_sums(rows) for rows in spent),
        )  # fmt: skip

    async def ledger_cursor(self, account: str) -> LedgerCursor | None:
        return _cursor(await self._all(_CURSOR, (account,)))

    async def alert_states(self, account: str) -> dict[str, AlertState]:
        return _states(await self._all(_STATES, (account,)))

    async def silences(self, now: datetime) -> list[Silence]:
        return _silences(await self._all(_SILENCES, (to_iso(now),)))

    async def last_balance(self, account: str) -> Money | None:
        return _balance(await self._all(_BALANCE, (account,)))

    # Digests, balance history, silences.
    async def digest_sent_for(self, name: str) -> datetime | None:
        row = await self._one("SELECT sent_for FROM digests WHERE name = ?", (name,))
        return from_iso(row[0]) if row else None

    async def fired_between(self, account: str, since: datetime, until: datetime) -> dict[str, int]:
        rows = await self._all(
            "SELECT rule, COUNT(*) FROM alert_log WHERE account = ? AND decision = 'first' "
            "AND at >= ? AND at < ? GROUP BY rule",
            (account, to_iso(since), to_iso(until)),
        )
        return dict(rows)

    async def balance_at(self, account: str, moment: datetime) -> Money | None:
        row = await self._one(
            "SELECT cents, currency FROM balance_history WHERE account = ? AND at <= ? "
            "ORDER BY at DESC LIMIT 1",
            (account, to_micros(moment)),
        )
        return Money(int(row[0]), row[1]) if row else None

    async def balance_history(self, account: str, since: datetime) -> list[tuple[datetime, Money]]:
        rows = await self._all(
            "SELECT at, cents, currency FROM balance_history WHERE account = ? AND at >= ? "
            "ORDER BY at",
            (account, to_micros(since)),
        )
        return [(from_micros(at), Money(int(cents), currency)) for at, cents, currency in rows]

    async def add_balance_history(self, account: str, points: list[tuple[datetime, Money]]) -> int:
        """Readings from before the first recorded one (rebuilt from the ledger), one
        per 15-minute step; a step already recorded is kept as it is."""
        rows = {to_micros(at) // HISTORY_STEP_US * HISTORY_STEP_US: money for at, money in points}
        if not rows:
            return 0
        marks = ", ".join("(?, ?, ?, ?)" for _ in rows)
        values = [v for at, m in rows.items() for v in (account, at, m.cents, m.currency)]
        return await self._write(
            f"INSERT INTO balance_history (account, at, cents, currency) VALUES {marks} "
            "ON CONFLICT (account, at) DO NOTHING",
            values,
        )

    async def add_silence(
        self, rule: str, account: str | None, ends_at: datetime, reason: str, now: datetime
    ) -> int:
        row = await self._one(
            "INSERT INTO silences (rule, account, ends_at, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?) RETURNING id",
            (rule, account, to_iso(ends_at), reason, to_iso(now)),
        )
        assert row is not None
        return int(row[0])

    async def end_silence(self, silence_id: int, now: datetime) -> bool:
        changed = await self._write(
            "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
            (to_iso(now), silence_id, to_iso(now)),
        )
        return changed == 1

    # The ledger.
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
        contributors unless told they are not needed (they scan the window's items)."""
        query = SpendQuery(account, since, until, currency, match)
        total, count = await self._window(query)
        by_number: tuple[tuple[str, Money], ...] = ()
        by_fare: tuple[tuple[str, Money], ...] = ()
        if contributors and count:
            # Dial names a fare; the other providers describe the item.
            by_number = await self._top(query, "number")
            by_fare = await self._top(query, "fare")
        return SpendSummary(since, Money(total, currency), count, by_number, by_fare)

    async def _top(self, query: SpendQuery, by: str) -> tuple[tuple[str, Money], ...]:
        column = SPEND_BY[by]
        where, params = self._spend_filter(query)
        rows = await self._all(
            f"SELECT {column}, SUM(cents) AS spent FROM ledger WHERE {where} "
            f"AND {column} IS NOT NULL GROUP BY 1 ORDER BY spent DESC, 1 LIMIT {TOP}",
            params,
        )
        return tuple((str(name), Money(int(cents), query.currency)) for name, cents in rows)

    async def spend_total(self, account: str, since: datetime, currency: str) -> Money:
        """Spend since `since`, without the contributors."""
        return await self.spend_in(SpendQuery(account, since, None, currency))

    async def spend_in(self, query: SpendQuery) -> Money:
        """The spend `query` selects (one query)."""
        cents, _ = await self._window(query)
        return Money(cents, query.currency)

    async def _window(self, q: SpendQuery) -> tuple[int, int]:
        """The spend and the item count `q` selects."""
        return _sums(await self._all(*self._window_read(q)))

    def _window_read(self, q: SpendQuery) -> tuple[str, list[object]]:
        """The query of `_window`: without a match from the running totals (a cost that
        does not grow with the items), with one by the items."""
        if q.match is None or q.match == Match():  # every item: the running totals
            return window_sum(q.account, q.since, q.until, q.currency, postgres=self.postgres)
        where, params = self._spend_filter(q)
        return f"SELECT COALESCE(SUM(cents), 0), COUNT(*) FROM ledger WHERE {where}", params

    async def spend_by(self, query: SpendQuery, by: str) -> dict[str, int]:
        """The spend `query` selects per "number", "fare" (or the description) or
        "prefix" (the number's first five characters, as a destination)."""
        column = SPEND_BY[by]
        where, params = self._spend_filter(query)
        rows = await self._all(
            f"SELECT {column}, SUM(cents) FROM ledger WHERE {where} AND {column} IS NOT NULL "
            "GROUP BY 1",
            params,
        )
        return {str(key): int(cents) for key, cents in rows}

    def _spend_filter(self, q: SpendQuery) -> tuple[str, list[object]]:
        return spend_filter(
            q.account, q.since, q.currency, q.match, q.until, postgres=self.postgres
        )

    async def spend_per_hour(self, account: str, since: datetime, currency: str) -> dict[int, int]:
        """Spend since `since` per hour (hours since the epoch -> cents)."""
        where, params = spend_filter(account, since, currency, postgres=self.postgres)
        rows = await self._all(
            f"SELECT occurred_at / 3600000000, SUM(cents) FROM ledger WHERE {where} GROUP BY 1",
            params,
        )
        return {int(hour): int(cents) for hour, cents in rows}

    async def ledger_starts(self, account: str) -> datetime | None:
        """When the oldest stored item of the account happened (keys start with it)."""
        row = await self._one(
            "SELECT key FROM ledger WHERE account = ? ORDER BY key LIMIT 1", (account,)
        )
        return from_micros(int(row[0][:16], 16)) if row else None

    async def spend_currency(self, account: str) -> str:
        row = await self._one(
            f"SELECT currency FROM ledger WHERE account = ? AND type IN {SPEND_TYPES!r} "
            "ORDER BY key DESC LIMIT 1",
            (account,),
        )
        return str(row[0]) if row else "USD"

    async def spend_by_day(self, account: str, since: datetime, currency: str) -> dict[str, Money]:
        rows = await self._all(
            "SELECT day, cents FROM spend_days WHERE account = ? AND currency = ? AND day >= ? "
            "ORDER BY day",
            (account, currency, since.strftime("%Y-%m-%d")),
        )
        return {day: Money(int(cents), currency) for day, cents in rows}

    # The outbox.
    async def mark_delivered(self, row_id: int, now: datetime) -> None:
        await self._write(
            "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
            (to_iso(now), row_id),
        )

    async def mark_failed(self, row_id: int, error: str, retry_at: datetime) -> None:
        await self._write(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE id = ?",
            (error, to_iso(retry_at), row_id),
        )

    async def mark_expired(self, row_id: int, now: datetime, reason: str | None = None) -> None:
        await self._write(
            "UPDATE outbox SET expired_at = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
            (to_iso(now), reason, row_id),
        )

    async def keep_parts(self, row_id: int, parts: list[Part], message: Message) -> None:
        await self._write(
            "UPDATE outbox SET parts = ?, title = ?, body = ?, notify_type = ? WHERE id = ?",
            (json.dumps([part_value(p) for p in parts]), *message, row_id),
        )

    async def is_firing(self, alert: str) -> bool:
        account, _, rule = alert.partition("/")
        row = await self._one(
            "SELECT status FROM alerts WHERE account = ? AND rule = ?", (account, rule)
        )
        return row is not None and row[0] == Status.FIRING.value

    async def next_attempt_at(self) -> datetime | None:
        row = await self._one(f"SELECT MIN(next_attempt_at) FROM outbox WHERE {NEXT}")
        return from_iso(row[0]) if row and row[0] else None

    async def retry_now(self, now: datetime) -> int:
        """Make every undelivered notification due now, but those quiet hours hold: a
        restart must not release at 02:00 what was held until 07:00."""
        return await self._write(
            f"UPDATE outbox SET next_attempt_at = ? WHERE {UNDELIVERED} AND held = 0 "
            "AND next_attempt_at > ?",
            (to_iso(now), to_iso(now)),
        )

    async def recent_notifications(self, limit: int, search: str | None = None) -> list[OutboxRow]:
        where, params = f"decision <> '{REFRESH}'", []
        if search:
            pattern = "%" + re.sub(r"([\\%_])", r"\\\1", search.lower()) + "%"
            where += (
                " AND ("
                + " OR ".join(
                    f"lower({column}) LIKE ? ESCAPE '\\'"
                    for column in ("title", "channel", "alert")
                )
                + ")"
            )
            params = [pattern] * 3
        rows = await self._all(
            f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {where} ORDER BY id DESC LIMIT ?",
            (*params, limit),
        )
        return [outbox_row(r) for r in rows]

    async def pending_by_channel(self) -> dict[str, int]:
        rows = await self._all(
            f"SELECT channel, COUNT(*) FROM outbox WHERE {UNDELIVERED} GROUP BY channel"
        )
        return dict(rows)

    async def waiting_since_by_channel(self) -> dict[str, datetime]:
        rows = await self._all(
            f"SELECT channel, MIN(created_at) FROM outbox WHERE {UNDELIVERED} AND held = 0 "
            "GROUP BY channel"
        )
        return {channel: from_iso(oldest) for channel, oldest in rows}

    async def pending_count(self) -> int:
        row = await self._one(f"SELECT COUNT(*) FROM outbox WHERE {UNDELIVERED}")
        return int(row[0]) if row else 0

    async def still_claimed(self, channel: str) -> bool:
        changed = await self._write(
            f"UPDATE outbox_claims SET expires_at = {self.now_us} + ? WHERE channel = ? "
            f"AND holder = ? AND expires_at > {self.now_us}",
            (micros(CLAIM_TTL), channel, self.replica),
        )
        return changed == 1

    async def release_claim(self, channel: str) -> None:
        await self._write(
            "DELETE FROM outbox_claims WHERE channel = ? AND holder = ?", (channel, self.replica)
        )

    # The cluster.
    async def heartbeat(self, replica: str) -> None:
        await self._write(
            f"INSERT INTO replicas VALUES (?, {self.now_us}) "
            "ON CONFLICT (name) DO UPDATE SET last_seen = excluded.last_seen",
            (replica,),
        )

    async def renew_leases(self, replica: str, ttl: timedelta) -> dict[str, int]:
        rows = await self._all(
            f"UPDATE leases SET expires_at = {self.now_us} + ? WHERE holder = ? "
            "RETURNING account, token",
            (micros(ttl), replica),
        )
        return dict(rows)

    async def free_accounts(self, accounts: Sequence[str]) -> list[str]:
        rows = await self._all(f"SELECT account FROM leases WHERE expires_at > {self.now_us}")
        held = {account for (account,) in rows}
        return [account for account in accounts if account not in held]

    async def release_leases(self, replica: str, accounts: Sequence[str]) -> None:
        for account in accounts:
            await self._write(
                "UPDATE leases SET expires_at = 0 WHERE holder = ? AND account = ?",
                (replica, account),
            )
