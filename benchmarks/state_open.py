"""What checking a SQLite state file for broken pages costs at start, against reading it.

`open_store` runs `PRAGMA quick_check` on every start, so a damaged file is refused at
once rather than found by a check hours later. For a state holding N ledger items (the
largest table by far), this prints, from a cold page cache per measurement (a fresh
connection each time; the OS cache is warm, as on a restart):

- anchor: one full read of the ledger table (`SELECT count(*)` over its rows);
- quick_check: the check alone;
- open_store: dialwatch's whole start on that file (schema, migrations, the check).

Run: python benchmarks/state_open.py [N ...]   (default: 10000 100000 1000000)
"""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dialwatch.model import LedgerItem, time_key
from dialwatch.store import open_store

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
BATCH = 10_000


async def build(path: Path, n: int) -> None:
    store = await open_store(path)
    try:
        for start in range(0, n, BATCH):
            items = []
            for i in range(start, min(n, start + BATCH)):
                at = NOW - timedelta(seconds=i)
                number = f"+1555{i % 10_000:07d}"
                items.append(
                    LedgerItem(
                        f"{time_key(at)}-{i}", "usage", at, 1 + i % 500, "USD",
                        "voice.outbound", number, "wallet",
                    )
                )  # fmt: skip
            await store.add_ledger_items("dial", items, None)
    finally:
        await store.close()


def timed(work: object) -> float:
    started = time.perf_counter()
    assert callable(work)
    work()
    return time.perf_counter() - started


def best_of(runs: int, work: object) -> float:
    return min(timed(work) for _ in range(runs))


def scan(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("SELECT count(*), sum(cents) FROM ledger").fetchone()


def quick_check(path: Path) -> None:
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA quick_check").fetchone() == ("ok",)


def open_close(path: Path) -> None:
    async def go() -> None:
        store = await open_store(path)
        await store.close()

    asyncio.run(go())


def main(sizes: list[int]) -> None:
    print(f"{'items':>9}  {'file MB':>8}  {'scan ms':>8}  {'quick_check ms':>15}  "
          f"{'open_store ms':>14}  {'check/scan':>10}")  # fmt: skip
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "state.db"
            asyncio.run(build(path, n))
            with sqlite3.connect(path) as db:
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            size_mb = path.stat().st_size / 1e6
            anchor = best_of(5, lambda: scan(path))  # noqa: B023 (called at once)
            check = best_of(5, lambda: quick_check(path))  # noqa: B023
            opened = best_of(5, lambda: open_close(path))  # noqa: B023
            print(f"{n:>9,}  {size_mb:>8.1f}  {anchor * 1e3:>8.1f}  {check * 1e3:>15.1f}  "
                  f"{opened * 1e3:>14.1f}  {check / anchor:>9.1f}x")  # fmt: skip


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [10_000, 100_000, 1_000_000])
