"""How fast dialwatch reads and evaluates a ledger backlog, against the transport limit.

For each N, a simulated Dial API in its own process serves N usage items (with tie
groups). Two clients read all of it, each in a fresh process:

- bare: aiohttp fetching every page and decoding its JSON, nothing else;
- dialwatch: one real check (`run_cycle`) with a backlog of N new items: pages
  validated, items identified and stored in SQLite, per-item and window rules
  evaluated, the grouped message queued.

Each side runs RUNS times, alternating, in fresh processes; the table shows medians:
wall time, items per second, the ratio, client CPU per item on both sides, and the
client's peak RSS growth. With --latency MS the server answers every request MS later
(where fetching the next page while storing this one should hide dialwatch's work).
With --postgres, dialwatch's state is a fresh PostgreSQL database (TEST_POSTGRES_URL, or
the local server .ci/run starts) instead of a SQLite file.
Run: python benchmarks/ledger_read.py [--postgres] [--latency MS] [N ...]
     (default: 10000 100000 1000000, no latency)
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
from pydantic import SecretStr

KEY = "sk_bench_0000000000000000"
NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
RULES = """
channels:
  log: "json://127.0.0.1:9/unused"
defaults:
  notify: [log]
rules:
  - name: daily-spend
    kind: spend_above
    window: 24h
    amount: "$100.00"
  - name: expensive-call
    kind: usage_item
    min_amount: "$5.00"
  - name: money-in
    kind: ledger_event
"""


def usage_item(i: int, when: datetime, cents: int | None = None) -> dict[str, Any]:
    """The i-th usage item of a benchmark's ledger, at `when`, as Dial sends it."""
    cents = 1 + i % 900 if cents is None else cents
    return {
        "type": "usage",
        "occurredAt": when.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
        "amountCents": cents,
        "totalCents": cents,
        "fareName": "voice.outbound.minute" if i % 3 else "sms.tier_1.message",
        "number": f"+1415555{i % 50:04d}",
        "billedQuantity": 1,
        "attribution": "wallet",
        "phoneNumberId": f"pn_{i % 50}",
        "callId": f"call_{i}",
    }


