"""The outbox's tables: notifications written before they are sent, one message per
channel and check (joined by `group_wait` and quiet hours), and their delivery state."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from dialwatch.clock import to_iso
from dialwatch.delivery.messages import Part
from dialwatch.delivery.outbox import OutboxRow
from dialwatch.store.common import micros
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
from dialwatch.store.sqlite.schema import NOW_US, Database


class OutboxTables(Database):
    """The outbox's part of the Store."""

    def _queue(
        self,
        db: sqlite3.Connection,
        account: str,
        channel: str,
        entries: list[Part],
        now: datetime,
        expires_at: datetime,
        group_wait: timedelta,
        hold_until: datetime | None,
    ) -> None:
        parts = new_parts(entries, self._waiting_alerts(db, channel))
        if not parts:
            return
        send_at, expires = queue_times(now, expires_at, group_wait, hold_until)
        waiting = None
        if send_at > now:
            # Join the message already waiting for the same moment on this channel.
            waiting = db.execute(*waiting_message(account, channel, now, hold_until)).fetchone()
        if waiting is not None:
            parts = json.loads(waiting[1]) + parts
        values = grouped(account, parts)
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
                to_iso(expires),
                to_iso(send_at),
                int(hold_until is not None),
            ),
        )

    async def due(self, now: datetime) -> list[OutboxRow]:
        """Undelivered notifications of every channel whose oldest one is due, in order.

        A channel's messages wait behind its oldest undelivered one, so a channel that
        comes back receives them in the order they were written.
        """

        def claim(db: sqlite3.Connection) -> list[OutboxRow]:
            with self._transaction(db):
                rows = [
                    outbox_row(r)
                    for r in db.execute(
                        f"SELECT {OUTBOX_COLUMNS} FROM outbox WHERE {UNDELIVERED} AND ("
                        f"(held = 0 AND channel IN (SELECT channel FROM outbox WHERE id IN "
                        f"({HEADS}) AND next_attempt_at <= ?)) "
                        "OR (held = 1 AND next_attempt_at <= ?)) ORDER BY id",
                        (to_iso(now), to_iso(now)),
                    )
                ]
                claimed = self._claim_channels(db, sorted({row.channel for row in rows}))
            return [row for row in rows if row.channel in claimed]

        return await self._run(claim)

    @staticmethod
    def _waiting_alerts(db: sqlite3.Connection, channel: str) -> set[str]:
        rows = db.execute(
            "SELECT DISTINCT json_extract(part.value, '$[0]') FROM outbox, "
            f"json_each(outbox.parts) AS part WHERE outbox.channel = ? AND {UNDELIVERED}",
            (channel,),
        )
        return {alert for (alert,) in rows}

    async def was_announced(self, channel: str, alert: str, episode: str | None) -> bool:
        row = await self._one(
            "SELECT 1 FROM outbox, json_each(outbox.parts) AS part WHERE outbox.channel = ? "
            "AND outbox.delivered_at IS NOT NULL AND json_extract(part.value, '$[0]') = ? "
            "AND json_extract(part.value, '$[1]') IN ('first', 'repeat') AND (? IS NULL "
            "OR coalesce(json_extract(part.value, '$[5]'), ?) = ?) LIMIT 1",
            (channel, alert, episode, episode, episode),
        )
        return row is not None

    def _claim_channels(self, db: sqlite3.Connection, channels: Sequence[str]) -> set[str]:
        """Inside a transaction: claim these channels for this replica where free."""
        claimed = set()
        for channel in channels:
            row = db.execute(
                f"INSERT INTO outbox_claims VALUES (?, ?, {NOW_US} + ?) "
                "ON CONFLICT (channel) DO UPDATE SET holder = excluded.holder, "
                "expires_at = excluded.expires_at "
                f"WHERE outbox_claims.expires_at <= {NOW_US} "
                "OR outbox_claims.holder = excluded.holder RETURNING channel",
                (channel, self.replica, micros(CLAIM_TTL)),
            ).fetchone()
            if row is not None:
                claimed.add(channel)
        return claimed
