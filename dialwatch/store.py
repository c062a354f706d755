"""Durable state in one SQLite file: alert states, last balances, and the outbox.

A check's alert states and the notifications they lead to are committed in one
transaction, before anything is sent; a notification is marked delivered only after
it was sent. A crash at any point therefore repeats a message at worst, never loses one.
SQLite calls are synchronous: on a local file each is well under a millisecond, and
the service does a handful per check.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, NamedTuple

from dialwatch.alerts import AlertState, Status
from dialwatch.clock import from_iso, from_micros, to_iso, to_micros
from dialwatch.config import Match
from dialwatch.errors import ConfigError
from dialwatch.messages import Message, combine
from dialwatch.model import SPEND_TYPES, ItemMatches, LedgerItem, SpendSummary, time_key
from dialwatch.units import Money

TOP = 3  # contributors listed in a spend message
HISTORY_STEP_US = 15 * 60 * 1_000_000  # one balance point per 15 minutes
HISTORY_KEPT = timedelta(days=8)
KEEP_DELIVERED = timedelta(days=7)  # delivered and expired notifications, then forgotten

SCHEMA_VERSION = 4  # bump with a migration in _MIGRATIONS when a table changes
# What takes a state file from version N-1 to N: statements, each run if its table
# exists (a missing table is created whole, and current, from _SCHEMA).
_MIGRATIONS: dict[int, tuple[tuple[str, str], ...]] = {
    2: (("outbox", "ALTER TABLE outbox ADD COLUMN parts TEXT NOT NULL DEFAULT '[]'"),),
    3: (("outbox", "ALTER TABLE outbox ADD COLUMN held INTEGER NOT NULL DEFAULT 0"),),
    # Many accounts: item fields of other providers; digests are sent per account (the
    # one account before was "dial").
    4: (
        ("ledger", "ALTER TABLE ledger ADD COLUMN action TEXT"),
        ("ledger", "ALTER TABLE ledger ADD COLUMN description TEXT"),
        ("ledger", "ALTER TABLE ledger ADD COLUMN zone TEXT"),
        ("digests", "UPDATE digests SET name = 'dial/' || name"),
    ),
}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    status TEXT NOT NULL,
    active_since TEXT,
    last_notified TEXT,
    notifications INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account, rule)
);
CREATE TABLE IF NOT EXISTS balances (
    account TEXT PRIMARY KEY,
    cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    checked_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    alert TEXT NOT NULL,
    decision TEXT NOT NULL,
    channel TEXT NOT NULL,
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    notify_type TEXT NOT NULL,
    created_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    next_attempt_at TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    delivered_at TEXT,
    expired_at TEXT,
    parts TEXT NOT NULL DEFAULT '[]',  -- JSON: [alert, decision, title, body, notify_type]
    held INTEGER NOT NULL DEFAULT 0  -- held back by quiet hours until next_attempt_at
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND expired_at IS NULL;
CREATE TABLE IF NOT EXISTS ledger (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,  -- microseconds since the epoch, UTC
    cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    fare TEXT,
    number TEXT,
    attribution TEXT,
    kind TEXT,
    invoice_id TEXT,
    reason TEXT,
    action TEXT,
    description TEXT,
    zone TEXT,
    PRIMARY KEY (account, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS ledger_cursor (
    account TEXT PRIMARY KEY,
    newest TEXT NOT NULL
);
-- Silences: a rule (glob) on one account or all, muted until ends_at.
CREATE TABLE IF NOT EXISTS silences (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    rule TEXT NOT NULL,
    account TEXT,
    ends_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
-- Every notification decision, for digests ("alerts fired"); kept 8 days.
CREATE TABLE IF NOT EXISTS alert_log (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    decision TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_log_time ON alert_log (account, at);
-- When each digest last went out (or was first scheduled), by "account/digest".
CREATE TABLE IF NOT EXISTS digests (
    name TEXT PRIMARY KEY,
    sent_for TEXT NOT NULL
);
-- Since when checks of an account have failed without a success in between.
CREATE TABLE IF NOT EXISTS failing (
    account TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
-- The status page's history: one balance point per account and 15 minutes (the last
-- value seen), and usage spend per UTC day; both kept for 8 days.
CREATE TABLE IF NOT EXISTS balance_history (
    account TEXT NOT NULL,
    at INTEGER NOT NULL,  -- start of the 15-minute bucket, microseconds since the epoch
    cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (account, at)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spend_days (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    cents INTEGER NOT NULL,
    PRIMARY KEY (account, day)
) WITHOUT ROWID;
-- New items that matched an item rule, until the end of the check groups them into
-- one message: durable, so a crash mid-backlog loses no per-item alert.
CREATE TABLE IF NOT EXISTS item_matches (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (account, rule, key)
) WITHOUT ROWID;
"""


