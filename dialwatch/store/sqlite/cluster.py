"""Replicas and account leases in the SQLite file (outbox claims are in `outbox.py`).
One file is one host's, so this serves processes sharing it; the rules are PostgreSQL's."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from datetime import timedelta

from dialwatch.clock import from_micros
from dialwatch.errors import LeaseLost
from dialwatch.store.common import micros
from dialwatch.store.protocol import Fence, ReplicaInfo
from dialwatch.store.sqlite.schema import NOW_US, Database


def check_fence(db: sqlite3.Connection, account: str, fence: Fence | None) -> None:
    """Inside a write transaction: raise LeaseLost unless `fence` is current."""
    if fence is None:
        return
    row = db.execute(
        "SELECT 1 FROM leases WHERE account = ? AND holder = ? AND token = ?",
        (account, fence.replica, fence.token),
    ).fetchone()
    if row is None:
        raise LeaseLost(account)


class ClusterTables(Database):
    """The cluster's part of the SQLite store."""

    async def replicas(self, seen_within: timedelta) -> list[ReplicaInfo]:
        def read(db: sqlite3.Connection) -> list[ReplicaInfo]:
            rows = db.execute(
                f"SELECT name, last_seen FROM replicas WHERE last_seen > {NOW_US} - ? "
                "ORDER BY name",
                (micros(seen_within),),
            ).fetchall()
            held: dict[str, list[str]] = {}
            for account, holder in db.execute(
                f"SELECT account, holder FROM leases WHERE expires_at > {NOW_US} ORDER BY account"
            ):
                held.setdefault(holder, []).append(account)
            return [
                ReplicaInfo(name, from_micros(seen), tuple(held.get(name, ())))
                for name, seen in rows
            ]

        return await self._run(read)

    async def leave(self, replica: str) -> None:
        def leave(db: sqlite3.Connection) -> None:
            with self._transaction(db):
                db.execute("UPDATE leases SET expires_at = 0 WHERE holder = ?", (replica,))
                db.execute("DELETE FROM outbox_claims WHERE holder = ?", (replica,))
                db.execute("DELETE FROM replicas WHERE name = ?", (replica,))

        await self._run(leave)

    async def acquire_leases(
        self, replica: str, accounts: Sequence[str], ttl: timedelta
    ) -> dict[str, int]:
        def acquire(db: sqlite3.Connection) -> dict[str, int]:
            taken: dict[str, int] = {}
            with self._transaction(db):
                for account in accounts:
                    row = db.execute(
                        f"INSERT INTO leases VALUES (?, ?, 1, {NOW_US} + ?) "
                        "ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, "
                        "token = leases.token + 1, expires_at = excluded.expires_at "
                        f"WHERE leases.expires_at <= {NOW_US} RETURNING token",
                        (account, replica, micros(ttl)),
                    ).fetchone()
                    if row is not None:
                        taken[account] = row[0]
            return taken

        return await self._run(acquire)
