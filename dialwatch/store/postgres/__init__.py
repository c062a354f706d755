"""The PostgreSQL backend: state that several replicas share, with leases, fencing and
outbox claims. The tables and their meaning are the SQLite file's (`store/sql.py`).

Alert states, balances, silences and digests are here; the ledger, the outbox and the
cluster have modules of their own, and `schema.py` holds the schema and the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from dialwatch.alerting.lifecycle import AlertState
from dialwatch.delivery.outbox import OutboxEntry, by_channel
from dialwatch.errors import ConfigError
from dialwatch.store.common import Row
from dialwatch.store.postgres.cluster import ClusterTables, check_fence
from dialwatch.store.postgres.ledger import LedgerTables
from dialwatch.store.postgres.outbox import OutboxTables
from dialwatch.store.postgres.schema import Conn, marks
from dialwatch.store.protocol import Fence, Known, LedgerCheckpoint
from dialwatch.store.sql import TABLES, check_writes
from dialwatch.store.sqlite import SqliteStore
from dialwatch.units import Money

__all__ = ["PostgresStore"]


class PostgresStore(LedgerTables, OutboxTables, ClusterTables):
    """All of dialwatch's state in one PostgreSQL database (see `store.protocol.Store`)."""

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
        batches = check_writes(
            account, now, states, balance, ledger, failing_since, decisions, digests, prune, known
        )
        groups = by_channel(outbox, group_wait)
        if not batches and not groups:
            return  # nothing changed (a fence guards writes only)

        async def commit(conn: Conn) -> None:
            await check_fence(conn, account, fence)
            # One pipeline for all of them: sent together, not a round trip each.
            async with conn.pipeline(), conn.cursor() as cur:
                for sql, rows in batches:
                    if len(rows) == 1:
                        await cur.execute(marks(sql), rows[0])
                    elif rows:
                        await cur.executemany(marks(sql), rows)
            for (channel, hold_until, wait), parts in groups.items():
                await self._queue(conn, account, channel, parts, now, expires_at, wait, hold_until)

        await self._run(commit)

    async def dump(self, tables: Sequence[str]) -> dict[str, tuple[list[str], list[Row]]]:
        """Every row of `tables`, with the column names, from one snapshot."""

        async def read(conn: Conn) -> dict[str, tuple[list[str], list[Row]]]:
            await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            dumped = {}
            for table in tables:
                cursor = await conn.execute(f"SELECT * FROM {table}")
                columns = [column.name for column in cursor.description or ()]
                dumped[table] = (columns, await cursor.fetchall())
            return dumped

        return await self._run(read)

    async def in_memory_copy(self) -> SqliteStore:
        """The shared state copied into a private SQLite database in memory (the two
        backends hold the same rows), read from one snapshot without a lock."""
        copied = await SqliteStore.open(":memory:", self.replica)
        try:
            await copied.load(await self.dump(TABLES))
        except BaseException:
            await copied.close()
            raise
        return copied

    async def load(self, tables: Mapping[str, tuple[list[str], list[Row]]]) -> None:
        """Insert these rows into an empty database, in one transaction; ConfigError if
        any table already holds state."""

        async def load(conn: Conn) -> None:
            for table in tables:
                cursor = await conn.execute(f"SELECT EXISTS (SELECT 1 FROM {table})")
                row = await cursor.fetchone()
                if row and row[0]:
                    raise ConfigError(
                        f"the PostgreSQL database already holds dialwatch state (table {table} "
                        "has rows); import only into a new database"
                    )
            for table, (columns, rows) in tables.items():
                if rows:
                    marks = ", ".join(["%s"] * len(columns))
                    async with conn.cursor() as cur:
                        await cur.executemany(
                            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                        )
            for table in ("outbox", "silences"):  # ids go on from the copied ones
                await conn.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)"
                )

        await self._run(load)
