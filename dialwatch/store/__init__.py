"""Durable state in one SQLite file: alert states, balances, silences, digests, and
(in their own modules) the ledger and the outbox; `db.py` holds the schema.

A check's alert states and the notifications they lead to are committed in one
transaction, before anything is sent; a notification is marked delivered only after
it was sent. A crash at any point therefore repeats a message at worst, never loses one.
SQLite calls are synchronous: on a local file each is well under a millisecond, and
the service does a handful per check.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase

from dialwatch.alerts import AlertState, Status
from dialwatch.clock import from_iso, from_micros, to_iso, to_micros
from dialwatch.messages import Message
from dialwatch.store.db import SCHEMA_VERSION
from dialwatch.store.ledger import LedgerCheckpoint, LedgerTables
from dialwatch.store.outbox import KEEP_DELIVERED, OutboxEntry, OutboxRow, OutboxTables, Part
from dialwatch.units import Money

__all__ = [
    "KEEP_DELIVERED",
    "SCHEMA_VERSION",
    "LedgerCheckpoint",
    "OutboxEntry",
    "OutboxRow",
    "Part",
    "Silence",
    "Store",
]

HISTORY_STEP_US = 15 * 60 * 1_000_000  # one balance point per 15 minutes
HISTORY_KEPT = timedelta(days=8)


@dataclass(frozen=True)
class Silence:
    """Mutes the alerts of rules matching `rule` (a glob), on `account` or on all."""

    id: int
    rule: str
    account: str | None
    ends_at: datetime
    reason: str
    created_at: datetime

    def mutes(self, rule: str, account: str) -> bool:
        return fnmatchcase(rule, self.rule) and self.account in (None, account)


class Store(LedgerTables, OutboxTables):
    """All of dialwatch's state; the ledger and the outbox have modules of their own."""

    def alert_states(self, account: str) -> dict[str, AlertState]:
        rows = self._db.execute(
            "SELECT rule, status, active_since, last_notified, notifications "
            "FROM alerts WHERE account = ?",
            (account,),
        )
        return {
            rule: AlertState(
                Status(status),
                from_iso(since) if since else None,
                from_iso(notified) if notified else None,
                count,
            )
            for rule, status, since, notified, count in rows
        }

    def failing_since(self, account: str) -> datetime | None:
        row = self._db.execute("SELECT since FROM failing WHERE account = ?", (account,)).fetchone()
        return from_iso(row[0]) if row else None

    def last_balance(self, account: str) -> Money | None:
        row = self._db.execute(
            "SELECT cents, currency FROM balances WHERE account = ?", (account,)
        ).fetchone()
        return Money(row[0], row[1]) if row else None

    def commit_check(
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
    ) -> None:
        """Record one check's outcome and queue its notifications, atomically.

        A channel's notifications of one check become one message. With `group_wait`,
        that message waits so long, and later checks add to it until it goes out.
        """
        stamp = to_iso(now)
        with self._transaction() as db:
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
            horizon = now - HISTORY_KEPT
            db.execute(
                "DELETE FROM balance_history WHERE account = ? AND at < ?",
                (account, to_micros(horizon)),
            )
            db.execute(
                "DELETE FROM spend_days WHERE account = ? AND day < ?",
                (account, horizon.strftime("%Y-%m-%d")),
            )
            db.execute(
                "DELETE FROM alert_log WHERE account = ? AND at < ?", (account, to_iso(horizon))
            )
            self._prune_outbox(db, now)
            # One message per channel, and per end of quiet hours for what they hold back.
            groups: dict[tuple[str, datetime | None], list[tuple[str, str, Message]]] = {}
            for e in outbox:
                groups.setdefault((e.channel, e.hold_until), []).append(
                    (e.alert, e.decision, e.message)
                )
            for (channel, hold_until), entries in groups.items():
                self._queue(db, account, channel, entries, now, expires_at, group_wait, hold_until)

    def digest_sent_for(self, name: str) -> datetime | None:
        row = self._db.execute("SELECT sent_for FROM digests WHERE name = ?", (name,)).fetchone()
        return from_iso(row[0]) if row else None

    def fired_between(self, account: str, since: datetime, until: datetime) -> dict[str, int]:
        """How often each rule fired (first notifications) in [since, until)."""
        rows = self._db.execute(
            "SELECT rule, COUNT(*) FROM alert_log WHERE account = ? AND decision = 'first' "
            "AND at >= ? AND at < ? GROUP BY rule",
            (account, to_iso(since), to_iso(until)),
        )
        return dict(rows.fetchall())

    def balance_at(self, account: str, moment: datetime) -> Money | None:
        """The balance recorded last at or before `moment` (15-minute resolution)."""
        row = self._db.execute(
            "SELECT cents, currency FROM balance_history WHERE account = ? AND at <= ? "
            "ORDER BY at DESC LIMIT 1",
            (account, to_micros(moment)),
        ).fetchone()
        return Money(row[0], row[1]) if row else None

    def balance_history(self, account: str, since: datetime) -> list[tuple[datetime, Money]]:
        rows = self._db.execute(
            "SELECT at, cents, currency FROM balance_history WHERE account = ? AND at >= ? "
            "ORDER BY at",
            (account, to_micros(since)),
        )
        return [(from_micros(at), Money(cents, currency)) for at, cents, currency in rows]

    def add_silence(
        self, rule: str, account: str | None, ends_at: datetime, reason: str, now: datetime
    ) -> int:
        cursor = self._db.execute(
            "INSERT INTO silences (rule, account, ends_at, reason, created_at) "
            "VALUES (?, ?, ?, ?, ?)",
            (rule, account, to_iso(ends_at), reason, to_iso(now)),
        )
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def silences(self, now: datetime) -> list[Silence]:
        """Silences in force at `now`, oldest first; expired ones drop out by themselves."""
        rows = self._db.execute(
            "SELECT id, rule, account, ends_at, reason, created_at FROM silences "
            "WHERE ends_at > ? ORDER BY id",
            (to_iso(now),),
        )
        return [
            Silence(id, rule, account, from_iso(ends), reason, from_iso(created))
            for id, rule, account, ends, reason, created in rows
        ]

    def end_silence(self, silence_id: int, now: datetime) -> bool:
        """End a silence now; False if there is no such silence in force."""
        cursor = self._db.execute(
            "UPDATE silences SET ends_at = ? WHERE id = ? AND ends_at > ?",
            (to_iso(now), silence_id, to_iso(now)),
        )
        return cursor.rowcount == 1
