"""The SQLite backend: the whole state in one local file, for a single replica.

Alert states, balances, silences and digests are here; the ledger and the outbox
have modules of their own, and `schema.py` holds the schema and the connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.clock import to_iso, to_micros
from dialwatch.delivery.messages import Message
from dialwatch.delivery.outbox import OutboxEntry
from dialwatch.store.common import Row
from dialwatch.store.protocol import Fence, LedgerCheckpoint
from dialwatch.store.sql import HISTORY_KEPT, HISTORY_STEP_US
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

    async def dump(self, tables: Sequence[str]) -> dict[str, tuple[list[str], list[Row]]]:
        """Every row of `tables`, with the column names (to copy the state elsewhere)."""

        def read(db: sqlite3.Connection) -> dict[str, tuple[list[str], list[Row]]]:
            dumped = {}
            for table in tables:
                cursor = db.execute(f"SELECT * FROM {table}")
                dumped[table] = ([c[0] for c in cursor.description], cursor.fetchall())
            return dumped

        return await self._run(read)


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
