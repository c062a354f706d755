"""The local copy of each account's ledger: items, the cursor, spend queries, and the
new items each item rule matched until their message is queued."""

from __future__ import annotations

import functools
import itertools
import operator
import sqlite3
from collections.abc import Mapping, Sequence
from typing import cast

from dialwatch.clock import to_micros
from dialwatch.model import ItemMatches, LedgerItem
from dialwatch.store.common import Row
from dialwatch.store.protocol import Fence
from dialwatch.store.sql import (
    ADD_SPEND_DAY,
    ADD_SPEND_TOTAL,
    ledger_item,
    spend_rows,
)
from dialwatch.store.sqlite.cluster import check_fence
from dialwatch.store.sqlite.schema import Database
from dialwatch.units import Money


class LedgerTables(Database):
    """The ledger's part of the Store."""

    async def add_ledger_items(
        self,
        account: str,
        items: list[LedgerItem],
        matches: Mapping[str, Sequence[str]] | None,
        fence: Fence | None = None,
    ) -> int:
        if not items:
            return 0
        return await self._run(lambda db: self._add_items(db, account, items, matches, fence))

    def _add_items(
        self,
        db: sqlite3.Connection,
        account: str,
        items: list[LedgerItem],
        matches: Mapping[str, Sequence[str]] | None,
        fence: Fence | None,
    ) -> int:
        # Keys start with the time: one range holds the batch (a backlog's is empty).
        keys = [item.key for item in items]
        seen = {
            key
            for (key,) in db.execute(
                "SELECT key FROM ledger WHERE account = ? AND key BETWEEN ? AND ?",
                (account, min(keys), max(keys)),
            )
        }
        new = [item for item in items if item.key not in seen]
        timed = [(to_micros(item.occurred_at), item) for item in new]
        spend = spend_rows(account, timed)
        with self._transaction(db):
            check_fence(db, account, fence)
            for sql, rows in _by_columns(account, timed).items():
                db.executemany(sql, rows)
            if matches:
                db.executemany(
                    "INSERT OR IGNORE INTO item_matches VALUES (?, ?, ?)",
                    [
                        (account, rule, item.key)
                        for item in new
                        for rule in matches.get(item.key, ())
                    ],
                )
            db.executemany(ADD_SPEND_DAY, spend.days)
            db.executemany(ADD_SPEND_TOTAL, spend.totals)
        return len(new)

    async def item_matches(self, account: str, rule: str, limit: int) -> ItemMatches:
        return await self._run(lambda db: _item_matches(db, account, rule, limit))


# The item's fields that may be absent (fare onwards), and a None for each.
_OPTIONAL = slice(LedgerItem._fields.index("fare"), None)
_ABSENT = (None,) * len(LedgerItem._fields[_OPTIONAL])


def _by_columns(account: str, timed: list[tuple[int, LedgerItem]]) -> dict[str, list[Row]]:
    """Ledger rows grouped by the optional fields they have, each group with the INSERT
    that names only those: the others are left to their default, NULL. Python's sqlite3
    binds None by way of its adapter lookup, the dearest parameter it takes: a Dial
    usage item's row binding six Nones cost 4.3 µs, binding only its nine values 3.0 µs
    (the grouping included; see the README's "A ledger backlog")."""
    groups: dict[str, list[Row]] = {}
    for at, item in timed:
        optional = cast("tuple[str | None, ...]", item[_OPTIONAL])
        present = tuple(map(operator.is_not, optional, _ABSENT))
        sql = _insert(present)
        row = (account, item.key, item.type, at, item.cents, item.currency,
               *itertools.compress(optional, present))  # fmt: skip
        groups.setdefault(sql, []).append(row)
    return groups


@functools.cache
def _insert(present: tuple[bool, ...]) -> str:
    """The INSERT of the ledger's rows that have the optional fields `present`."""
    names = ("account", *LedgerItem._fields[: _OPTIONAL.start],
             *itertools.compress(LedgerItem._fields[_OPTIONAL], present))  # fmt: skip
    return f"INSERT INTO ledger ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})"


def _item_matches(db: sqlite3.Connection, account: str, rule: str, limit: int) -> ItemMatches:
    count, total = db.execute(
        "SELECT COUNT(*), COALESCE(SUM(l.cents), 0) FROM item_matches m "
        "JOIN ledger l ON l.account = m.account AND l.key = m.key "
        "WHERE m.account = ? AND m.rule = ?",
        (account, rule),
    ).fetchone()
    rows = db.execute(
        f"SELECT {', '.join('l.' + c for c in LedgerItem._fields)} FROM item_matches m "
        "JOIN ledger l ON l.account = m.account AND l.key = m.key "
        "WHERE m.account = ? AND m.rule = ? ORDER BY l.occurred_at, l.key LIMIT ?",
        (account, rule, limit),
    )
    shown = [ledger_item(r) for r in rows]
    currency = shown[0].currency if shown else "USD"
    return ItemMatches(count, Money(total, currency), tuple(shown))
