"""The outbox's tables in PostgreSQL, and delivery claims: several replicas deliver from
one outbox, each channel claimed by one replica at a time (a row per channel with its
holder and an expiry by the database's clock), so its messages go out once and in
order; a dead replica's claim expires and another replica carries on."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from dialwatch.clock import to_iso
from dialwatch.delivery.messages import Part
from dialwatch.delivery.outbox import OutboxRow
from dialwatch.store.common import micros
from dialwatch.store.postgres.schema import NOW_US, Conn, Database, marks
from dialwatch.store.sql import (
    CLAIM_TTL,
    HEADS,
    OUTBOX_COLUMNS,
    UNDELIVERED,
    grouped,
    new_parts,
    outbox_row,
    queue_times,
    waiting_message,
)

# Channels with something due now: the head of their queue, or a held message.
_DUE_CHANNELS = (
    f"SELECT channel FROM outbox WHERE id IN ({HEADS}) AND next_attempt_at <= %(now)s "
    f"UNION SELECT channel FROM outbox WHERE held = 1 AND {UNDELIVERED} "
    "AND next_attempt_at <= %(now)s"
)


class OutboxTables(Database):
    """The outbox's part of the PostgreSQL store."""

    async def _queue(
        self,
        conn: Conn,
        account: str,
        channel: str,
        entries: list[Part],
        now: datetime,
        expires_at: datetime,
        group_wait: timedelta,
        hold_until: datetime | None,
    ) -> None:
        cursor = await conn.execute(
            "SELECT DISTINCT part->>0 FROM outbox, jsonb_array_elements(outbox.parts::jsonb) "
            f"AS part WHERE outbox.channel = %s AND {UNDELIVERED}",
            (channel,),
        )
        parts = new_parts(entries, {alert for (alert,) in await cursor.fetchall()})
        if not parts:
            return
        send_at, expires = queue_times(now, expires_at, group_wait, hold_until)
        waiting = None
        if send_at > now:
            # Join the message already waiting for the same moment on this channel.
            sql, params = waiting_message(account, channel, now, hold_until)
            cursor = await conn.execute(marks(sql) + " FOR UPDATE", params)
            waiting = await cursor.fetchone()
        if waiting is not None:
            parts = json.loads(waiting[1]) + parts
        values = grouped(account, parts)
        if waiting is not None:
            await conn.execute(
                "UPDATE outbox SET alert = %s, decision = %s, title = %s, body = %s, "
                "notify_type = %s, parts = %s WHERE id = %s",
                (*values, waiting[0]),
            )
            return
        await conn.execute(
            "INSERT INTO outbox (alert, decision, title, body, notify_type, parts, channel, "
            "created_at, expires_at, next_attempt_at, held) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
            (
                *values,
                channel,
                to_iso(now),
                to_iso(expires),
                to_iso(send_at),
                int(hold_until is not None),
            ),
        )

    async def due(self, now: datetime) -> list[OutboxRow]:
        """The due notifications of the channels this replica claims now (those no other
        live replica holds), in order."""

        async def claim(conn: Conn) -> list[OutboxRow]:
            cursor = await conn.execute(
                f"INSERT INTO outbox_claims SELECT channel, %(me)s, {NOW_US} + %(ttl)s "
                f"FROM ({_DUE_CHANNELS}) AS due ON CONFLICT (channel) DO UPDATE "
                "SET holder = excluded.holder, expires_at = excluded.expires_at "
                f"WHERE outbox_claims.expires_at <= {NOW_US} "
                "OR outbox_claims.holder = excluded.holder RETURNING channel",
                {"me": self.replica, "ttl": micros(CLAIM_TTL), "now": to_iso(now)},
            )
            claimed = [channel for (channel,) in await cursor.fetchall()]
            if not claimed:
                return []
            cursor = await conn.execute(
                f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {UNDELIVERED} "
                "AND channel = ANY(%(claimed)s) AND ("
                f"(held = 0 AND channel IN (SELECT channel FROM outbox WHERE id IN ({HEADS}) "
                "AND next_attempt_at <= %(now)s)) OR (held = 1 AND next_attempt_at <= %(now)s)) "
                "ORDER BY id",
                {"claimed": claimed, "now": to_iso(now)},
            )
            return [outbox_row(r) for r in await cursor.fetchall()]

        return await self._run(claim)

    async def was_announced(self, channel: str, alert: str, episode: str | None) -> bool:
        row = await self._one(
            "SELECT 1 FROM outbox, jsonb_array_elements(outbox.parts::jsonb) AS part "
            "WHERE outbox.channel = %(channel)s AND outbox.delivered_at IS NOT NULL "
            "AND part->>0 = %(alert)s AND part->>1 IN ('first', 'repeat') "
            "AND (%(episode)s::text IS NULL OR coalesce(part->>5, %(episode)s) = %(episode)s) "
            "LIMIT 1",
            {"channel": channel, "alert": alert, "episode": episode},
        )
        return row is not None