def _items(n: int, now: datetime = NOW) -> list[dict[str, Any]]:
    """N usage items over the 20 hours before `now`, in tie groups of 1 to 3."""
    return [usage_item(i, now - timedelta(seconds=1 + (i // 2) * 72_000 / n * 2)) for i in range(n)]


def take_option(args: list[str], name: str, default: float) -> float:
    """The value after `name` in `args` (removed from them), or `default`."""
    if name not in args:
        return default
    at = args.index(name)
    value = float(args[at + 1])
    del args[at : at + 2]
    return value


RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def _serve(
    n: int, ports: multiprocessing.Queue[int], latency_ms: float = 0.0, now: datetime = NOW
) -> None:
    from aiohttp import web

    from dialwatch.simulators.dial import DialAccount, DialSimulator

    class Slow(DialSimulator):
        def app(self) -> web.Application:
            app = super().app()

            @web.middleware
            async def late(request: web.Request, handler: Any) -> web.StreamResponse:
                await asyncio.sleep(latency_ms / 1000)
                response: web.StreamResponse = await handler(request)
                return response

            app.middlewares.append(late)
            return app

    async def main() -> None:
        simulator = Slow(DialAccount(api_key=KEY, balance_cents=10**9))
        simulator.ledger.extend(_items(n, now))
        await simulator.start()
        ports.put(int(simulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


class Measured:
    """Wall time and peak-RSS growth of the measured part only (set-up excluded)."""

    def __enter__(self) -> Measured:
        self.rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        self.started = time.perf_counter()
        self.cpu_started = time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started
        self.cpu_seconds = time.process_time() - self.cpu_started
        self.rss_growth_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.rss_before


async def _bare(base_url: str) -> tuple[int, Measured]:
    count = 0
    params = {"limit": "100"}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as session:
        with Measured() as measured:
            while True:
                async with session.get(f"{base_url}/api/v1/billing/activity", params=params) as r:
                    page = await r.json()
                count += len(page["data"])
                if not page["hasMore"]:
                    break
                params["starting_after"] = page["data"][-1]["occurredAt"]
    return count, measured


async def _dialwatch(base_url: str) -> tuple[int, Measured]:
    from dialwatch.fleet import open_fleet
    from dialwatch.pipeline.cycle import run_cycle
    from dialwatch.rules.loading import parse_rules
    from dialwatch.settings import Settings
    from dialwatch.store import LedgerCheckpoint

    class Clock:
        def now(self) -> datetime:
            return NOW

    rules = parse_rules(RULES, "bench.yaml", {})
    with tempfile.TemporaryDirectory() as tmp:
        state = os.environ.get("BENCH_STATE") or str(Path(tmp) / "bench.db")
        settings = Settings(api_key=SecretStr(KEY), base_url=base_url, state=SecretStr(state))
        async with open_fleet(settings, rules, clock=Clock()) as fleet:
            watcher = fleet.watchers["dial"]
            # A watcher that last read the ledger a day ago: all N items are a backlog.
            start = NOW - timedelta(days=1)
            await watcher.store.commit_check(
                "dial", start, {}, [], start, ledger=LedgerCheckpoint(start, start, ())
            )
            gc.freeze()  # as `dialwatch run` does once started (runner.run_service)
            with Measured() as measured:
                report = await run_cycle(watcher)
    assert not report.errors, report.errors
    assert report.ledger is not None
    return report.ledger.new_items, measured


def report(work: Coroutine[Any, Any, tuple[int, Measured]]) -> None:
    """Run a measured client and print its figures (the last line a client prints)."""
    count, measured = asyncio.run(work)
    print(json.dumps({"items": count, "seconds": measured.seconds, "cpu": measured.cpu_seconds,
                      "rss_growth_kb": measured.rss_growth_kb}))  # fmt: skip


def run_client(
    script: str, mode: str, base_url: str, extra: list[str] | None = None
) -> dict[str, Any]:
    """`script --client MODE BASE_URL [EXTRA...]` in a fresh process, and the figures it
    printed last."""
    out = subprocess.run(
        [sys.executable, script, "--client", mode, base_url, *(extra or [])],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _client(mode: str, base_url: str) -> None:
    report(_bare(base_url) if mode == "bare" else _dialwatch(base_url))


def _run_client(mode: str, base_url: str) -> dict[str, Any]:
    return run_client(__file__, mode, base_url)


def main(sizes: list[int], postgres: bool, latency_ms: float) -> None:
    if postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from tests.postgres import fresh_database, server_url

        admin = server_url()
    print(f"A first check reading N items (median of {RUNS} alternating runs each; "
          f"server latency {latency_ms:g} ms)")  # fmt: skip
    print(f"{'N':>9} {'bare s':>7} {'dialwatch s':>11} {'ratio':>6} {'bare items/s':>12} "
          f"{'dialwatch items/s':>17} {'bare CPU µs/item':>16} {'dialwatch CPU µs/item':>21} "
          f"{'CPU ratio':>9} {'dialwatch RSS +MB':>17}")  # fmt: skip
    for n in sizes:
        ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        server = multiprocessing.Process(target=_serve, args=(n, ports, latency_ms), daemon=True)
        server.start()
        base_url = f"http://127.0.0.1:{ports.get(timeout=600)}"
        bares, ours = [], []
        try:
            for _ in range(RUNS):
                bares.append(_run_client("bare", base_url))
                if postgres:
                    with fresh_database(admin) as url:
                        os.environ["BENCH_STATE"] = url
                        ours.append(_run_client("dialwatch", base_url))
                else:
                    ours.append(_run_client("dialwatch", base_url))
        finally:
            server.terminate()
        assert all(r["items"] == n for r in bares + ours), (bares, ours)

        def median(runs: list[dict[str, Any]], key: str) -> float:
            return statistics.median(r[key] for r in runs)

        bare_s, our_s = median(bares, "seconds"), median(ours, "seconds")
        bare_cpu, our_cpu = median(bares, "cpu") / n * 1e6, median(ours, "cpu") / n * 1e6
        print(
            f"{n:>9,} {bare_s:>7.2f} {our_s:>11.2f} {our_s / bare_s:>5.2f}x {n / bare_s:>12,.0f} "
            f"{n / our_s:>17,.0f} {bare_cpu:>16.1f} {our_cpu:>21.1f} {our_cpu / bare_cpu:>8.2f}x "
            f"{median(ours, 'rss_growth_kb') / 1024:>17.1f}"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        _client(sys.argv[2], sys.argv[3])
    else:
        args = sys.argv[1:]
        latency = take_option(args, "--latency", 0.0)
        sizes = [int(a) for a in args if a != "--postgres"]
        main(sizes or [10_000, 100_000, 1_000_000], "--postgres" in args, latency)
