"""The SQLite file: its schema, migrations between versions, transactions, and the one
thread that owns the connection.

sqlite3 blocks, so every statement runs on that thread, never on the event loop; a
whole transaction (a check's commit, a batch of ledger items) is one trip there, which
is why this is not aiosqlite (a trip per statement). A trip is a queue put and one
`call_soon_threadsafe` back (`_Worker`), cheaper than `run_in_executor`, which wraps a
concurrent future in an asyncio one at every call.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import queue
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self, TypeVar

from dialwatch.errors import ConfigError, StateUnavailable
from dialwatch.store.common import Row, SqlTables
from dialwatch.store.sql import FILL_SPEND_TOTALS, SPEND_TOTALS

T = TypeVar("T")

SCHEMA_VERSION = 8  # bump with a migration in _MIGRATIONS when a table changes
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
    # Replicas, leases and outbox claims: new tables only (created from _SCHEMA).
    5: (),
    # How far back the stored ledger reaches, so a wider window reads what it lacks.
    6: (("ledger_cursor", "ALTER TABLE ledger_cursor ADD COLUMN covers_since TEXT"),),
    # Spend per day per currency (an account billed in EUR is not summed as dollars). The
    # key changes, so spend_days is rebuilt, its rows taking their account's currency.
    7: (
        ("spend_days", "ALTER TABLE spend_days RENAME TO spend_days_v6"),
        (
            "spend_days",
            "CREATE TABLE spend_days (account TEXT NOT NULL, day TEXT NOT NULL, "
            "currency TEXT NOT NULL DEFAULT 'USD', cents INTEGER NOT NULL, "
            "PRIMARY KEY (account, day, currency)) WITHOUT ROWID",
        ),
        (
            "spend_days",
            "INSERT INTO spend_days (account, day, currency, cents) SELECT account, day, "
            "COALESCE((SELECT currency FROM ledger WHERE ledger.account = "
            "spend_days_v6.account ORDER BY key DESC LIMIT 1), 'USD'), cents "
            "FROM spend_days_v6",
        ),
        ("spend_days", "DROP TABLE spend_days_v6"),
    ),
    # Spend per minute and hour, so that a window's sum does not read its items.
    8: (
        ("ledger", f"{SPEND_TOTALS} WITHOUT ROWID"),
        *(("ledger", fill) for fill in FILL_SPEND_TOTALS),
    ),
}
_SCHEMA = f"""
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
    checked_at TEXT NOT NULL  -- when the balance last changed (a commit writes it then)
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
    newest TEXT NOT NULL,
    covers_since TEXT  -- the stored ledger holds every item since then (NULL: unknown)
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
    -- The key's columns before the others: SQLite 3.40's integrity check wrongly
    -- reports "NULL value in spend_days.cents" when a key column follows a NOT NULL one.
    currency TEXT NOT NULL DEFAULT 'USD',
    cents INTEGER NOT NULL,
    PRIMARY KEY (account, day, currency)
) WITHOUT ROWID;
{SPEND_TOTALS} WITHOUT ROWID;
-- New items that matched an item rule, until the end of the check groups them into
-- one message: durable, so a crash mid-backlog loses no per-item alert.
CREATE TABLE IF NOT EXISTS item_matches (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (account, rule, key)
) WITHOUT ROWID;
-- The cluster: replicas by when they were last seen, a lease per account, a claim per
-- outbox channel. Times are microseconds since the epoch by the database's clock.
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY,
    last_seen INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    account TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token INTEGER NOT NULL,  -- grows with every change of holder: the fencing token
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_claims (
    channel TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
"""
# Failures of the file rather than of the statement: retrying later can help.
_UNAVAILABLE = {
    sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PROTOCOL,
}  # fmt: skip
# A file whose pages are broken: retrying cannot help, a person must restore or move it.
_DAMAGED = {sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB}
# The database's clock, in microseconds since the epoch.
NOW_US = "CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)"


class _Worker:
    """One thread running calls in order, each answered on the caller's event loop."""

    def __init__(self) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        threading.Thread(target=self._serve, name="dialwatch-sqlite", daemon=True).start()

    def call(self, work: Callable[[], T]) -> asyncio.Future[T]:
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[T] = loop.create_future()
        self._calls.put((loop, answer, work))
        return answer

    def stop(self) -> None:
        """After the calls queued so far; the thread ends on its own."""
        self._calls.put(None)

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            loop, answer, work = call
            if answer.cancelled():  # its caller stopped waiting before it started
                continue
            try:
                result, exc = work(), None
            except BaseException as error:  # the caller's to handle, on its loop
                result, exc = None, error
            with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting
                loop.call_soon_threadsafe(_answer, answer, result, exc)


_Call = tuple[asyncio.AbstractEventLoop, "asyncio.Future[Any]", Callable[[], Any]]


def _answer(answer: asyncio.Future[Any], result: object, exc: BaseException | None) -> None:
    if answer.cancelled():
        return
    if exc is None:
        answer.set_result(result)
    else:
        answer.set_exception(exc)


class Database(SqlTables):
    """One connection to the state file, opened at the current schema, used from one
    thread of its own."""

    now_us = NOW_US

    def __init__(self, path: Path | str, replica: str) -> None:
        self._path = path
        self.replica = replica
        self._savepoints = itertools.count()
        self._worker = _Worker()
        self._db: sqlite3.Connection | None = None

    @classmethod
    async def open(cls, path: Path | str, replica: str) -> Self:
        store = cls(path, replica)
        try:
            store._db = await store._worker.call(store._connect)
        except BaseException:
            store._worker.stop()
            raise
        return store

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self._path), isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ConfigError(
                    f"{self._path}: state file is from a newer dialwatch (schema {version}, this "
                    f"one reads {SCHEMA_VERSION}); upgrade dialwatch or point DIALWATCH_STATE "
                    "elsewhere"
                )
            if version:
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    _migrate(db, _MIGRATIONS[step])
            db.executescript(_SCHEMA)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            # Broken pages are found now, at start, rather than by a check hours later.
            problems = [p for (p,) in db.execute("PRAGMA quick_check(3)")]
            if problems != ["ok"]:
                raise ConfigError(f"{self._path}: {_damaged('; '.join(problems))}")
        except sqlite3.DatabaseError as exc:
            db.close()
            code = _code(exc)
            if isinstance(exc, sqlite3.OperationalError) and code in _UNAVAILABLE:
                raise StateUnavailable(f"{self._path}: {exc}") from exc
            if code == sqlite3.SQLITE_CORRUPT:
                raise ConfigError(f"{self._path}: {_damaged(str(exc))}") from exc
            raise ConfigError(
                f"{self._path}: not a dialwatch state file ({exc}); point DIALWATCH_STATE at "
                "the right file, or move this one away to start afresh"
            ) from exc
        except BaseException:
            db.close()
            raise
        return db

    async def close(self) -> None:
        if self._db is not None:
            await self._run(lambda db: db.close())
            self._db = None
        self._worker.stop()

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run `work` with the connection, on its thread. A locked, full, failing or
        damaged file is StateUnavailable (nothing of `work` committed), so the outage is
        reported like any other; anything else is a bug."""
        db = self._db
        if db is None:
            raise RuntimeError("the state store is closed")
        try:
            return await self._worker.call(lambda: work(db))
        except sqlite3.DatabaseError as exc:
            code = _code(exc)
            if code in _DAMAGED:
                raise StateUnavailable(f"{self._path}: {_damaged(str(exc))}") from exc
            if isinstance(exc, sqlite3.OperationalError) and code in _UNAVAILABLE:
                raise StateUnavailable(f"{self._path}: {exc}") from exc
            raise

    async def _all(self, sql: str, params: Any = ()) -> list[Row]:
        return await self._run(lambda db: db.execute(sql, params).fetchall())

    async def _reads(self, reads: list[tuple[str, Any]]) -> list[list[Row]]:
        return await self._run(lambda db: [db.execute(sql, p).fetchall() for sql, p in reads])

    async def _one(self, sql: str, params: Any = ()) -> Row | None:
        # All rows, so that the statement is finished (an INSERT ... RETURNING keeps its
        # write lock until it is).
        rows = await self._all(sql, params)
        return rows[0] if rows else None

    async def _write(self, sql: str, params: Any = ()) -> int:
        """One statement, committed (autocommit outside a transaction)."""
        return await self._run(lambda db: db.execute(sql, params).rowcount)

    @contextmanager
    def _transaction(self, db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        """On the connection's thread: a savepoint, a transaction of its own."""
        name = f"sp{next(self._savepoints)}"
        db.execute(f"SAVEPOINT {name}")
        try:
            yield db
        except BaseException:
            db.execute(f"ROLLBACK TO {name}")
            db.execute(f"RELEASE {name}")
            raise
        db.execute(f"RELEASE {name}")

    async def in_memory_copy(self) -> Self:
        """A private copy of the state file in memory, by SQLite's online backup, which
        reads one snapshot (no write lock: a service writing meanwhile is not held up)."""

        def copy(db: sqlite3.Connection) -> sqlite3.Connection:
            memory = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
            db.backup(memory)
            return memory

        copied = type(self)(":memory:", self.replica)
        copied._db = await self._run(copy)
        return copied


def _code(exc: sqlite3.Error) -> int | None:
    """SQLite's primary result code of an error (None for errors of the Python module)."""
    code: int | None = getattr(exc, "sqlite_errorcode", None)
    return None if code is None else code & 0xFF


def _damaged(problem: str) -> str:
    return (
        f"the state file is damaged ({problem}); restore it from a backup, or move it away "
        "to start afresh"
    )


def _migrate(db: sqlite3.Connection, steps: tuple[tuple[str, str], ...]) -> None:
    tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    for table, statement in steps:
        if table in tables:
            db.execute(statement)
