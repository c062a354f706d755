"""The PostgreSQL database: its schema, migrations, the connection pool, transactions,
and turning a lost connection into StateUnavailable.

psycopg 3 (async) with psycopg_pool: no call blocks the event loop. The pool checks a
connection before handing it out and reconnects with backoff, so a database restart or
a terminated backend costs the operations in flight, which fail as StateUnavailable
before anything of theirs committed, and nothing else.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Self, TypeVar

import psycopg
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from dialwatch.errors import ConfigError, StateUnavailable
from dialwatch.logs import REDACTOR
from dialwatch.store.common import Row, SqlTables
from dialwatch.store.sql import FILL_SPEND_TOTALS, SPEND_TOTALS

T = TypeVar("T")
Conn = psycopg.AsyncConnection[Row]

SCHEMA_VERSION = 8  # the same numbering as the SQLite file's (dialwatch.store.sqlite)
# Serialises schema creation and upgrades when several replicas start at once.
_SCHEMA_LOCK = 0x6469616C77617463  # "dialwatc"
# What takes a database from version N-1 to N (the schema below is version 5, the first
# PostgreSQL has); add a step here and bump SCHEMA_VERSION when a table changes.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    6: ("ALTER TABLE ledger_cursor ADD COLUMN IF NOT EXISTS covers_since TEXT",),
    7: (
        "ALTER TABLE spend_days ADD COLUMN IF NOT EXISTS currency TEXT NOT NULL DEFAULT 'USD'",
        "UPDATE spend_days SET currency = COALESCE((SELECT currency FROM ledger WHERE "
        "ledger.account = spend_days.account ORDER BY key DESC LIMIT 1), 'USD')",
        "ALTER TABLE spend_days DROP CONSTRAINT IF EXISTS spend_days_pkey",
        "ALTER TABLE spend_days ADD PRIMARY KEY (account, day, currency)",
    ),
    # Spend per minute and hour, so that a window's sum does not read its items.
    8: (SPEND_TOTALS, *FILL_SPEND_TOTALS),
}
# The database's clock, in microseconds since the epoch.
NOW_US = "(extract(epoch from clock_timestamp()) * 1000000)::bigint"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS dialwatch_schema (
    only_row BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (only_row),
    version INTEGER NOT NULL
);
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
    cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    checked_at TEXT NOT NULL  -- when the balance last changed (a commit writes it then)
);
CREATE TABLE IF NOT EXISTS outbox (
    id BIGSERIAL PRIMARY KEY,
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
    parts TEXT NOT NULL DEFAULT '[]',
    held INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (next_attempt_at)
    WHERE delivered_at IS NULL AND expired_at IS NULL;
CREATE TABLE IF NOT EXISTS ledger (
    account TEXT NOT NULL,
    key TEXT NOT NULL,
    type TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    cents BIGINT NOT NULL,
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
);
CREATE TABLE IF NOT EXISTS ledger_cursor (
    account TEXT PRIMARY KEY,
    newest TEXT NOT NULL,
    covers_since TEXT  -- the stored ledger holds every item since then (NULL: unknown)
);
CREATE TABLE IF NOT EXISTS silences (
    id BIGSERIAL PRIMARY KEY,
    rule TEXT NOT NULL,
    account TEXT,
    ends_at TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_log (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    decision TEXT NOT NULL,
    at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS alert_log_time ON alert_log (account, at);
CREATE TABLE IF NOT EXISTS digests (
    name TEXT PRIMARY KEY,
    sent_for TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failing (
    account TEXT PRIMARY KEY,
    since TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS balance_history (
    account TEXT NOT NULL,
    at BIGINT NOT NULL,
    cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    PRIMARY KEY (account, at)
);
CREATE TABLE IF NOT EXISTS spend_days (
    account TEXT NOT NULL,
    day TEXT NOT NULL,
    cents BIGINT NOT NULL,
    currency TEXT NOT NULL DEFAULT 'USD',
    PRIMARY KEY (account, day, currency)
);
{SPEND_TOTALS};
CREATE TABLE IF NOT EXISTS item_matches (
    account TEXT NOT NULL,
    rule TEXT NOT NULL,
    key TEXT NOT NULL,
    PRIMARY KEY (account, rule, key)
);
CREATE TABLE IF NOT EXISTS replicas (
    name TEXT PRIMARY KEY,
    last_seen BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    account TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    token BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_claims (
    channel TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
"""