_LEDGER_COLUMNS = ", ".join(("account", *LedgerItem._fields))
_UNDELIVERED = "delivered_at IS NULL AND expired_at IS NULL"
# The oldest undelivered notification of each channel.
_HEADS = f"SELECT MIN(id) FROM outbox WHERE {_UNDELIVERED} AND held = 0 GROUP BY channel"
# What can be sent next: each channel's oldest message, and messages held by quiet hours
# (those keep their own time and never block a channel's queue).
_NEXT = f"id IN ({_HEADS}) OR (held = 1 AND {_UNDELIVERED})"


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


@dataclass(frozen=True)
class OutboxEntry:
    """A notification for one channel, to be written before it is sent."""

    alert: str
    decision: str
    channel: str
    message: Message
    hold_until: datetime | None = None  # quiet hours on this channel end then


@dataclass(frozen=True)
class LedgerCheckpoint:
    """What a check read of the ledger, committed with its alerts."""

    newest: datetime
    keep_since: datetime  # items older than this are no longer needed by any rule
    delivered_rules: tuple[str, ...]  # item rules whose matches became messages


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


class Part(NamedTuple):
    """One alert's message inside an outbox row (a group has several)."""

    alert: str
    decision: str
    message: Message


_OUTBOX_COLUMNS = (
    "id, alert, decision, channel, title, body, notify_type, created_at, expires_at, "
    "attempts, last_error, delivered_at, expired_at, parts, held"
)


def _outbox_row(r: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        alert=r[1],
        decision=r[2],
        channel=r[3],
        message=Message(r[4], r[5], r[6]),
        created_at=from_iso(r[7]),
        expires_at=from_iso(r[8]),
        attempts=r[9],
        last_error=r[10],
        delivered_at=from_iso(r[11]) if r[11] else None,
        expired_at=from_iso(r[12]) if r[12] else None,
        parts=tuple(Part(p[0], p[1], Message(*p[2:])) for p in json.loads(r[13])),
        held=bool(r[14]),
    )


def _spend_filter(
    account: str,
    since: datetime,
    currency: str,
    match: Match | None = None,
    until: datetime | None = None,
) -> tuple[str, list[object]]:
    """The WHERE clause (and its parameters) selecting spend items in `currency` for a
    spend query."""
    # Keys start with the item's time in fixed-width hex: the primary key is the
    # time index, and no second index slows every insert.
    where = f"account = ? AND key >= ? AND type IN {SPEND_TYPES!r} AND currency = ?"
    params: list[object] = [account, time_key(since), currency]
    if until is not None:
        where += " AND key < ?"
        params.append(time_key(until))
    if match is not None:
        for column, value, op in (
            ("fare", match.fare, "GLOB"),
            ("number", match.number, "="),
            ("attribution", match.attribution, "="),
            ("action", match.action, "GLOB"),
            ("description", match.description, "GLOB"),
            ("zone", match.zone, "="),
        ):
            if value is not None:
                where += f" AND {column} {op} ?"
                params.append(value)
    return where, params


