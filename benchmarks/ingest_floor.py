"""The least a backlog item can cost dialwatch while it keeps every item as a row, next
to the bare paging loop's whole cost per item, measured in the same run.

A simulated Dial API in its own process serves N usage items (as `ledger_read.py`
does). In fresh processes, alternating, RUNS times each:

- bare: the bare paging loop of `ledger_read.py` (aiohttp and `json.loads`, nothing
  else); its client CPU per item is the anchor;
- dialwatch: one real first check reading all N (`ledger_read.py`'s client);
- steps: reads every page's body once, then times, per item (best of five passes), each
  step a stored item cannot do without:
  - decoding the page as the bare loop does (`json.loads`), to take out of the anchor
    what is not the transport;
  - validating the page against the documented contract (dialwatch's pydantic model,
    the decode included);
  - reading the item's time to exact microseconds;
  - the digest of its documented fields (Dial sends no id, and the key is pinned so an
    upgrade does not count the overlap twice);
  - inserting it into SQLite in transactions of 1,000: as today's ledger row (the real
    schema and statements), and as the smallest row that keeps an identity (account,
    key, time, cents).

The floor is transport + validation + time + digest + the smallest row: everything else
dialwatch does per item (building the item, matching item rules, the spend running
totals, the duplicate probe, the event loop and the store's thread) counts as zero.
Run: python benchmarks/ingest_floor.py [N]   (default 100000)
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from ledger_read import KEY, RUNS, _serve, run_client

STORE_BATCH = 1000  # as dialwatch.pipeline.ledger stores a backlog
LEDGER_READ = str(Path(__file__).with_name("ledger_read.py"))


async def _bodies(base_url: str) -> list[bytes]:
    """Every page's body, read with the bare loop's paging."""
    bodies, params = [], {"limit": "100"}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        while True:
            async with session.get(f"{base_url}/api/v1/billing/activity", params=params) as r:
                body = await r.read()
            bodies.append(body)
            page = json.loads(body)
            if not page["hasMore"]:
                return bodies
            params["starting_after"] = page["data"][-1]["occurredAt"]


def _per_item(passes: Callable[[], object], items: int) -> float:
    """Client CPU per item of one pass, in µs (the best of five)."""
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        passes()
        best = min(best, time.process_time() - started)
    return best / items * 1e6


Batch = list[tuple[str, list[tuple[Any, ...]]]]  # one transaction: (statement, rows) each


def _inserts(batches: list[Batch], schema: str) -> Callable[[], None]:
    """A pass storing `batches` into a fresh SQLite file with dialwatch's settings, each
    batch in a transaction of its own, as the store does."""

    def insert() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            db = sqlite3.connect(Path(tmp) / "floor.db", isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(schema)
            for batch in batches:
                db.execute("BEGIN")
                for sql, rows in batch:
                    db.executemany(sql, rows)
                db.execute("COMMIT")
            db.close()

    return insert


def _steps(base_url: str) -> None:
    from dialwatch.clock import to_micros
    from dialwatch.providers.dial import (
        _ActivityPage,
        _keyed,
        content_digest,
        parse_activity_page,
    )
    from dialwatch.store.sqlite.ledger import _by_columns
    from dialwatch.store.sqlite.schema import _SCHEMA

    bodies = asyncio.run(_bodies(base_url))
    pages = [_ActivityPage.model_validate_json(body) for body in bodies]
    n = sum(len(page.data) for page in pages)
    stamps = [item.occurredAt for page in pages for item in page.data]
    read = [item for page in pages for item in page.data]
    items = [i for body in bodies for i in _keyed(parse_activity_page(body).rows)]
    timed = [(to_micros(item.occurred_at), item) for item in items]
    chunks = [timed[start : start + STORE_BATCH] for start in range(0, n, STORE_BATCH)]
    today = [list(_by_columns("dial", chunk).items()) for chunk in chunks]
    smallest = "INSERT INTO compact VALUES (?, ?, ?, ?)"
    compact: list[Batch] = [
        [(smallest, [("dial", item.key, at, item.cents) for at, item in chunk])] for chunk in chunks
    ]
    compact_schema = (
        "CREATE TABLE compact (account TEXT NOT NULL, key TEXT NOT NULL, "
        "occurred_at INTEGER NOT NULL, cents INTEGER NOT NULL, "
        "PRIMARY KEY (account, key)) WITHOUT ROWID"
    )
    fromisoformat = datetime.fromisoformat
    gc.freeze()  # as `dialwatch run` does once started: what is read above is not walked
    print(json.dumps({
        "items": n,
        "decode": _per_item(lambda: [json.loads(b) for b in bodies], n),
        "validate": _per_item(lambda: [_ActivityPage.model_validate_json(b) for b in bodies], n),
        "time": _per_item(lambda: [to_micros(fromisoformat(s)) for s in stamps], n),
        "digest": _per_item(lambda: [content_digest(item) for item in read], n),
        "row": _per_item(_inserts(today, _SCHEMA), n),
        "compact_row": _per_item(_inserts(compact, compact_schema), n),
    }))  # fmt: skip


def main(n: int) -> None:
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(n, ports), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=600)}"
    bares, ours, steps = [], [], []
    try:
        for _ in range(RUNS):
            bares.append(run_client(LEDGER_READ, "bare", base_url))
            ours.append(run_client(LEDGER_READ, "dialwatch", base_url))
            steps.append(run_client(__file__, "steps", base_url))
    finally:
        server.terminate()

    def median(runs: list[dict[str, Any]], key: str, per: int = 1) -> float:
        return statistics.median(r[key] / per for r in runs)

    bare = median(bares, "cpu", n) * 1e6
    step = {key: median(steps, key) for key in steps[0] if key != "items"}
    transport = bare - step["decode"]
    floor = transport + step["validate"] + step["time"] + step["digest"] + step["compact_row"]
    rows = [
        ("bare loop, all of it (the anchor)", bare),
        ("  of which decoding the page (json.loads)", step["decode"]),
        ("  so the transport (aiohttp)", transport),
        ("validating the page (pydantic, decode included)", step["validate"]),
        ("the item's time, exact microseconds", step["time"]),
        ("the digest of its documented fields", step["digest"]),
        ("one row of today's ledger (SQLite)", step["row"]),
        ("one row of 4 columns (SQLite)", step["compact_row"]),
        ("floor: transport+validation+time+digest+4 columns", floor),
        ("the target: 2x the bare loop", 2 * bare),
        ("dialwatch today, a real first check", median(ours, "cpu", n) * 1e6),
    ]
    print(f"Client CPU per item, {n:,} items, median of {RUNS} runs in fresh processes")
    print(f"{'step':<52} {'µs/item':>8} {'x bare':>7}")
    for name, value in rows:
        print(f"{name:<52} {value:>8.2f} {value / bare:>6.2f}x")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        _steps(sys.argv[3])
    else:
        main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