class Database(SqlTables):
    """A pool of connections to one PostgreSQL database, at the current schema."""

    now_us = NOW_US
    postgres = True

    def __init__(self, pool: AsyncConnectionPool[Conn], replica: str) -> None:
        self._pool = pool
        self.replica = replica

    @classmethod
    async def open(cls, url: str, replica: str) -> Self:
        pool: AsyncConnectionPool[Conn] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=8,
            open=False,
            kwargs={"autocommit": True},
            check=AsyncConnectionPool.check_connection,
            timeout=5.0,  # waiting longer for a connection only delays saying so
            reconnect_timeout=86400.0,  # keep trying through a long outage
            name="dialwatch",
        )
        store = cls(pool, replica)
        try:
            await pool.open(wait=True, timeout=10.0)
            await store._run(_create_schema)
        except PoolTimeout as exc:
            await pool.close()
            raise StateUnavailable(
                f"PostgreSQL is unavailable: no connection within 10s ({_first_line(exc)})"
            ) from exc
        except BaseException:
            await pool.close()
            raise
        return store

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        """A connection; a lost one (or none to be had) raises StateUnavailable."""
        try:
            async with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, PoolTimeout) as exc:
            raise StateUnavailable(
                f"PostgreSQL is unavailable: {REDACTOR.redact(_first_line(exc))}"
            ) from exc

    async def _run(self, work: Callable[[Conn], Awaitable[T]]) -> T:
        """`work` in one transaction."""
        async with self._connection() as conn, conn.transaction():
            return await work(conn)

    async def _all(self, sql: str, params: Any = ()) -> list[Row]:
        async with self._connection() as conn:
            cursor = await conn.execute(marks(sql), params)
            return await cursor.fetchall()

    async def _reads(self, reads: list[tuple[str, Any]]) -> list[list[Row]]:
        # Pipelined: sent together, answered in one round trip, not one each.
        async with self._connection() as conn, conn.pipeline():
            cursors = [await conn.execute(marks(sql), p) for sql, p in reads]
            return [await cursor.fetchall() for cursor in cursors]

    async def _one(self, sql: str, params: Any = ()) -> Row | None:
        async with self._connection() as conn:
            cursor = await conn.execute(marks(sql), params)
            return await cursor.fetchone()

    async def _write(self, sql: str, params: Any = ()) -> int:
        async with self._connection() as conn:
            cursor = await conn.execute(marks(sql), params)
            return cursor.rowcount


async def _create_schema(conn: Conn) -> None:
    """Create or upgrade the schema, one replica at a time."""
    await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
    exists = await (await conn.execute("SELECT to_regclass('dialwatch_schema')")).fetchone()
    version = 0
    if exists and exists[0]:
        row = await (await conn.execute("SELECT version FROM dialwatch_schema")).fetchone()
        version = row[0] if row else 0
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"the PostgreSQL state is from a newer dialwatch (schema {version}, this one "
            f"reads {SCHEMA_VERSION}); upgrade dialwatch or point DIALWATCH_STATE elsewhere"
        )
    if version:
        for step in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _MIGRATIONS[step]:
                await conn.execute(statement)
    await conn.execute(_SCHEMA)
    await conn.execute(
        "INSERT INTO dialwatch_schema (version) VALUES (%s) "
        "ON CONFLICT (only_row) DO UPDATE SET version = excluded.version",
        (SCHEMA_VERSION,),
    )


@functools.cache
def marks(sql: str) -> str:
    """A statement written for both backends (`?` placeholders) in psycopg's terms."""
    return sql.replace("?", "%s")


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
