"""The PostgreSQL backend: state that several replicas share, with leases, fencing and
outbox claims. The tables and their meaning are the SQLite file's (`store/sql.py`).

Alert states, balances, silences and digests are here; the ledger, the outbox and the
cluster have modules of their own, and `schema.py` holds the schema and the pool.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.clock import to_iso, to_micros
from dialwatch.delivery.messages import Message
from dialwatch.delivery.outbox import OutboxEntry
from dialwatch.errors import ConfigError
from dialwatch.store.common import Row
from dialwatch.store.postgres.cluster import ClusterTables, check_fence
from dialwatch.store.postgres.ledger import LedgerTables
from dialwatch.store.postgres.outbox import OutboxTables
from dialwatch.store.postgres.schema import Conn
from dialwatch.store.protocol import Fence, LedgerCheckpoint
from dialwatch.store.sql import HISTORY_KEPT, HISTORY_STEP_US
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
    ) -> None:
        entries, logged, due = list(outbox), list(decisions), list(digests)
        stamp = to_iso(now)

        async def commit(conn: Conn) -> None:
            await check_fence(conn, account, fence)
            async with conn.cursor() as cur:
                if logged:
                    await cur.executemany(
                        "INSERT INTO alert_log VALUES (%s, %s, %s, %s)",
                        [(account, rule, decision, stamp) for rule, decision in logged],
                    )
                if due:
                    await cur.executemany(
                        "INSERT INTO digests VALUES (%s, %s) "
                        "ON CONFLICT (name) DO UPDATE SET sent_for = excluded.sent_for",
                        [(name, to_iso(at)) for name, at in due],
                    )
            if failing_since is None:
                await conn.execute("DELETE FROM failing WHERE account = %s", (account,))
            else:
                await conn.execute(
                    "INSERT INTO failing VALUES (%s, %s) "
                    "ON CONFLICT (account) DO UPDATE SET since = excluded.since",
                    (account, to_iso(failing_since)),
                )
            if ledger is not None:
                await self._commit_ledger(conn, account, ledger)
            await _write_states(conn, account, states)
            if balance is not None:
                await conn.execute(
                    "INSERT INTO balances VALUES (%s, %s, %s, %s) ON CONFLICT (account) "
                    "DO UPDATE SET cents = excluded.cents, currency = excluded.currency, "
                    "checked_at = excluded.checked_at",
                    (account, balance.cents, balance.currency, stamp),
                )
                bucket = to_micros(now) // HISTORY_STEP_US * HISTORY_STEP_US
                await conn.execute(
                    "INSERT INTO balance_history VALUES (%s, %s, %s, %s) "
                    "ON CONFLICT (account, at) DO UPDATE SET cents = excluded.cents, "
                    "currency = excluded.currency",
                    (account, bucket, balance.cents, balance.currency),
                )
            await _forget_history(conn, account, now - HISTORY_KEPT)
            await self._prune_outbox(conn, now)
            # One message per channel, and per end of quiet hours for what they hold back.
            groups: dict[tuple[str, datetime | None], list[tuple[str, str, Message]]] = {}
            for e in entries:
                groups.setdefault((e.channel, e.hold_until), []).append(
                    (e.alert, e.decision, e.message)
                )
            for (channel, hold_until), parts in groups.items():
                await self._queue(
                    conn, account, channel, parts, now, expires_at, group_wait, hold_until
                )

        await self._run(commit)

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


async def _write_states(conn: Conn, account: str, states: dict[str, AlertState]) -> None:
    gone = [rule for rule, state in states.items() if state.status is Status.INACTIVE]
    if gone:
        await conn.execute(
            "DELETE FROM alerts WHERE account = %s AND rule = ANY(%s)", (account, gone)
        )
    kept = [
        (
            account,
            rule,
            state.status.value,
            to_iso(state.active_since) if state.active_since else None,
            to_iso(state.last_notified) if state.last_notified else None,
            state.notifications,
        )
        for rule, state in states.items()
        if state.status is not Status.INACTIVE
    ]
    if kept:
        async with conn.cursor() as cur:
            await cur.executemany(
                "INSERT INTO alerts VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (account, rule) "
                "DO UPDATE SET status = excluded.status, active_since = excluded.active_since, "
                "last_notified = excluded.last_notified, notifications = excluded.notifications",
                kept,
            )


async def _forget_history(conn: Conn, account: str, horizon: datetime) -> None:
    await conn.execute(
        "DELETE FROM balance_history WHERE account = %s AND at < %s",
        (account, to_micros(horizon)),
    )
    await conn.execute(
        "DELETE FROM spend_days WHERE account = %s AND day < %s",
        (account, horizon.strftime("%Y-%m-%d")),
    )
    await conn.execute(
        "DELETE FROM alert_log WHERE account = %s AND at < %s", (account, to_iso(horizon))
    )
