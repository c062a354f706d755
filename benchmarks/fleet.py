"""What watching many accounts costs one process: CPU per steady-state check against the
bare transport, memory, the start-up spread and the longest event-loop stall.

A simulated Dial API serves in its own process (one key for every account, a ledger of
a few day-old items, so each idle check reads the billing and one activity page). For
each N, in fresh client processes:

- bare: aiohttp doing only what an idle check of N accounts needs on the wire (GET the
  billing and one activity page per account, decode the JSON), in rounds;
- dialwatch rounds: `fleet.check()` of N accounts, as `dialwatch run` builds them (a
  SQLite state file, three rules: balance, 24 h spend, per-item), in rounds after a
  first one that creates the rows: CPU per check, against the bare loop's. The rate
  limit is lifted here (the concurrency cap is not): a round is a burst, which the
  limit would spread 2 ms a request apart, a loop wake-up each (+0.4 ms a check); the
  service below, whose checks are spread, runs with every default;
- with a backlog: the service with 1,000 idle accounts and one more whose first check
  reads a 100,000-item backlog (served by a second simulated API): the longest loop
  stall while that runs, and how long the backlog took;
- dialwatch service: `run_service` itself at the interval, timing start to every
  account's first check and to the end of a fresh install's one-off work (each
  account's balance chart rebuilt from its ledger), then the CPU share of one core over
  the next whole interval, the RSS, and the longest event-loop stall a 10 ms ticker saw
  throughout (the client loads the modules a `dialwatch run` process has);
- bare spread, the service's anchor: the bare transport of every account's check, once
  an interval, started and spread as the service spreads its checks, each account on a
  loop of its own: its share of one core over a whole interval after the first. Spread
  out, each request wakes the loop on its own, which costs about twice what it does in
  a round.

Run: python benchmarks/fleet.py [--interval S] [N ...]   (default: 60 s; 10 1000 10000)
"""

from __future__ import annotations

import asyncio
import gc
import io
import json
import multiprocessing
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import ledger_read
from ledger_read import KEY, run_client, take_option
from pydantic import SecretStr

ROUNDS = 3
BACKLOG = 100_000
ITEMS = [  # a quiet account: its last activity was yesterday
    {"type": "usage", "amountCents": 12, "totalCents": 12, "fareName": "voice.outbound.minute",
     "number": "+14155550123", "billedQuantity": 1, "attribution": "wallet", "callId": f"c{i}",
     "occurredAt": (datetime.now(UTC) - timedelta(days=1, minutes=i)).isoformat()}
    for i in range(20)
]  # fmt: skip


