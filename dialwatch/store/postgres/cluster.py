"""Replicas, account leases and the fence on every account write, in PostgreSQL.

A lease row per account: its holder, an expiry by the database's clock, and a token
that grows with every change of holder. A fenced write first reads its lease row
`FOR SHARE` in the same transaction: a takeover (which updates the row) waits for that
transaction to end, and a write whose token is no longer current raises LeaseLost.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from dialwatch.clock import from_micros
from dialwatch.errors import LeaseLost
from dialwatch.store.common import micros
from dialwatch.store.postgres.schema import NOW_US, Conn, Database
from dialwatch.store.protocol import Fence, ReplicaInfo


async def check_fence(conn: Conn, account: str, fence: Fence | None) -> None:
    """Inside a write transaction: raise LeaseLost unless `fence` is current."""
    if fence is None:
        return
    cursor = await conn.execute(
        "SELECT 1 FROM leases WHERE account = %s AND holder = %s AND token = %s FOR SHARE",
        (account, fence.replica, fence.token),
    )
    if await cursor.fetchone() is None:
        raise LeaseLost(account)


class ClusterTables(Database):
    """The cluster's part of the PostgreSQL store."""

    async def replicas(self, seen_within: timedelta) -> list[ReplicaInfo]:
        rows = await self._all(
            "SELECT r.name, r.last_seen, COALESCE(array_agg(l.account ORDER BY l.account) "
            "FILTER (WHERE l.account IS NOT NULL), '{}') FROM replicas r "
            f"LEFT JOIN leases l ON l.holder = r.name AND l.expires_at > {NOW_US} "
            f"WHERE r.last_seen > {NOW_US} - %s GROUP BY r.name, r.last_seen ORDER BY r.name",
            (micros(seen_within),),
        )
        return [ReplicaInfo(name, from_micros(seen), tuple(held)) for name, seen, held in rows]

    async def leave(self, replica: str) -> None:
        async def leave(conn: Conn) -> None:
            await conn.execute("UPDATE leases SET expires_at = 0 WHERE holder = %s", (replica,))
            await conn.execute("DELETE FROM outbox_claims WHERE holder = %s", (replica,))
            await conn.execute("DELETE FROM replicas WHERE name = %s", (replica,))

        await self._run(leave)

    async def acquire_leases(
        self, replica: str, accounts: Sequence[str], ttl: timedelta
    ) -> dict[str, int]:
        rows = await self._all(
            f"INSERT INTO leases SELECT a, %s, 1, {NOW_US} + %s FROM unnest(%s::text[]) AS a "
            "ON CONFLICT (account) DO UPDATE SET holder = excluded.holder, "
            "token = leases.token + 1, expires_at = excluded.expires_at "
            f"WHERE leases.expires_at <= {NOW_US} RETURNING account, token",
            (replica, micros(ttl), list(accounts)),
        )
        return dict(rows)
