"""The SQLite backend: the whole state in one local file, for a single replica.

Alert states, balances, silences and digests are here; the ledger and the outbox
have modules of their own, and `schema.py` holds the schema and the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from dialwatch.alerting.lifecycle import AlertState
from dialwatch.delivery.outbox import OutboxEntry, by_channel
from dialwatch.store.common import Row
from dialwatch.store.protocol import Fence, Known, LedgerCheckpoint
from dialwatch.store.sql import check_writes
from dialwatch.store.sqlite.cluster import ClusterTables, check_fence
from dialwatch.store.sqlite.ledger import LedgerTables
from dialwatch.store.sqlite.outbox import OutboxTables
from dialwatch.units import Money


class SqliteStore(LedgerTables, OutboxTables, ClusterTables):
    """All of dialwatch's state in one SQLite file (see `store.protocol.Store`)."""

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

        def commit(db: sqlite3.Connection) -> None:
            with self._transaction(db):
                check_fence(db, account, fence)
                for sql, rows in batches:
                    db.executemany(sql, rows)
                for (channel, hold_until, wait), parts in groups.items():
                    self._queue(db, account, channel, parts, now, expires_at, wait, hold_until)

        await self._run(commit)

    async def load(self, tables: Mapping[str, tuple[list[str], list[Row]]]) -> None:
        """Insert these rows (as `dump` gives them, from either backend), in one
        transaction."""

        def write(db: sqlite3.Connection) -> None:
            with self._transaction(db):
                for table, (columns, rows) in tables.items():
                    marks = ", ".join("?" * len(columns))
                    db.executemany(
                        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})", rows
                    )

        await self._run(write)

    async def dump(self, tables: Sequence[str]) -> dict[str, tuple[list[str], list[Row]]]:
        """Every row of `tables`, with the column names (to copy the state elsewhere)."""

        def read(db: sqlite3.Connection) -> dict[str, tuple[list[str], list[Row]]]:
            dumped = {}
            for table in tables:
                cursor = db.execute(f"SELECT * FROM {table}")
                dumped[table] = ([c[0] for c in cursor.description], cursor.fetchall())
            return dumped

        return await self._run(read)
