"""The SQLite backend: the whole state in one local file, for a single replica.

Alert states, balances, silences and digests are here; the ledger and the outbox
have modules of their own, and `schema.py` holds the schema and the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.alerting.silences import Silence
from dialwatch.clock import from_iso, from_micros, to_iso, to_micros
from dialwatch.delivery.messages import Message
from dialwatch.delivery.outbox import OutboxEntry
from dialwatch.store.protocol import Fence, LedgerCheckpoint
from dialwatch.store.sql import HISTORY_KEPT, HISTORY_STEP_US, alert_state
from dialwatch.store.sqlite.cluster import ClusterTables, check_fence
from dialwatch.store.sqlite.ledger import LedgerTables
from dialwatch.store.sqlite.outbox import OutboxTables
from dialwatch.store.sqlite.schema import Row
from dialwatch.units import Money


class SqliteStore(LedgerTables, OutboxTables, ClusterTables):
    """All of dialwatch's state in one SQLite file (see `store.protocol.Store`)."""

    async def alert_states(self, account: str) -> dict[str, AlertState]:
        rows = await self._all(
            "SELECT rule, status, active_since, last_notified, notifications "
            "FROM alerts WHERE account = ?",
            (account,),
        )
        return {rule: alert_state(*state) for rule, *state in rows}

    async def failing_since(self, account: str) -> datetime | None:
        row = await self._one("SELECT since FROM failing WHERE account = ?", (account,))
        return from_iso(row[0]) if row else None

    async def last_balance(self, account: str) -> Money | None:
        row = await self._one("SELECT cents, currency FROM balances WHERE account = ?", (account,))
        return Money(row[0], row[1]) if row else None

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
    ) -> None:
        entries = list(outbox)

        def commit(db: sqlite3.Connection) -> None:
            stamp = to_iso(now)
            with self._transaction(db):
                check_fence(db, account, fence)
                db.executemany(
                    "INSERT INTO alert_log VALUES (?, ?, ?, ?)",
                    [(account, rule, decision, stamp) for rule, decision in decisions],
                )
                db.executemany(
                    "INSERT OR REPLACE INTO digests VALUES (?, ?)",
                    [(name, to_iso(due)) for name, due in digests],
                )
                if failing_since is None:
                    db.execute("DELETE FROM failing WHERE account = ?", (account,))
                else:
                    db.execute(
                        "INSERT OR REPLACE INTO failing VALUES (?, ?)",
                        (account, to_iso(failing_since)),
                    )
                if ledger is not None:
                    self._commit_ledger(db, account, ledger)
                _write_states(db, account, states)
                if balance is not None:
                    db.execute(
                        "INSERT OR REPLACE INTO balances VALUES (?, ?, ?, ?)",
                        (account, balance.cents, balance.currency, stamp),
                    )
                    bucket = to_micros(now) // HISTORY_STEP_US * HISTORY_STEP_US
                    db.execute(
                        "INSERT OR REPLACE INTO balance_history VALUES (?, ?, ?, ?)",
                        (account, bucket, balance.cents, balance.currency),
                    )
                _forget_history(db, account, now - HISTORY_KEPT)
                self._prune_outbox(db, now)
                # One message per channel, and per end of quiet hours for what they hold back.
                groups: dict[tuple[str, datetime | None], list[tuple[str, str, Message]]] = {}
                for e in entries:
                    groups.setdefault((e.channel, e.hold_until), []).append(
                        (e.alert, e.decision, e.message)
                    )
                for (channel, hold_until), parts in groups.items():
                    self._queue(
                        db, account, channel, parts, now, expires_at, group_wait, hold_until
                    )

        await self._run(commit)

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
        return Money(row[0], row[1]) if row else None

    async def balance_history(self, account: str, since: datetime) -> list[tuple[datetime, Money]]:
        rows = await self._all(
            "SELECT at, cents, currency FROM balance_history WHERE account = ? AND at >= ? "
            "ORDER BY at",
            (account, to_micros(since)),
        )
        return [(from_micros(at), Money(cents, currency)) for at, cents, currency in rows]

    async def add_silence(
        self, rule: str, account: str | None, ends_at: datetime, reason: str, now: datetime
    ) -> int:
        cursor = await self._write(
            "INSERT INTO silences (rule, account, ends_at, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (rule, account, to_iso(ends_at), reason, to_iso(now)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    async def silences(self, now: datetime) -> list[Silence]:
        rows = await self._all(
            "SELECT id, rule, account, ends_at, reason, created_at FROM silences "
            "WHERE ends_at > ? ORDER BY id",
            (to_iso(now),),
        )
        return [
            Silence(id, rule, account, from_iso(ends), reason, from_iso(created))
            for id, rule, account, ends, reason, created in rows
        ]

    async def dump(self, tables: Sequence[str]) -> dict[str, tuple[list[str], list[Row]]]:
        """Every row of `tables`, with the column names (to copy the state elsewhere)."""

        def read(db: sqlite3.Connection) -> dict[str, tuple[list[str], list[Row]]]:
            dumped = {}
            for table in tables:
                cursor = db.execute(f"SELECT * FROM {table}")
                dumped[table] = ([c[0] for c in cursor.description], cursor.fetchall())
            return dumped

        return await self._run(read)

    async def end_silence(self, silence_id: int, now: datetime) -> bool:
        cursor = await self._write(
            "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
            (to_iso(now), silence_id, to_iso(now)),
        )
        return cursor.rowcount == 1


def _write_states(db: sqlite3.Connection, account: str, states: dict[str, AlertState]) -> None:
    for rule, state in states.items():
        if state.status is Status.INACTIVE:
            db.execute("DELETE FROM alerts WHERE account = ? AND rule = ?", (account, rule))
            continue
        db.execute(
            "INSERT OR REPLACE INTO alerts VALUES (?, ?, ?, ?, ?, ?)",
            (
                account,
                rule,
                state.status.value,
                to_iso(state.active_since) if state.active_since else None,
                to_iso(state.last_notified) if state.last_notified else None,
                state.notifications,
            ),
        )


def _forget_history(db: sqlite3.Connection, account: str, horizon: datetime) -> None:
    db.execute(
        "DELETE FROM balance_history WHERE account = ? AND at < ?",
        (account, to_micros(horizon)),
    )
    db.execute(
        "DELETE FROM spend_days WHERE account = ? AND day < ?",
        (account, horizon.strftime("%Y-%m-%d")),
    )
    db.execute("DELETE FROM alert_log WHERE account = ? AND at < ?", (account, to_iso(horizon)))
