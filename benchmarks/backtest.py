"""How fast `dialwatch backtest` replays 30 days of a busy account, against the transport.

For each N, a simulated Dial API in its own process serves N ledger items over 30 days
(wallet and plan usage, top-ups, tie groups). Two clients read it, each in a fresh
process:

- bare: aiohttp fetching every page and decoding its JSON, nothing else (the anchor);
- backtest: `backtest_account` with seven typical rules and a check every minute
  (43,201 replayed checks): pages validated, the balance rebuilt, every check's spend
  sums gathered, the real lifecycle and routing replayed.

Prints items per second, wall time and peak RSS growth of both, and the ratio.
Run: python benchmarks/backtest.py [N ...]   (default: 20000 205000)
"""

from __future__ import annotations

import asyncio
import multiprocessing
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from ledger_read import KEY, Measured, _bare, report, run_client

END = datetime(2026, 11, 28, tzinfo=UTC)
DAYS = 30
RULES = """
channels:
  oncall: "json://127.0.0.1:9/unused"
  finance: "json://127.0.0.1:9/unused"
routes:
  - match: {severity: critical}
    notify: [oncall, finance]
defaults:
  notify: [oncall]
rules:
  - {name: wallet-low, kind: balance_below, threshold: "$500.00", repeat_every: 4h}
  - {name: wallet-critical, kind: balance_below, threshold: "$100.00", severity: critical}
  - {name: hourly-spend, kind: spend_above, window: 1h, amount: "$80.00", for: 10m}
  - {name: daily-spend, kind: spend_above, window: 24h, amount: "$1500.00"}
  - {name: runway, kind: runway_below, runway: 2d}
  - {name: big-call, kind: usage_item, min_amount: "$8.00"}
  - {name: top-ups, kind: ledger_event, types: [credit]}
"""


def _serve(n: int, ports: multiprocessing.Queue[int]) -> None:
    from dialwatch.simulators.dial import DialAccount, DialSimulator
    from tests.ledger_items import dial_history

    async def main() -> None:
        start = END - timedelta(days=DAYS + 1)
        gap = DAYS * 86_400 * 2 / n  # a tie group holds 2 items on average
        entries = dial_history(start, END, 200_000, seed=1, mean_gap=gap)
        simulator = DialSimulator(DialAccount(api_key=KEY, balance_cents=entries[-1].balance))
        simulator.ledger.extend([e.item for e in entries])
        await simulator.start()
        ports.put(int(simulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


async def _backtest(base_url: str) -> tuple[int, Measured]:
    from dialwatch.backtest.engine import backtest_account
    from dialwatch.backtest.replay import steps
    from dialwatch.providers import open_provider
    from dialwatch.rules.loading import parse_rules
    from dialwatch.rules.schema import Account

    rules = parse_rules(RULES, "bench.yaml", {})
    account = Account(name="dial", provider="dial", api_key=SecretStr(KEY), base_url=base_url)
    since = END - timedelta(days=DAYS)
    checks = steps(since, END, timedelta(minutes=1))
    async with aiohttp.ClientSession() as session:
        source = open_provider(account, session, sleep=asyncio.sleep)
        with Measured() as measured:
            result = await backtest_account(rules, source, since, END, checks, END)
    return result.history.items, measured


def _client(mode: str, base_url: str) -> None:
    report(_bare(base_url) if mode == "bare" else _backtest(base_url))


def main(sizes: list[int]) -> None:
    print(f"{'items':>8} {'bare s':>7} {'backtest s':>11} {'ratio':>6} {'backtest items/s':>17} "
          f"{'bare RSS +MB':>13} {'backtest RSS +MB':>17}")  # fmt: skip
    for n in sizes:
        ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        server = multiprocessing.Process(target=_serve, args=(n, ports), daemon=True)
        server.start()
        base_url = f"http://127.0.0.1:{ports.get(timeout=300)}"
        try:
            bare = run_client(__file__, "bare", base_url)
            ours = run_client(__file__, "backtest", base_url)
        finally:
            server.terminate()
        items = ours["items"]
        print(
            f"{items:>8} {bare['seconds']:>7.2f} {ours['seconds']:>11.2f} "
            f"{ours['seconds'] / bare['seconds']:>5.1f}x {items / ours['seconds']:>17,.0f} "
            f"{bare['rss_growth_kb'] / 1024:>13.1f} {ours['rss_growth_kb'] / 1024:>17.1f}"
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        _client(sys.argv[2], sys.argv[3])
    else:
        main([int(a) for a in sys.argv[1:]] or [20_000, 205_000])
