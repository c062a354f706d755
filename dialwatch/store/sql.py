"""What the SQL backends share: the outbox's conditions and columns, how a row becomes
a value, how a channel's waiting message takes in more parts, and how long things are
kept. Both backends store times as the same fixed-width text and integers, so a state
file copies into PostgreSQL row for row (`dialwatch state import`)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from dialwatch.alerting.lifecycle import AlertState, Status
from dialwatch.clock import from_iso, from_micros, to_iso, to_micros
from dialwatch.delivery.messages import Message, Part, combine
from dialwatch.delivery.outbox import REFRESH, OutboxRow, group_decision
from dialwatch.model import SPEND_TYPES, LedgerItem, time_key
from dialwatch.rules.schema import Match
from dialwatch.store.protocol import Known, LedgerCheckpoint, LedgerCursor
from dialwatch.units import Money

KEEP_DELIVERED = timedelta(days=7)  # delivered and expired notifications, then forgotten
KEEP_REFRESHES = timedelta(hours=1)  # Alertmanager's posts of alerts still firing
HISTORY_STEP_US = 15 * 60 * 1_000_000  # one balance point per 15 minutes
HISTORY_KEPT = timedelta(days=8)
CLAIM_TTL = timedelta(minutes=2)  # a channel's delivery claim outlasts a send (30 s)
TOP = 3  # contributors listed in a spend message

UNDELIVERED = "delivered_at IS NULL AND expired_at IS NULL"
# The oldest undelivered notification of each channel.
HEADS = f"SELECT MIN(id) FROM outbox WHERE {UNDELIVERED} AND held = 0 GROUP BY channel"
# What can be sent next: each channel's oldest message, and messages held by quiet hours
# (those keep their own time and never block a channel's queue).
NEXT = f"id IN ({HEADS}) OR (held = 1 AND {UNDELIVERED})"
OUTBOX_COLUMNS = (
    "id, alert, decision, channel, title, body, notify_type, created_at, expires_at, "
    "attempts, last_error, delivered_at, expired_at, parts, held"
)
LEDGER_COLUMNS = ", ".join(("account", *LedgerItem._fields))
# Tables a state holds, in an order that copies cleanly (import, contract tests).
TABLES = (
    "alerts", "balances", "outbox", "ledger", "ledger_cursor", "silences", "alert_log",
    "digests", "failing", "balance_history", "spend_days", "item_matches", "spend_totals",
)  # fmt: skip


def outbox_row(r: tuple[Any, ...]) -> OutboxRow:
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
        parts=tuple(stored_part(p) for p in json.loads(r[13])),
        held=bool(r[14]),
    )


# Spend per UTC day and currency, added to as items arrive (the status page's chart).
ADD_SPEND_DAY = (
    "INSERT INTO spend_days (account, day, currency, cents) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (account, day, currency) DO UPDATE SET cents = spend_days.cents + excluded.cents"
)
# Spend per minute and per hour and currency, with the items counted, added to as items
# arrive: a window's sum reads at most 59 + 23 + 59 rows of these per day it spans (and
# the items of its first and last partial minute), however many items it holds.
MINUTE_US, HOUR_US, DAY_US = 60_000_000, 3_600_000_000, 86_400_000_000
SPEND_TOTALS = """CREATE TABLE IF NOT EXISTS spend_totals (
    account TEXT NOT NULL,
    span BIGINT NOT NULL,  -- the bucket's length: MINUTE_US or HOUR_US
    at BIGINT NOT NULL,  -- its start, microseconds since the epoch
    currency TEXT NOT NULL,
    cents BIGINT NOT NULL,
    items BIGINT NOT NULL,
    PRIMARY KEY (account, span, at, currency)
)"""
ADD_SPEND_TOTAL = (
    "INSERT INTO spend_totals (account, span, at, currency, cents, items) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, span, at, currency) DO UPDATE SET "
    "cents = spend_totals.cents + excluded.cents, items = spend_totals.items + excluded.items"
)
# What a state file or database held before spend_totals, summed into it (a migration).
FILL_SPEND_TOTALS = tuple(
    "INSERT INTO spend_totals (account, span, at, currency, cents, items) "
    f"SELECT account, {span}, occurred_at / {span} * {span}, currency, SUM(cents), COUNT(*) "
    f"FROM ledger WHERE type IN {SPEND_TYPES!r} GROUP BY account, occurred_at / {span}, currency "
    "ON CONFLICT DO NOTHING"
    for span in (MINUTE_US, HOUR_US)
)


# Take from a bucket the spend of its items older than a time (the items being pruned).
PRUNE_SPEND_TOTAL = (
    "UPDATE spend_totals SET cents = spend_totals.cents - p.cents, items = spend_totals.items - p.n "
    "FROM (SELECT currency, SUM(cents) AS cents, COUNT(*) AS n FROM ledger WHERE account = ? "
    f"AND key >= ? AND key < ? AND type IN {SPEND_TYPES!r} GROUP BY currency) AS p "
    "WHERE spend_totals.account = ? AND spend_totals.span = ? AND spend_totals.at = ? "
    "AND spend_totals.currency = p.currency"
)


def _cut_buckets(keep_since: datetime) -> list[tuple[int, int]]:
    """The minute and the hour (span, start) that `keep_since` falls in."""
    kept = to_micros(keep_since)
    return [(span, kept - kept % span) for span in (MINUTE_US, HOUR_US)]


class SpendRows(NamedTuple):
    """What new items add: to ADD_SPEND_DAY and to ADD_SPEND_TOTAL."""

    days: list[tuple[str, str, str, int]]
    totals: list[tuple[str, int, int, str, int, int]]


def spend_rows(account: str, items: Iterable[tuple[int, LedgerItem]]) -> SpendRows:
    """The spend that new `items` (with their times in microseconds) add per UTC day,
    hour and minute, and currency; one pass, one formatted date per day."""
    totals: dict[tuple[int, int, str], list[int]] = {}
    days: dict[tuple[int, str], int] = {}
    for at, item in items:
        if item.type not in SPEND_TYPES:
            continue
        cents, currency = item.cents, item.currency
        for span in (MINUTE_US, HOUR_US):
            bucket = totals.setdefault((span, at - at % span, currency), [0, 0])
            bucket[0] += cents
            bucket[1] += 1
        day = (at // DAY_US, currency)
        days[day] = days.get(day, 0) + cents
    return SpendRows(
        [
            (account, from_micros(day * DAY_US).strftime("%Y-%m-%d"), currency, cents)
            for (day, currency), cents in days.items()
        ],
        [
            (account, span, at, currency, cents, count)
            for (span, at, currency), (cents, count) in totals.items()
        ],
    )


def window_sum(
    account: str, since: datetime, until: datetime | None, currency: str, *, postgres: bool = False
) -> tuple[str, list[object]]:
    """The query (`?` placeholders) for the spend and item count of every spend item in
    [since, until): whole hours and minutes from spend_totals, the partial minutes at
    either end from the items themselves. Exact to the microsecond, as the items are."""
    lo, hi = to_micros(since), None if until is None else to_micros(until)
    parts, params = [], []
    for source, start, end in _window_pieces(lo, hi):
        if start == end:
            continue
        if source == "items":
            where, more = spend_filter(
                account, from_micros(start), currency,
                until=None if end is None else from_micros(end), postgres=postgres,
            )  # fmt: skip
            parts.append(f"SELECT cents, 1 AS n FROM ledger WHERE {where}")
        else:
            where = "account = ? AND span = ? AND at >= ? AND currency = ?"
            more = [account, source, start, currency]
            if end is not None:
                where += " AND at < ?"
                more.append(end)
            parts.append(f"SELECT cents, items AS n FROM spend_totals WHERE {where}")
        params += more
    union = " UNION ALL ".join(parts) or "SELECT 0 AS cents, 0 AS n"
    return f"SELECT COALESCE(SUM(cents), 0), COALESCE(SUM(n), 0) FROM ({union}) AS w", params


def _window_pieces(lo: int, hi: int | None) -> list[tuple[str | int, int, int | None]]:
    """[lo, hi) (microseconds; None: open) as items, minutes and hours, in that order of
    fineness from the edges inwards."""
    minute, hour = -(-lo // MINUTE_US) * MINUTE_US, -(-lo // HOUR_US) * HOUR_US
    if hi is None:
        return [("items", lo, minute), (MINUTE_US, minute, hour), (HOUR_US, hour, None)]
    last_minute, last_hour = hi - hi % MINUTE_US, hi - hi % HOUR_US
    if hour < last_hour:
        return [
            ("items", lo, minute), (MINUTE_US, minute, hour), (HOUR_US, hour, last_hour),
            (MINUTE_US, last_hour, last_minute), ("items", last_minute, hi),
        ]  # fmt: skip
    if minute < last_minute:
        return [("items", lo, minute), (MINUTE_US, minute, last_minute), ("items", last_minute, hi)]
    return [("items", lo, hi)]


def ledger_item(r: tuple[Any, ...]) -> LedgerItem:
    return LedgerItem(r[0], r[1], from_micros(r[2]), *r[3:])


def alert_state(status: str, since: str | None, notified: str | None, count: int) -> AlertState:
    return AlertState(
        Status(status),
        from_iso(since) if since else None,
        from_iso(notified) if notified else None,
        count,
    )


def stored_part(p: list[str | None]) -> Part:
    """A part as stored: [alert, decision, title, body, notify_type, episode]; parts
    stored before episodes were kept have five."""
    alert, decision, title, body, notify_type, *episode = p
    return Part(str(alert), str(decision), Message(str(title), str(body), str(notify_type)),
                episode[0] if episode else None)  # fmt: skip


def part_value(part: Part) -> list[str | None]:
    return [part.alert, part.decision, *part.message, part.episode]


def new_parts(entries: list[Part], waiting_alerts: set[str]) -> list[list[str | None]]:
    """A check's entries for one channel as stored parts; a reminder (or an Alertmanager
    refresh) adds nothing while an earlier message about the alert still waits."""
    return [
        part_value(part)
        for part in entries
        if not (part.decision in ("repeat", REFRESH) and part.alert in waiting_alerts)
    ]


def grouped(account: str, parts: list[list[str | None]]) -> tuple[str, str, str, str, str, str]:
    """The outbox columns (alert, decision, title, body, notify_type, parts) of one
    message made of `parts`."""
    kept = [stored_part(p) for p in parts]
    message = combine(account, [(p.alert, p.message) for p in kept])
    alert = ",".join(dict.fromkeys(p.alert for p in kept))
    decision = group_decision([p.decision for p in kept])
    return (alert, decision, *message, json.dumps(parts))


def waiting_message(
    account: str, channel: str, now: datetime, hold_until: datetime | None
) -> tuple[str, tuple[object, ...]]:
    """The query (`?` placeholders) for `account`'s message still waiting on `channel`
    for the same moment, which a later check's parts join; never another account's."""
    sql = (
        f"SELECT id, parts FROM outbox WHERE channel = ? AND substr(alert, 1, ?) = ? "
        f"AND {UNDELIVERED} AND attempts = 0 AND held = ? AND next_attempt_at > ? "
        + ("AND next_attempt_at = ? " if hold_until else "")
        + "ORDER BY id DESC LIMIT 1"
    )
    params = (channel, len(account) + 1, f"{account}/", int(hold_until is not None), to_iso(now))
    return sql, params + ((to_iso(hold_until),) if hold_until else ())


def queue_times(
    now: datetime, expires_at: datetime, group_wait: timedelta, hold_until: datetime | None
) -> tuple[datetime, datetime]:
    """When a new message is first tried, and when it expires (as long after that)."""
    send_at = hold_until or now + group_wait
    return send_at, max(expires_at, send_at + (expires_at - now))


def glob_regex(pattern: str) -> str:
    """A glob (`*`, `?`, `[...]`, as in the rules file's match) as an anchored POSIX
    regular expression, for backends without GLOB."""
    out, i = ["^"], 0
    while i < len(pattern):
        char = pattern[i]
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[" and (end := pattern.find("]", i + 2)) != -1:
            body = pattern[i + 1 : end]
            body = "^" + body[1:] if body.startswith("!") else body
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(char))
        i += 1
    return "".join(out) + "$"


def spend_filter(
    account: str,
    since: datetime,
    currency: str,
    match: Match | None = None,
    until: datetime | None = None,
    *,
    postgres: bool = False,
) -> tuple[str, list[object]]:
    """The WHERE clause (and its parameters, `?` placeholders) selecting spend items in
    `currency` for a spend query; PostgreSQL matches globs as regular expressions."""
    mark, glob = "?", "~" if postgres else "GLOB"
    # Keys start with the item's time in fixed-width hex: the primary key is the
    # time index, and no second index slows every insert.
    where = f"account = {mark} AND key >= {mark} AND type IN {SPEND_TYPES!r} AND currency = {mark}"
    params: list[object] = [account, time_key(since), currency]
    if until is not None:
        where += f" AND key < {mark}"
        params.append(time_key(until))
    if match is not None:
        for column, value, op in (
            ("fare", match.fare, glob),
            ("number", match.number, "="),
            ("attribution", match.attribution, "="),
            ("action", match.action, glob),
            ("description", match.description, glob),
            ("zone", match.zone, "="),
        ):
            if value is not None:
                where += f" AND {column} {op} {mark}"
                params.append(glob_regex(value) if postgres and op == glob else value)
    return where, params


Batch = tuple[str, list[tuple[object, ...]]]  # a statement (`?` placeholders), its rows


def check_writes(
    account: str,
    now: datetime,
    states: dict[str, AlertState],
    balance: Money | None,
    ledger: LedgerCheckpoint | None,
    failing_since: datetime | None,
    decisions: Iterable[tuple[str, str]],
    digests: Iterable[tuple[str, datetime]],
    prune: bool = True,
    known: Known | None = None,
) -> list[Batch]:
    """Everything a check's commit writes but its outbox messages, in both backends'
    words, in order: each batch is one `executemany` (none without rows). With
    `prune`, what is no longer needed goes too: old items, history, delivered messages
    (each check need not: once every few minutes keeps the tables as small). With
    `known`, what the check started from, what it left as it was is not written."""
    stamp = to_iso(now)
    rows: list[tuple[object, ...]] = [(account, rule, d, stamp) for rule, d in decisions]
    batches: list[Batch] = [
        ("INSERT INTO alert_log VALUES (?, ?, ?, ?)", rows),
        (
            "INSERT INTO digests VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET sent_for = excluded.sent_for",
            [(name, to_iso(due)) for name, due in digests],
        ),
    ]
    if known is None or failing_since != known.failing_since:
        batches.append(
            ("DELETE FROM failing WHERE account = ?", [(account,)])
            if failing_since is None
            else (
                "INSERT INTO failing VALUES (?, ?) "
                "ON CONFLICT (account) DO UPDATE SET since = excluded.since",
                [(account, to_iso(failing_since))],
            )
        )
    if ledger is not None:
        # Move the cursor, forget matches that became messages and items no rule needs.
        covers = ledger.covers_since
        if prune and covers is not None:
            covers = max(covers, ledger.keep_since)  # the prune below leaves no older item
        cursor = LedgerCursor(ledger.newest, covers)
        moved = known is None or cursor != known.cursor
        batches += [
            (
                "INSERT INTO ledger_cursor VALUES (?, ?, ?) ON CONFLICT (account) "
                "DO UPDATE SET newest = excluded.newest, covers_since = excluded.covers_since",
                [
                    (
                        account,
                        to_iso(cursor.newest),
                        to_iso(cursor.covers_since) if cursor.covers_since else None,
                    )
                ]
                if moved
                else [],
            ),
            (
                "DELETE FROM item_matches WHERE account = ? AND rule = ?",
                [(account, rule) for rule in ledger.delivered_rules],
            ),
        ]
    if ledger is not None and prune:
        kept, cut = time_key(ledger.keep_since), _cut_buckets(ledger.keep_since)
        batches += [
            # The running totals lose what the items about to go held, so a bucket
            # always sums the items stored (those of this prune only: older ones are gone).
            (
                PRUNE_SPEND_TOTAL,
                [(account, time_key(from_micros(at)), kept, account, span, at) for span, at in cut],
            ),
            ("DELETE FROM ledger WHERE account = ? AND key < ?", [(account, kept)]),
            (
                "DELETE FROM spend_totals WHERE account = ? AND span = ? AND at < ?",
                [(account, span, at) for span, at in cut],
            ),
        ]
    batches += [
        (
            "DELETE FROM alerts WHERE account = ? AND rule = ?",
            [(account, rule) for rule, s in states.items() if s.status is Status.INACTIVE],
        ),
        (
            "INSERT INTO alerts VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account, rule) "
            "DO UPDATE SET status = excluded.status, active_since = excluded.active_since, "
            "last_notified = excluded.last_notified, notifications = excluded.notifications",
            [
                _alert_row(account, rule, s)
                for rule, s in states.items()
                if s.status is not Status.INACTIVE
            ],
        ),
    ]
    if balance is not None:
        # The balance as it changes (checked_at: when it last did), and one point per
        # HISTORY_STEP_US for the charts: the last balance seen in it.
        bucket = to_micros(now) // HISTORY_STEP_US * HISTORY_STEP_US
        changed = known is None or balance != known.balance
        charted = not changed and known is not None and known.history_at == from_micros(bucket)
        batches += [
            (
                "INSERT INTO balances VALUES (?, ?, ?, ?) ON CONFLICT (account) "
                "DO UPDATE SET cents = excluded.cents, currency = excluded.currency, "
                "checked_at = excluded.checked_at",
                [(account, balance.cents, balance.currency, stamp)] if changed else [],
            ),
            (
                "INSERT INTO balance_history VALUES (?, ?, ?, ?) ON CONFLICT (account, at) "
                "DO UPDATE SET cents = excluded.cents, currency = excluded.currency",
                [] if charted else [(account, bucket, balance.cents, balance.currency)],
            ),
        ]
    if prune:
        batches += _prunes(account, now)
    return [batch for batch in batches if batch[1]]


def _prunes(account: str, now: datetime) -> list[Batch]:
    """What a pruning commit deletes besides the ledger: old history and messages."""
    horizon = now - HISTORY_KEPT
    return [
        (
            "DELETE FROM balance_history WHERE account = ? AND at < ?",
            [(account, to_micros(horizon))],
        ),
        (
            "DELETE FROM spend_days WHERE account = ? AND day < ?",
            [(account, horizon.strftime("%Y-%m-%d"))],
        ),
        ("DELETE FROM alert_log WHERE account = ? AND at < ?", [(account, to_iso(horizon))]),
        (
            f"DELETE FROM outbox WHERE created_at < ? AND NOT ({UNDELIVERED})",
            [(to_iso(now - KEEP_DELIVERED),)],
        ),
        (
            f"DELETE FROM outbox WHERE decision = '{REFRESH}' AND created_at < ? "
            f"AND NOT ({UNDELIVERED})",
            [(to_iso(now - KEEP_REFRESHES),)],
        ),
    ]


def _alert_row(account: str, rule: str, state: AlertState) -> tuple[object, ...]:
    return (
        account,
        rule,
        state.status.value,
        to_iso(state.active_since) if state.active_since else None,
        to_iso(state.last_notified) if state.last_notified else None,
        state.notifications,
    )
