"""What a steady-state check costs on each state backend: SQLite and PostgreSQL.

A simulated Dial API serves in its own process; one service watches 1,000 Dial accounts
through it (a balance rule each, nothing firing), as `dialwatch run` builds it. After a
first round (which creates the rows), it times rounds of checks of every account and
reports the client's CPU per check and the checks per second one replica sustains, for
a SQLite file and for a PostgreSQL database on this machine (whose server CPU is not in
the client's figure; the wall-clock rate includes it).

Needs a PostgreSQL server: TEST_POSTGRES_URL, or the local one .ci/run starts.
Run: python benchmarks/check_cost.py [ACCOUNTS] [ROUNDS]   (default 1000 5)
"""

from __future__ import annotations

import asyncio
import io
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fleet import KEY, accounts_yaml
from pydantic import SecretStr

from tests.postgres import fresh_database, server_url


def _serve(ports: multiprocessing.Queue[int]) -> None:
    from dialwatch.simulators.dial import DialAccount, DialSimulator

    async def run() -> None:
        simulator = DialSimulator(DialAccount(api_key=KEY))
        await simulator.start()
        ports.put(int(simulator.base_url.rsplit(":", 1)[1]))
        await asyncio.Event().wait()

    asyncio.run(run())


def _rules(accounts: int, base_url: str) -> str:
    listed = accounts_yaml(accounts, base_url)
    return f"""
channels:
  log: "json://127.0.0.1:9/unused"
accounts:
{listed}
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    notify: [log]
"""


async def _measure(state: str, rules_text: str, rounds: int) -> tuple[float, float]:
    from dialwatch.fleet import open_fleet
    from dialwatch.logs import configure_logging
    from dialwatch.rules.loading import parse_rules
    from dialwatch.settings import Settings

    configure_logging("json", "warning", io.StringIO())  # as a service runs: no debug lines
    rules = parse_rules(rules_text, "bench.yaml", {})
    async with open_fleet(Settings(state=SecretStr(state)), rules) as fleet:
        await fleet.check()  # the first round creates each account's rows
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(rounds):
            reports = await fleet.check()
            assert not any(r.errors for r in reports), [r.errors for r in reports][:1]
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    checks = rounds * len(rules.accounts)
    return cpu / checks * 1000, checks / wall


def main(accounts: int, rounds: int) -> None:
    ports: multiprocessing.Queue[int] = multiprocessing.Queue()
    server = multiprocessing.Process(target=_serve, args=(ports,), daemon=True)
    server.start()
    rules = _rules(accounts, f"http://127.0.0.1:{ports.get(timeout=60)}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            sqlite = asyncio.run(_measure(str(Path(tmp) / "bench.db"), rules, rounds))
        with fresh_database(server_url()) as url:
            postgres = asyncio.run(_measure(url, rules, rounds))
    finally:
        server.terminate()
    print(f"{accounts} accounts, {rounds} rounds of checks after a first one")
    print(f"{'backend':<10} {'client CPU ms/check':>20} {'checks/s':>10}")
    for name, (cpu_ms, rate) in (("SQLite", sqlite), ("PostgreSQL", postgres)):
        print(f"{name:<10} {cpu_ms:>20.2f} {rate:>10,.0f}")
    print(f"PostgreSQL/SQLite: {postgres[0] / sqlite[0]:.2f}x CPU per check, "
          f"{sqlite[1] / postgres[1]:.2f}x the time per check")  # fmt: skip


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    main(*(args + [1000, 5][len(args) :]))
