"""The local copy of each account's ledger in PostgreSQL: items, the cursor, spend
queries, and the new items each item rule matched until their message is queued."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dialwatch.clock import to_micros
from dialwatch.model import ItemMatches, LedgerItem
from dialwatch.store.postgres.cluster import check_fence
from dialwatch.store.postgres.schema import Conn, Database, marks
from dialwatch.store.protocol import Fence
from dialwatch.store.sql import (
    ADD_SPEND_DAY,
    ADD_SPEND_TOTAL,
    LEDGER_COLUMNS,
    ledger_item,
    spend_rows,
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
            # Keys start with the time: one range holds the batch (a backlog's is empty).
            keys = [item.key for item in items]
            cursor = await conn.execute(
                "SELECT key FROM ledger WHERE account = %s AND key BETWEEN %s AND %s",
                (account, min(keys), max(keys)),
            )
            seen = {key for (key,) in await cursor.fetchall()}
            new = [item for item in items if item.key not in seen]
            if not new:
                return 0
            timed = [(to_micros(item.occurred_at), item) for item in new]
            spend = spend_rows(account, timed)
            async with conn.cursor() as cur:
                await cur.executemany(
                    _INSERT, [(account, item.key, item.type, at, *item[3:]) for at, item in timed]
                )
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
                if spend.days:
                    await cur.executemany(marks(ADD_SPEND_DAY), spend.days)
                    await cur.executemany(marks(ADD_SPEND_TOTAL), spend.totals)
            return len(new)

        return await self._run(add)

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
