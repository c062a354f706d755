"""Where an idle check's CPU goes, stage by stage, against the bare transport.

The simulated Dial API of `fleet.py` serves in its own process. In one client process,
N accounts (fleet.py's rules) are checked one at a time, so that each stage's CPU is
its own: the bare loop (the same two GETs and JSON decodes, one check after another),
then `run_cycle` with each stage of `pipeline.cycle` timed (the stages are looked up
by name at each check, so wrapping them here times them as the service runs them).
What a stage calls is inside its figure: the HTTP requests are in `read` and `ledger`.

Run: python benchmarks/check_stages.py [N]   (default: 200 accounts, 10 rounds)
"""

from __future__ import annotations

import asyncio
import collections
import functools
import sys
import tempfile
import time
from typing import Any

import aiohttp
from fleet import _serve, _service
from ledger_read import KEY

ROUNDS = 10
# Each stage of `pipeline.cycle._cycle`, in order, as it is named there.
STAGES = {
    "read": "_read",
    "ledger": "_sync_ledger",
    "evaluate": "evaluate_rules",
    "own alerts": "watcher_alerts",
    "decide": "decide_all",
    "render": "render",
    "item events": "item_events",
    "digests": "digests_due",
    "route": "_route",
    "commit": "_commit",
    "health and metrics": "_record_health",
}


async def _bare(base_url: str, accounts: int) -> float:
    headers = {"Authorization": f"Bearer {KEY}"}
    params = {"limit": "100", "filter": "all"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def check() -> None:
            async with session.get(f"{base_url}/api/v1/billing") as r:
                await r.json()
            async with session.get(f"{base_url}/api/v1/billing/activity", params=params) as r:
                await r.json()

        for _ in range(accounts):
            await check()
        cpu = time.process_time()
        for _ in range(ROUNDS * accounts):
            await check()
        return (time.process_time() - cpu) / (ROUNDS * accounts)


def _timed(spent: collections.Counter[str], name: str, stage: Any) -> Any:
    if asyncio.iscoroutinefunction(stage):

        @functools.wraps(stage)
        async def timed_async(*args: Any, **kwargs: Any) -> Any:
            started = time.process_time()
            try:
                return await stage(*args, **kwargs)
            finally:
                spent[name] += time.process_time() - started

        return timed_async

    @functools.wraps(stage)
    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.process_time()
        try:
            return stage(*args, **kwargs)
        finally:
            spent[name] += time.process_time() - started

    return timed


async def _stages(base_url: str, accounts: int) -> tuple[float, dict[str, float]]:
    from dialwatch.fleet import open_fleet
    from dialwatch.pipeline import cycle

    spent: collections.Counter[str] = collections.Counter()
    with tempfile.TemporaryDirectory() as tmp:
        async with open_fleet(*_service(base_url, accounts, tmp)) as fleet:
            await fleet.check()  # the first round creates each account's rows
            await fleet.check()
            for name, attribute in STAGES.items():
                setattr(cycle, attribute, _timed(spent, name, getattr(cycle, attribute)))
            store: Any = fleet.store  # its `known` timed on this instance only
            store.known = _timed(spent, "state read", store.known)
            watchers = list(fleet.watchers.values())
            cpu = time.process_time()
            for _ in range(ROUNDS):
                for watcher in watchers:
                    await cycle.run_cycle(watcher)
            cpu = time.process_time() - cpu
    checks = ROUNDS * accounts
    return cpu / checks, {name: seconds / checks for name, seconds in spent.items()}


def main(accounts: int) -> None:
    import multiprocessing

    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    try:
        base_url = f"http://127.0.0.1:{ports.get(timeout=60)}"
        bare = asyncio.run(_bare(base_url, accounts))
        total, stages = asyncio.run(_stages(base_url, accounts))
    finally:
        server.terminate()
    print(f"{accounts} idle accounts checked one at a time, {ROUNDS} rounds; CPU per check")
    print(f"{'stage':<20} {'µs':>7} {'share':>6}")
    print(f"{'bare (2 GETs + JSON)':<20} {bare * 1e6:>7.0f} {bare / total:>6.0%}")
    for name in ["state read", *STAGES]:
        print(
            f"{name:<20} {stages.get(name, 0.0) * 1e6:>7.0f} {stages.get(name, 0.0) / total:>6.0%}"
        )
    other = total - sum(stages.values())
    print(f"{'the rest':<20} {other * 1e6:>7.0f} {other / total:>6.0%}")
    print(
        f"{'whole check':<20} {total * 1e6:>7.0f} {1:>6.0%}   ({total / bare:.2f}x the bare loop)"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if sys.argv[1:] else 200)
