"""What a routine check costs as an account gets busier: 3,000, 30,000 and 300,000
ledger items a day, with the same nine rules. The target is flat.

A simulated Dial API in its own process serves a day of items at the rate (then more
as time passes: it serves nothing dated after the client's clock, which the client
writes to a file before each check), one account, one check a minute. The client runs the real pipeline (`run_cycle`, a SQLite state file),
with its clock moved one minute per check: after the first check (the day's backlog)
and two more, it times 20 checks and prints the client CPU per check, what each read,
and the ratio to the quietest account's.

Run: python benchmarks/busy_account.py [ITEMS_PER_DAY ...]   (default 3000 30000 300000)
"""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from ledger_read import KEY, run_client, usage_item
from pydantic import SecretStr

START = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
CHECKS, WARM = 20, 2
RULES = """
channels:
  log: "json://127.0.0.1:9/unused"
defaults:
  notify: [log]
rules:
  - {name: wallet-low, kind: balance_below, threshold: "$50.00"}
  - {name: card-expiring, kind: payment_method_expiring}
  - {name: subscription, kind: subscription_cancelling}
  - {name: daily-spend, kind: spend_above, window: 24h, amount: "$100000.00"}
  - {name: hourly-spend, kind: spend_above, window: 1h, amount: "$100000.00"}
  - {name: runway, kind: runway_below, runway: 1d, lookback: 24h}
  - {name: big-call, kind: usage_item, min_amount: "$50.00"}
  - {name: money-in, kind: ledger_event, types: [credit, payment]}
  - {name: spend-spike, kind: spend_anomaly, window: 1h}
"""


def _items(per_day: int, days: float) -> list[dict[str, Any]]:
    """Usage items at `per_day`, from a day before START to `days` after it begins."""
    step = 86_400 / per_day
    count = int(per_day * (1 + days))
    start = START - timedelta(days=1)
    return [
        usage_item(i, start + timedelta(seconds=i * step), cents=1 + i % 40) for i in range(count)
    ]


def _serve(per_day: int, clock: Path, ports: multiprocessing.Queue[int]) -> None:
    import bisect

    from dialwatch.simulators.dial import DialAccount, DialSimulator, Ledger

    class Served(Ledger):
        """The ledger as of the shared clock: nothing from after it."""

        def page(self, filter_name: str, limit: int, starting_after: str | None) -> Any:
            keys = self._keys[filter_name]
            start = bisect.bisect_left(keys, -float(clock.read_text()))
            if starting_after is not None:
                start = max(start, bisect.bisect_right(keys, -_ts(starting_after)))
            data = self._items[filter_name][start : start + limit]
            return {"data": data, "hasMore": start + limit < len(keys)}

    def _ts(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    async def main() -> None:
        simulator = DialSimulator(DialAccount(api_key=KEY, balance_cents=10**9))
        simulator.ledger = Served()
        simulator.ledger.extend(_items(per_day, days=(CHECKS + WARM + 2) / 1440))
        await simulator.start()
        ports.put(int(simulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


async def _checks(base_url: str, clock: Path) -> dict[str, Any]:
    from dialwatch.fleet import open_fleet
    from dialwatch.logs import configure_logging
    from dialwatch.pipeline.cycle import run_cycle
    from dialwatch.rules.loading import parse_rules
    from dialwatch.settings import Settings

    class Clock:
        now_at = START

        def now(self) -> datetime:
            return self.now_at

    configure_logging("json", "warning", io.StringIO())
    rules = parse_rules(RULES, "bench.yaml", {})
    ticks, cpu_ms, new = Clock(), [], []
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            api_key=SecretStr(KEY), base_url=base_url, state=SecretStr(f"{tmp}/bench.db")
        )
        async with open_fleet(settings, rules, clock=ticks) as fleet:
            watcher = fleet.watchers["dial"]
            for n in range(1 + WARM + CHECKS):
                ticks.now_at = START + timedelta(minutes=n)
                clock.write_text(str(ticks.now_at.timestamp()))
                started = time.process_time()
                report = await run_cycle(watcher)
                assert not report.errors, report.errors
                assert report.ledger is not None
                if n > WARM:
                    cpu_ms.append((time.process_time() - started) * 1000)
                    new.append(report.ledger.new_items)
    return {"cpu_ms": statistics.median(cpu_ms), "new_items": statistics.median(new)}


def main(rates: list[int]) -> None:
    print(f"Steady-state check of one Dial account, 9 rules, one check a minute "
          f"(median of {CHECKS} checks)")  # fmt: skip
    print(f"{'items/day':>10} {'new items/check':>15} {'CPU ms/check':>12} {'vs quietest':>11}")
    first: float | None = None
    for per_day in rates:
        clock = Path(tempfile.mkstemp(suffix=".clock")[1])
        clock.write_text(str(START.timestamp()))
        ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        server = multiprocessing.Process(target=_serve, args=(per_day, clock, ports), daemon=True)
        server.start()
        try:
            base_url = f"http://127.0.0.1:{ports.get(timeout=300)}"
            result = run_client(__file__, "checks", base_url, [str(clock)])
        finally:
            server.terminate()
            clock.unlink()
        first = first or result["cpu_ms"]
        print(f"{per_day:>10,} {result['new_items']:>15.0f} {result['cpu_ms']:>12.2f} "
              f"{result['cpu_ms'] / first:>10.2f}x")  # fmt: skip
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--client"]:
        print(json.dumps(asyncio.run(_checks(sys.argv[3], Path(sys.argv[4])))))
    else:
        main([int(a) for a in sys.argv[1:]] or [3_000, 30_000, 300_000])