class Store:
    def __init__(self, path: Path | str) -> None:
        self._savepoints = itertools.count()
        self._db = sqlite3.connect(str(path), isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=5000")
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"{path}: state file is from a newer dialwatch (schema {version}, this one "
                f"reads {SCHEMA_VERSION}); upgrade dialwatch or point DIALWATCH_STATE elsewhere"
            )
        if version:
            for step in range(version + 1, SCHEMA_VERSION + 1):
                self._migrate(_MIGRATIONS[step])
        self._db.executescript(_SCHEMA)
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        self._db.close()

    def _migrate(self, steps: tuple[tuple[str, str], ...]) -> None:
        tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master")}
        for table, statement in steps:
            if table in tables:
                self._db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # A savepoint is a transaction of its own, or nests inside `rolled_back`.
        name = f"sp{next(self._savepoints)}"
        self._db.execute(f"SAVEPOINT {name}")
        try:
            yield self._db
        except BaseException:
            self._db.execute(f"ROLLBACK TO {name}")
            self._db.execute(f"RELEASE {name}")
            raise
        self._db.execute(f"RELEASE {name}")

    @contextmanager
    def rolled_back(self) -> Iterator[None]:
        """Everything written inside is undone at the end: for dry runs."""
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            self._db.execute("ROLLBACK")

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
                db.execute(
                    "INSERT OR REPLACE INTO ledger_cursor VALUES (?, ?)",
                    (account, to_iso(ledger.newest)),
                )
                db.executemany(
                    "DELETE FROM item_matches WHERE account = ? AND rule = ?",
                    [(account, rule) for rule in ledger.delivered_rules],
                )
                db.execute(
                    "DELETE FROM ledger WHERE account = ? AND key < ?",
                    (account, time_key(ledger.keep_since)),
                )
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
            db.execute(
                f"DELETE FROM outbox WHERE created_at < ? AND NOT ({_UNDELIVERED})",
                (to_iso(now - KEEP_DELIVERED),),
            )
            # One message per channel, and per end of quiet hours for what they hold back.
            groups: dict[tuple[str, datetime | None], list[tuple[str, str, Message]]] = {}
            for e in outbox:
                groups.setdefault((e.channel, e.hold_until), []).append(
                    (e.alert, e.decision, e.message)
                )
            for (channel, hold_until), entries in groups.items():
                self._queue(db, account, channel, entries, now, expires_at, group_wait, hold_until)

    def _queue(
        self,
        db: sqlite3.Connection,
        account: str,
        channel: str,
        entries: list[tuple[str, str, Message]],
        now: datetime,
        expires_at: datetime,
        group_wait: timedelta,
        hold_until: datetime | None,
    ) -> None:
        waiting_alerts = self._waiting_alerts(db, channel)
        parts = [
            [alert, decision, *message]
            for alert, decision, message in entries
            # A reminder adds nothing while an earlier message about the alert still waits.
            if not (decision == "repeat" and alert in waiting_alerts)
        ]
        if not parts:
            return
        send_at = hold_until or now + group_wait
        waiting = None
        if send_at > now:
            # Join the message already waiting for the same moment on this channel.
            waiting = db.execute(
                f"SELECT id, parts FROM outbox WHERE channel = ? AND {_UNDELIVERED} "
                "AND attempts = 0 AND held = ? AND next_attempt_at > ? "
                + ("AND next_attempt_at = ? " if hold_until else "")
                + "ORDER BY id DESC LIMIT 1",
                (channel, int(hold_until is not None), to_iso(now))
                + ((to_iso(hold_until),) if hold_until else ()),
            ).fetchone()
        if waiting is not None:
            parts = json.loads(waiting[1]) + parts
        message = combine(account, [(p[0], Message(p[2], p[3], p[4])) for p in parts])
        alert = ",".join(dict.fromkeys(p[0] for p in parts))
        decision = parts[0][1] if len(parts) == 1 else "group"
        values = (alert, decision, *message, json.dumps(parts))
        if waiting is not None:
            db.execute(
                "UPDATE outbox SET alert = ?, decision = ?, title = ?, body = ?, "
                "notify_type = ?, parts = ? WHERE id = ?",
                (*values, waiting[0]),
            )
            return
        db.execute(
            "INSERT INTO outbox (alert, decision, title, body, notify_type, parts, channel, "
            "created_at, expires_at, next_attempt_at, held) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                *values,
                channel,
                to_iso(now),
                to_iso(max(expires_at, send_at + (expires_at - now))),
                to_iso(send_at),
                int(hold_until is not None),
            ),
        )

    def ledger_cursor(self, account: str) -> datetime | None:
        """The newest instant a committed check has read the ledger up to."""
        row = self._db.execute(
            "SELECT newest FROM ledger_cursor WHERE account = ?", (account,)
        ).fetchone()
        return from_iso(row[0]) if row else None

    def add_ledger_items(
        self,
        account: str,
        items: list[LedgerItem],
        match: Callable[[LedgerItem], Iterable[str]] | None,
    ) -> int:
        """Store items not seen before, and the item rules each new one matches.

        Returns how many were new. `match` is None while backfilling history.
        These rows need no fsync of their own: until the check commits its cursor
        (with a full sync), a crash only means they are read again.
        """
        if not items:
            return 0
        db = self._db
        keys = [item.key for item in items]
        seen = {
            key
            for (key,) in db.execute(
                f"SELECT key FROM ledger WHERE account = ? AND key IN ({','.join('?' * len(keys))})",
                [account, *keys],
            )
        }
        new = [item for item in items if item.key not in seen]
        relax = not db.in_transaction  # a dry run's outer transaction is never synced
        if relax:
            db.execute("PRAGMA synchronous=NORMAL")
        try:
            with self._transaction():
                db.executemany(
                    f"INSERT INTO ledger ({_LEDGER_COLUMNS}) "
                    f"VALUES ({', '.join('?' * (len(LedgerItem._fields) + 1))})",
                    [
                        (
                            account,
                            item.key,
                            item.type,
                            to_micros(item.occurred_at),
                            item.cents,
                            item.currency,
                            item.fare,
                            item.number,
                            item.attribution,
                            item.kind,
                            item.invoice_id,
                            item.reason,
                            item.action,
                            item.description,
                            item.zone,
                        )
                        for item in new
                    ],
                )
                if match is not None:
                    db.executemany(
                        "INSERT OR IGNORE INTO item_matches VALUES (?, ?, ?)",
                        [(account, rule, item.key) for item in new for rule in match(item)],
                    )
                by_day: dict[str, int] = {}
                for item in new:
                    if item.type in SPEND_TYPES:
                        day = item.occurred_at.astimezone(UTC).strftime("%Y-%m-%d")
                        by_day[day] = by_day.get(day, 0) + item.cents
                db.executemany(
                    "INSERT INTO spend_days VALUES (?, ?, ?) ON CONFLICT (account, day) "
                    "DO UPDATE SET cents = cents + excluded.cents",
                    [(account, day, cents) for day, cents in by_day.items()],
                )
        finally:
            if relax:
                db.execute("PRAGMA synchronous=FULL")
        return len(new)

    def spend(
        self,
        account: str,
        since: datetime,
        currency: str,
        match: Match | None = None,
        until: datetime | None = None,
    ) -> SpendSummary:
        """Spend in [since, until) among items that `match` selects, with the biggest
        contributors."""
        where, params = _spend_filter(account, since, currency, match, until)
        total, count = self._db.execute(
            f"SELECT COALESCE(SUM(cents), 0), COUNT(*) FROM ledger WHERE {where}", params
        ).fetchone()

        def top(column: str) -> tuple[tuple[str, Money], ...]:
            rows = self._db.execute(
                f"SELECT {column}, SUM(cents) AS spent FROM ledger WHERE {where} "
                f"AND {column} IS NOT NULL GROUP BY 1 ORDER BY spent DESC, 1 LIMIT {TOP}",
                params,
            )
            return tuple((name, Money(cents, currency)) for name, cents in rows)

        return SpendSummary(
            since,
            Money(total, currency),
            count,
            top("number"),
            # Dial names a fare; the other providers describe the item.
            top("COALESCE(fare, description)"),
        )

    def spend_total(self, account: str, since: datetime, currency: str) -> Money:
        """Spend since `since`, without the contributors (one query, not three)."""
        where, params = _spend_filter(account, since, currency)
        row = self._db.execute(
            f"SELECT COALESCE(SUM(cents), 0) FROM ledger WHERE {where}", params
        ).fetchone()
        return Money(row[0], currency)

    def spend_currency(self, account: str) -> str:
        """The currency of the account's latest spend item (USD before there is one)."""
        row = self._db.execute(
            f"SELECT currency FROM ledger WHERE account = ? AND type IN {SPEND_TYPES!r} "
            "ORDER BY key DESC LIMIT 1",
            (account,),
        ).fetchone()
        return str(row[0]) if row else "USD"

    def item_matches(self, account: str, rule: str, limit: int) -> ItemMatches:
        """New items that matched `rule` and are not notified yet: all counted, and the
        first `limit` of them (oldest first) to show."""
        count, total = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(l.cents), 0) FROM item_matches m "
            "JOIN ledger l ON l.account = m.account AND l.key = m.key "
            "WHERE m.account = ? AND m.rule = ?",
            (account, rule),
        ).fetchone()
        rows = self._db.execute(
            f"SELECT {', '.join('l.' + c for c in LedgerItem._fields)} FROM item_matches m "
            "JOIN ledger l ON l.account = m.account AND l.key = m.key "
            "WHERE m.account = ? AND m.rule = ? ORDER BY l.occurred_at, l.key LIMIT ?",
            (account, rule, limit),
        )
        shown = [LedgerItem(r[0], r[1], from_micros(r[2]), *r[3:]) for r in rows]
        currency = shown[0].currency if shown else "USD"
        return ItemMatches(count, Money(total, currency), tuple(shown))

    def due(self, now: datetime) -> list[OutboxRow]:
        """Undelivered notifications of every channel whose oldest one is due, in order.

        A channel's messages wait behind its oldest undelivered one, so a channel that
        comes back receives them in the order they were written.
        """
        rows = self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {_UNDELIVERED} AND ("
            f"(held = 0 AND channel IN (SELECT channel FROM outbox WHERE id IN ({_HEADS}) "
            "AND next_attempt_at <= ?)) OR (held = 1 AND next_attempt_at <= ?)) ORDER BY id",
            (to_iso(now), to_iso(now)),
        )
        return [_outbox_row(r) for r in rows]

    def mark_delivered(self, row_id: int, now: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
            (to_iso(now), row_id),
        )

    def mark_failed(self, row_id: int, error: str, retry_at: datetime) -> None:
        self._db.execute(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE id = ?",
            (error, to_iso(retry_at), row_id),
        )

    def mark_expired(self, row_id: int, now: datetime, reason: str | None = None) -> None:
        self._db.execute(
            "UPDATE outbox SET expired_at = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
            (to_iso(now), reason, row_id),
        )

    @staticmethod
    def _waiting_alerts(db: sqlite3.Connection, channel: str) -> set[str]:
        rows = db.execute(
            "SELECT DISTINCT json_extract(part.value, '$[0]') FROM outbox, "
            f"json_each(outbox.parts) AS part WHERE outbox.channel = ? AND {_UNDELIVERED}",
            (channel,),
        )
        return {alert for (alert,) in rows}

    def keep_parts(self, row_id: int, parts: list[Part], message: Message) -> None:
        """Narrow a held message to the parts still worth sending."""
        self._db.execute(
            "UPDATE outbox SET parts = ?, title = ?, body = ?, notify_type = ? WHERE id = ?",
            (json.dumps([[p.alert, p.decision, *p.message] for p in parts]), *message, row_id),
        )

    def is_firing(self, alert: str) -> bool:
        """Whether `alert` ("account/rule") is firing now."""
        account, _, rule = alert.partition("/")
        row = self._db.execute(
            "SELECT status FROM alerts WHERE account = ? AND rule = ?", (account, rule)
        ).fetchone()
        return bool(row) and row[0] == Status.FIRING.value

    def was_announced(self, channel: str, alert: str) -> bool:
        """Whether `channel` was sent `alert` as firing (first or reminder)."""
        row = self._db.execute(
            "SELECT 1 FROM outbox, json_each(outbox.parts) AS part WHERE outbox.channel = ? "
            "AND outbox.delivered_at IS NOT NULL AND json_extract(part.value, '$[0]') = ? "
            "AND json_extract(part.value, '$[1]') IN ('first', 'repeat') LIMIT 1",
            (channel, alert),
        ).fetchone()
        return row is not None

    def next_attempt_at(self) -> datetime | None:
        """When the earliest channel is next due, if anything is undelivered."""
        row = self._db.execute(f"SELECT MIN(next_attempt_at) FROM outbox WHERE {_NEXT}").fetchone()
        return from_iso(row[0]) if row and row[0] else None

    def retry_now(self, now: datetime) -> int:
        """Make every undelivered notification due now (at start-up); returns how many."""
        cursor = self._db.execute(
            f"UPDATE outbox SET next_attempt_at = ? WHERE {_UNDELIVERED} AND next_attempt_at > ?",
            (to_iso(now), to_iso(now)),
        )
        return cursor.rowcount

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

    def spend_by_day(self, account: str, since: datetime) -> dict[str, Money]:
        rows = self._db.execute(
            "SELECT day, cents FROM spend_days WHERE account = ? AND day >= ? ORDER BY day",
            (account, since.strftime("%Y-%m-%d")),
        )
        return {day: Money(cents) for day, cents in rows}

    def recent_notifications(self, limit: int) -> list[OutboxRow]:
        """The newest notifications, delivered or not, newest first."""
        rows = self._db.execute(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_outbox_row(r) for r in rows]

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

    def pending_by_channel(self) -> dict[str, int]:
        rows = self._db.execute(
            f"SELECT channel, COUNT(*) FROM outbox WHERE {_UNDELIVERED} GROUP BY channel"
        )
        return dict(rows.fetchall())

    def pending_count(self) -> int:
        row = self._db.execute(f"SELECT COUNT(*) FROM outbox WHERE {_UNDELIVERED}").fetchone()
        return int(row[0])
