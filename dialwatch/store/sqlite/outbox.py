"""The outbox's tables: notifications written before they are sent, one message per
channel and check (joined by `group_wait` and quiet hours), and their delivery state."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta
from typing import Any

from dialwatch.alerting.lifecycle import Status
from dialwatch.clock import from_iso, to_iso
from dialwatch.delivery.messages import Message, combine
from dialwatch.delivery.outbox import OutboxRow, Part
from dialwatch.store.sqlite.schema import Database

KEEP_DELIVERED = timedelta(days=7)  # delivered and expired notifications, then forgotten
_UNDELIVERED = "delivered_at IS NULL AND expired_at IS NULL"
# The oldest undelivered notification of each channel.
_HEADS = f"SELECT MIN(id) FROM outbox WHERE {_UNDELIVERED} AND held = 0 GROUP BY channel"
# What can be sent next: each channel's oldest message, and messages held by quiet hours
# (those keep their own time and never block a channel's queue).
_NEXT = f"id IN ({_HEADS}) OR (held = 1 AND {_UNDELIVERED})"


_OUTBOX_COLUMNS = (
    "id, alert, decision, channel, title, body, notify_type, created_at, expires_at, "
    "attempts, last_error, delivered_at, expired_at, parts, held"
)


def _outbox_row(r: tuple[Any, ...]) -> OutboxRow:
    return OutboxRow(
        id=r[0],
        alert=r[1],
        decision=r[2],
        channel=r[3],
        message=Message(r[4], r[5], r[6]),
        created_at=from_iso(r[7]),
        expires_at=from_iso(r[8]),
        attempts=r[9],
        last_error=r[10],
        delivered_at=from_iso(r[11]) if r[11] else None,
        expired_at=from_iso(r[12]) if r[12] else None,
        parts=tuple(Part(p[0], p[1], Message(*p[2:])) for p in json.loads(r[13])),
        held=bool(r[14]),
    )


class OutboxTables(Database):
    """The outbox's part of the Store."""

    def _prune_outbox(self, db: sqlite3.Connection, now: datetime) -> None:
        db.execute(
            f"DELETE FROM outbox WHERE created_at < ? AND NOT ({_UNDELIVERED})",
            (to_iso(now - KEEP_DELIVERED),),
        )

    def _queue(
        self,
        db: sqlite3.Connection,
        account: str,
        channel: str,
        entries: list[tuple[str, str, Message]],
        now: datetime,
        expires_at: datetime,
        group_wait: timedelta,
        hold_until: datetime | None,
    ) -> None:
        waiting_alerts = self._waiting_alerts(db, channel)
        parts = [
            [alert, decision, *message]
            for alert, decision, message in entries
            # A reminder adds nothing while an earlier message about the alert still waits.
            if not (decision == "repeat" and alert in waiting_alerts)
        ]
        if not parts:
            return
        send_at = hold_until or now + group_wait
        waiting = None
        if send_at > now:
            # Join the message already waiting for the same moment on this channel.
            waiting = db.execute(
                f"SELECT id, parts FROM outbox WHERE channel = ? AND {_UNDELIVERED} "
                "AND attempts = 0 AND held = ? AND next_attempt_at > ? "
                + ("AND next_attempt_at = ? " if hold_until else "")
                + "ORDER BY id DESC LIMIT 1",
                (channel, int(hold_until is not None), to_iso(now))
                + ((to_iso(hold_until),) if hold_until else ()),
            ).fetchone()
        if waiting is not None:
            parts = json.loads(waiting[1]) + parts
        message = combine(account, [(p[0], Message(p[2], p[3], p[4])) for p in parts])
        alert = ",".join(dict.fromkeys(p[0] for p in parts))
        decision = parts[0][1] if len(parts) == 1 else "group"
        values = (alert, decision, *message, json.dumps(parts))
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
                to_iso(max(expires_at, send_at + (expires_at - now))),
                to_iso(send_at),
                int(hold_until is not None),
            ),
        )

    async def due(self, now: datetime) -> list[OutboxRow]:
        """Undelivered notifications of every channel whose oldest one is due, in order.

        A channel's messages wait behind its oldest undelivered one, so a channel that
        comes back receives them in the order they were written.
        """
        rows = await self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox WHERE {_UNDELIVERED} AND ("
            f"(held = 0 AND channel IN (SELECT channel FROM outbox WHERE id IN ({_HEADS}) "
            "AND next_attempt_at <= ?)) OR (held = 1 AND next_attempt_at <= ?)) ORDER BY id",
            (to_iso(now), to_iso(now)),
        )
        return [_outbox_row(r) for r in rows]

    async def mark_delivered(self, row_id: int, now: datetime) -> None:
        await self._write(
            "UPDATE outbox SET delivered_at = ?, attempts = attempts + 1 WHERE id = ?",
            (to_iso(now), row_id),
        )

    async def mark_failed(self, row_id: int, error: str, retry_at: datetime) -> None:
        await self._write(
            "UPDATE outbox SET attempts = attempts + 1, last_error = ?, next_attempt_at = ? "
            "WHERE id = ?",
            (error, to_iso(retry_at), row_id),
        )

    async def mark_expired(self, row_id: int, now: datetime, reason: str | None = None) -> None:
        await self._write(
            "UPDATE outbox SET expired_at = ?, last_error = COALESCE(?, last_error) WHERE id = ?",
            (to_iso(now), reason, row_id),
        )

    @staticmethod
    def _waiting_alerts(db: sqlite3.Connection, channel: str) -> set[str]:
        rows = db.execute(
            "SELECT DISTINCT json_extract(part.value, '$[0]') FROM outbox, "
            f"json_each(outbox.parts) AS part WHERE outbox.channel = ? AND {_UNDELIVERED}",
            (channel,),
        )
        return {alert for (alert,) in rows}

    async def keep_parts(self, row_id: int, parts: list[Part], message: Message) -> None:
        await self._write(
            "UPDATE outbox SET parts = ?, title = ?, body = ?, notify_type = ? WHERE id = ?",
            (json.dumps([[p.alert, p.decision, *p.message] for p in parts]), *message, row_id),
        )

    async def is_firing(self, alert: str) -> bool:
        account, _, rule = alert.partition("/")
        row = await self._one(
            "SELECT status FROM alerts WHERE account = ? AND rule = ?", (account, rule)
        )
        return row is not None and row[0] == Status.FIRING.value

    async def was_announced(self, channel: str, alert: str) -> bool:
        row = await self._one(
            "SELECT 1 FROM outbox, json_each(outbox.parts) AS part WHERE outbox.channel = ? "
            "AND outbox.delivered_at IS NOT NULL AND json_extract(part.value, '$[0]') = ? "
            "AND json_extract(part.value, '$[1]') IN ('first', 'repeat') LIMIT 1",
            (channel, alert),
        )
        return row is not None

    async def next_attempt_at(self) -> datetime | None:
        row = await self._one(f"SELECT MIN(next_attempt_at) FROM outbox WHERE {_NEXT}")
        return from_iso(row[0]) if row and row[0] else None

    async def retry_now(self, now: datetime) -> int:
        cursor = await self._write(
            f"UPDATE outbox SET next_attempt_at = ? WHERE {_UNDELIVERED} AND next_attempt_at > ?",
            (to_iso(now), to_iso(now)),
        )
        return cursor.rowcount

    async def recent_notifications(self, limit: int) -> list[OutboxRow]:
        rows = await self._all(
            f"SELECT {_OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?", (limit,)
        )
        return [_outbox_row(r) for r in rows]

    async def pending_by_channel(self) -> dict[str, int]:
        rows = await self._all(
            f"SELECT channel, COUNT(*) FROM outbox WHERE {_UNDELIVERED} GROUP BY channel"
        )
        return dict(rows)

    async def pending_count(self) -> int:
        row = await self._one(f"SELECT COUNT(*) FROM outbox WHERE {_UNDELIVERED}")
        return int(row[0]) if row else 0
