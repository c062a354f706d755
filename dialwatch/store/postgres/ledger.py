"""The local copy of each account's ledger in PostgreSQL: items, the cursor, spend
queries, and the new items each item rule matched until their message is queued."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from dialwatch.clock import to_micros
from dialwatch.model import ItemMatches, LedgerItem, SpendSummary
from dialwatch.rules.schema import Match
from dialwatch.store.postgres.cluster import check_fence
from dialwatch.store.postgres.schema import Conn, Database, marks
from dialwatch.store.protocol import Fence
from dialwatch.store.sql import (
    ADD_SPEND_DAY,
    LEDGER_COLUMNS,
    TOP,
    ledger_item,
    spend_days,
    spend_filter,
)
from dialwatch.units import Money

_INSERT = (
    f"INSERT INTO ledger ({LEDGER_COLUMNS}) "
    f"VALUES ({', '.join(['%s'] * (len(LedgerItem._fields) + 1))}) ON CONFLICT DO NOTHING"
)


class LedgerTables(Database):
    """The ledger's part of the PostgreSQL store."""

    async def add_ledger_items(
        self,
        account: str,
        items: list[LedgerItem],
        matches: Mapping[str, Sequence[str]] | None,
        fence: Fence | None = None,
    ) -> int:
        if not items:
            return 0

        async def add(conn: Conn) -> int:
            await check_fence(conn, account, fence)
            cursor = await conn.execute(
                "SELECT key FROM ledger WHERE account = %s AND key = ANY(%s)",
                (account, [item.key for item in items]),
            )
            seen = {key for (key,) in await cursor.fetchall()}
            new = [item for item in items if item.key not in seen]
            if not new:
                return 0
            by_day = spend_days(account, new)
            async with conn.cursor() as cur:
                await cur.executemany(
                    _INSERT,
                    [(account, item.key, item.type, to_micros(item.occurred_at), *item[3:])
                     for item in new],
                )  # fmt: skip
                found = [
                    (account, rule, item.key)
                    for item in new
                    for rule in (matches or {}).get(item.key, ())
                ]
                if found:
                    await cur.executemany(
                        "INSERT INTO item_matches VALUES (%s, %s, %s) ON CONFLICT DO NOTHING",
                        found,
                    )
                if by_day:
                    await cur.executemany(marks(ADD_SPEND_DAY), by_day)
            return len(new)

        return await self._run(add)

    async def spend(
        self,
        account: str,
        since: datetime,
        currency: str,
        match: Match | None = None,
        until: datetime | None = None,
    ) -> SpendSummary:
        where, params = spend_filter(account, since, currency, match, until, postgres=True)
        where = where.replace("?", "%s")

        async def read(conn: Conn) -> SpendSummary:
            cursor = await conn.execute(
                f"SELECT COALESCE(SUM(cents), 0), COUNT(*) FROM ledger WHERE {where}", params
            )
            total, count = await cursor.fetchone() or (0, 0)

            async def top(column: str) -> tuple[tuple[str, Money], ...]:
                cursor = await conn.execute(
                    f"SELECT {column}, SUM(cents) AS spent FROM ledger WHERE {where} "
                    f"AND {column} IS NOT NULL GROUP BY 1 ORDER BY spent DESC, 1 LIMIT {TOP}",
                    params,
                )
                rows = await cursor.fetchall()
                return tuple((name, Money(int(cents), currency)) for name, cents in rows)

            # Dial names a fare; the other providers describe the item.
            by_number = await top("number")
            by_fare = await top("COALESCE(fare, description)")
            return SpendSummary(since, Money(int(total), currency), count, by_number, by_fare)

        return await self._run(read)

    async def item_matches(self, account: str, rule: str, limit: int) -> ItemMatches:
        async def read(conn: Conn) -> ItemMatches:
            cursor = await conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(l.cents), 0) FROM item_matches m "
                "JOIN ledger l ON l.account = m.account AND l.key = m.key "
                "WHERE m.account = %s AND m.rule = %s",
                (account, rule),
            )
            count, total = await cursor.fetchone() or (0, 0)
            cursor = await conn.execute(
                f"SELECT {', '.join('l.' + c for c in LedgerItem._fields)} FROM item_matches m "
                "JOIN ledger l ON l.account = m.account AND l.key = m.key "
                "WHERE m.account = %s AND m.rule = %s ORDER BY l.occurred_at, l.key LIMIT %s",
                (account, rule, limit),
            )
            shown = [ledger_item(r) for r in await cursor.fetchall()]
            currency = shown[0].currency if shown else "USD"
            return ItemMatches(count, Money(int(total), currency), tuple(shown))

        return await self._run(read)