def _serve(ports: multiprocessing.Queue[int]) -> None:
    from dialwatch.simulators.dial import DialAccount, DialSimulator

    async def main() -> None:
        simulator = DialSimulator(DialAccount(api_key=KEY))
        simulator.ledger.extend(ITEMS)
        await simulator.start()
        ports.put(int(simulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(main())


def accounts_yaml(accounts: int, base_url: str) -> str:
    """An accounts section of N Dial accounts on `base_url`, one key for all."""
    return "\n".join(
        f"  - {{name: a{i}, provider: dial, api_key: '{KEY}', base_url: '{base_url}'}}"
        for i in range(accounts)
    )


def _rules(accounts: int, base_url: str, backlog_url: str | None = None) -> str:
    listed = accounts_yaml(accounts, base_url)
    if backlog_url is not None:  # listed first: its check starts at once
        first = (
            f"  - {{name: backlog, provider: dial, api_key: '{KEY}', base_url: '{backlog_url}'}}"
        )
        listed = f"{first}\n{listed}"
    return f"""
channels:
  log: "json://127.0.0.1:9/unused"
defaults:
  notify: [log]
accounts:
{listed}
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
  - name: daily-spend
    kind: spend_above
    window: 24h
    amount: "$500.00"
  - name: expensive-call
    kind: usage_item
    min_amount: "$50.00"
"""


def _rss_mb() -> float:
    """The peak RSS so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_now_mb() -> float:
    """The RSS now (Linux)."""
    status = Path("/proc/self/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1]) / 1024


class Stalls:
    """The longest time the event loop was late to wake a 10 ms ticker."""

    def __init__(self) -> None:
        self.longest = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            self.longest = max(self.longest, loop.time() - due)

    def __enter__(self) -> Stalls:
        self._task = asyncio.create_task(self._tick())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def _bare_check(session: aiohttp.ClientSession, base_url: str) -> None:
    """The transport of one idle check: its two GETs and their JSON decodes."""
    async with session.get(f"{base_url}/api/v1/billing") as r:
        await r.json()
    params = {"limit": "100", "filter": "all"}
    async with session.get(f"{base_url}/api/v1/billing/activity", params=params) as r:
        await r.json()


async def _bare(base_url: str, accounts: int) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {KEY}"}

    async with aiohttp.ClientSession(headers=headers) as session:
        await asyncio.gather(*(_bare_check(session, base_url) for _ in range(accounts)))  # warm
        cpu = time.process_time()
        for _ in range(ROUNDS):
            await asyncio.gather(*(_bare_check(session, base_url) for _ in range(accounts)))
        cpu = time.process_time() - cpu
    return {"cpu_ms": cpu / (ROUNDS * accounts) * 1000, "rss_mb": _rss_mb()}


async def _bare_spread(base_url: str, accounts: int, interval: float) -> dict[str, Any]:
    """The anchor of the service's share of a core: the bare transport of every account's
    check, once an interval, started as the service starts them (the k-th after k x
    interval / N) and each on a loop of its own, over a whole interval after the first."""
    headers = {"Authorization": f"Bearer {KEY}"}
    # runner.START_STEP_S, written out: the anchor's process loads nothing of dialwatch's.
    step_s = min(0.05, interval / accounts)

    async def account(session: aiohttp.ClientSession, k: int, halt: asyncio.Future[None]) -> None:
        # Waiting between checks as the service's loops do (runner._check_until_halted).
        loop = asyncio.get_running_loop()
        await asyncio.wait({halt}, timeout=k * step_s)
        while not halt.done():
            started = loop.time()
            await _bare_check(session, base_url)
            await asyncio.wait({halt}, timeout=max(0.0, interval - (loop.time() - started)))

    connector = aiohttp.TCPConnector(limit=32)  # the service's concurrency cap
    async with aiohttp.ClientSession(headers=headers, connector=connector) as session:
        # A future of its own to halt each loop, as in the service: one shared by all
        # would make each wait's cleanup scan every loop's callback.
        halts = [asyncio.get_running_loop().create_future() for _ in range(accounts)]
        with Stalls():  # the service's run has the same ticker
            loops = [asyncio.create_task(account(session, k, h)) for k, h in enumerate(halts)]
            await asyncio.sleep(interval)
            cpu = time.process_time()
            await asyncio.sleep(interval)
            cpu = time.process_time() - cpu
            for halt in halts:
                halt.set_result(None)
            await asyncio.gather(*loops)
    return {"core_share": cpu / interval, "rss_now_mb": _rss_now_mb()}


async def _rounds(base_url: str, accounts: int) -> dict[str, Any]:
    from dialwatch.fleet import open_fleet

    with tempfile.TemporaryDirectory() as tmp:
        async with open_fleet(*_service(base_url, accounts, tmp, rate=0)) as fleet:
            await fleet.check()  # the first round creates each account's rows
            cpu = time.process_time()
            with Stalls() as stalls:
                for _ in range(ROUNDS):
                    reports = await fleet.check()
                    assert not any(r.errors for r in reports), [r.errors for r in reports][:1]
            cpu = time.process_time() - cpu
    return {"cpu_ms": cpu / (ROUNDS * accounts) * 1000, "rss_mb": _rss_mb(),
            "stall_ms": stalls.longest * 1000}  # fmt: skip


async def _running(base_url: str, accounts: int, interval: float) -> dict[str, Any]:
    import dialwatch.cli  # noqa: F401 (the modules a `dialwatch run` process has loaded)
    from dialwatch.fleet import open_fleet
    from dialwatch.runner import run_service

    with tempfile.TemporaryDirectory() as tmp:
        settings, rules = _service(base_url, accounts, tmp, interval)
        async with open_fleet(settings, rules) as fleet:
            stop = asyncio.Event()
            started = time.perf_counter()
            with Stalls() as stalls:
                service = asyncio.create_task(run_service(fleet, stop))
                watchers = list(fleet.watchers.values())
                while any(w.health.last_check is None for w in watchers):
                    await asyncio.sleep(0.5)
                all_checked = time.perf_counter() - started
                # A fresh install's one-off work (its balance charts) finishes first.
                while fleet.rebuilding:
                    await asyncio.sleep(0.5)
                settled = time.perf_counter() - started
                await asyncio.sleep(interval)
                cpu = time.process_time()
                await asyncio.sleep(interval)
                cpu = time.process_time() - cpu
                rss_now = _rss_now_mb()  # at the end of the measured interval
                stop.set()
                await service
            failed = sum(w.health.last_error is not None for w in watchers)
    return {"all_checked_s": all_checked, "settled_s": settled, "core_share": cpu / interval,
            "rss_mb": _rss_mb(), "rss_now_mb": rss_now, "stall_ms": stalls.longest * 1000,
            "failed": failed}  # fmt: skip


async def _backlog(base_url: str, backlog_url: str, accounts: int) -> dict[str, Any]:
    from dialwatch.fleet import open_fleet
    from dialwatch.runner import run_service

    with tempfile.TemporaryDirectory() as tmp:
        settings, rules = _service(base_url, accounts, tmp, 60.0, backlog_url)
        async with open_fleet(settings, rules) as fleet:
            gc.freeze()  # as the service has it once started
            stop = asyncio.Event()
            backlog = fleet.watchers["backlog"]  # listed first: its check starts at once
            with Stalls() as stalls:
                started = time.perf_counter()
                service = asyncio.create_task(run_service(fleet, stop))
                while backlog.health.last_check is None:
                    await asyncio.sleep(0.05)
                took = time.perf_counter() - started
            stop.set()
            await service
            assert backlog.health.last_error is None, backlog.health.last_error
    return {"backlog_s": took, "stall_ms": stalls.longest * 1000}


def _service(
    base_url: str,
    accounts: int,
    tmp: str,
    interval: float = 60.0,
    backlog_url: str | None = None,
    rate: float | None = None,
) -> tuple[Any, Any]:
    from dialwatch.logs import configure_logging
    from dialwatch.rules.loading import parse_rules
    from dialwatch.settings import Settings

    configure_logging("json", "warning", io.StringIO())  # as a service runs: no debug lines
    settings = Settings(
        state=SecretStr(str(Path(tmp) / "bench.db")), interval=timedelta(seconds=interval)
    )
    if rate is not None:
        settings = settings.model_copy(update={"api_rate": rate})
    return settings, parse_rules(_rules(accounts, base_url, backlog_url), "bench.yaml", {})


def _client(mode: str, base_url: str, accounts: str, interval: str) -> None:
    n = int(accounts)
    work = {
        "bare": lambda: _bare(base_url, n),
        "bare-spread": lambda: _bare_spread(base_url, n, float(interval)),
        "rounds": lambda: _rounds(base_url, n),
        "service": lambda: _running(base_url, n, float(interval)),
        "backlog": lambda: _backlog(base_url, interval, n),  # `interval`: the backlog's URL
    }[mode]
    print(json.dumps(asyncio.run(work())))


def main(sizes: list[int], interval: float) -> None:
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{ports.get(timeout=60)}"
    print(f"Per idle check (billing + one activity page), {ROUNDS} rounds after a first; "
          f"the service at a {interval:g} s interval")  # fmt: skip
    print(
        f"{'accounts':>8} {'bare CPU ms':>11} {'dialwatch CPU ms':>16} {'ratio':>6} "
        f"{'all checked s':>13} {'settled s':>9} {'bare share':>10} {'core share':>10} "
        f"{'ratio':>6} {'RSS MB':>7} {'peak MB':>7} {'stall ms':>8}"
    )
    try:
        for n in sizes:
            extra = [str(n), str(interval)]
            bares, ours = [], []
            for _ in range(2):  # alternating, so a noisy moment hits both sides
                bares.append(run_client(__file__, "bare", base_url, extra)["cpu_ms"])
                ours.append(run_client(__file__, "rounds", base_url, extra)["cpu_ms"])
            service = run_client(__file__, "service", base_url, extra)
            assert service["failed"] == 0, service
            spread = run_client(__file__, "bare-spread", base_url, extra)["core_share"]
            bare, our = statistics.median(bares), statistics.median(ours)
            print(
                f"{n:>8,} {bare:>11.2f} {our:>16.2f} {our / bare:>5.2f}x "
                f"{service['all_checked_s']:>13.1f} {service['settled_s']:>9.1f} "
                f"{spread:>9.1%} {service['core_share']:>9.1%} "
                f"{service['core_share'] / spread:>5.2f}x "
                f"{service['rss_now_mb']:>7.1f} {service['rss_mb']:>7.1f} "
                f"{service['stall_ms']:>8.1f}"
            )
        backlog_ports: multiprocessing.Queue[int] = multiprocessing.Queue()
        backlog_server = multiprocessing.Process(
            target=ledger_read._serve,
            args=(BACKLOG, backlog_ports, 0.0, datetime.now(UTC)),
            daemon=True,
        )
        backlog_server.start()
        try:
            backlog_url = f"http://127.0.0.1:{backlog_ports.get(timeout=300)}"
            run = run_client(__file__, "backlog", base_url, ["1000", backlog_url])
        finally:
            backlog_server.terminate()
        print(f"1,000 idle accounts and one reading a {BACKLOG:,}-item backlog: the backlog "
              f"took {run['backlog_s']:.1f} s, the longest loop stall meanwhile "
              f"{run['stall_ms']:.1f} ms")  # fmt: skip
    finally:
        server.terminate()


if __name__ == "__main__":
    if sys.argv[1:2] == ["--backlog"]:  # that scenario alone
        sys.argv[1:2] = []
        main([], 60.0)
    elif sys.argv[1:2] == ["--client"]:
        _client(*sys.argv[2:6])
    else:
        args = sys.argv[1:]
        interval = take_option(args, "--interval", 60.0)
        main([int(a) for a in args] or [10, 1000, 10_000], interval)
