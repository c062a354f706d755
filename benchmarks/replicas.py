"""High availability, measured with real processes: `dialwatch run` replicas sharing a
PostgreSQL database, the simulated Dial API, and a webhook receiver, all on loopback.

- failover: kill -9 the replica holding the account and time until another replica
  checks it (the first billing request after the kill); DIALWATCH_LEASE_TTL=5s and a
  1 s interval, so the target is at most TTL + 1 interval = 6 s. Median and worst.
- chaos: three replicas, two accounts whose balance falls and recovers every 10 s (each
  fall is an alert, each recovery its resolution), while a random replica is killed with
  kill -9 (and a new one started) every 2 s. Counts the notifications lost and repeated.

Needs a PostgreSQL server: TEST_POSTGRES_URL, or the local one .ci/run starts.
Run: python benchmarks/replicas.py [failover TRIALS] [chaos KILLS]   (default 12, 50)
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dialwatch.simulators.dial import DialAccount, DialSimulator
from tests.postgres import fresh_database, server_url
from tests.servers import WebhookReceiver

KEY = "sk_bench_replicas_000000000000"
LOW, HIGH = 4000, 23500
RULES = """
channels:
  hook: "{webhook}"
accounts:
{accounts}
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    notify: [hook]
"""


class Replica:
    def __init__(self, name: str, env: dict[str, str], logs: Path) -> None:
        self.name, self.env, self.log = name, env, logs / f"{name}.log"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("w") as out:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "dialwatch", "run",
                env={**self.env, "DIALWATCH_REPLICA": self.name}, stdout=out, stderr=out,
            )  # fmt: skip

    def held(self) -> list[str] | None:
        said = [json.loads(line) for line in self.log.read_text().splitlines()
                if '"lease.held"' in line]  # fmt: skip
        return said[-1]["accounts"] if said else None

    async def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        await self.process.wait()


async def until(condition: Any, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def environment(url: str, rules: Path, ttl: str) -> dict[str, str]:
    return {
        "PATH": os.environ["PATH"], "DIALWATCH_RULES": str(rules), "DIALWATCH_STATE": url,
        "DIALWATCH_INTERVAL": "1s", "DIALWATCH_LEASE_TTL": ttl,
        "DIALWATCH_LOG_FORMAT": "json", "DIALWATCH_LISTEN": "off",
    }  # fmt: skip


def write_rules(path: Path, accounts: list[str], dial: DialSimulator, webhook: str) -> None:
    listed = "\n".join(
        f"  - {{name: {a}, provider: dial, api_key: '{KEY}', base_url: '{dial.base_url}'}}"
        for a in accounts
    )
    path.write_text(RULES.format(webhook=webhook, accounts=listed))


async def failover(trials: int, url: str, dial: DialSimulator, hook: WebhookReceiver) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        write_rules(rules, ["dial"], dial, hook.url)
        env = environment(url, rules, "5s")
        replicas = [Replica("r0", env, Path(tmp)), Replica("r1", env, Path(tmp))]
        await replicas[0].start()
        await until(lambda: replicas[0].held() == ["dial"])
        await replicas[1].start()
        await until(lambda: replicas[1].held() == [])
        times = []
        for trial in range(trials):
            holder = next(r for r in replicas if r.held() == ["dial"])
            started = time.monotonic()
            await holder.kill()
            seen = len(dial.requests)  # the holder is dead: what follows is the survivor's
            await until(lambda s=seen: len(dial.requests) > s)
            times.append(time.monotonic() - started)
            replicas.remove(holder)
            spare = Replica(f"r{trial + 2}", env, Path(tmp))
            await spare.start()
            replicas.append(spare)
            await until(lambda r=spare: r.held() == [])
        for replica in replicas:
            await replica.kill()
    print(f"failover after kill -9, TTL 5s, interval 1s, {trials} trials: "
          f"median {statistics.median(times):.2f} s, worst {max(times):.2f} s, "
          f"best {min(times):.2f} s (target <= 6 s)")  # fmt: skip


async def chaos(kills: int, url: str, dial: DialSimulator, hook: WebhookReceiver) -> None:
    accounts = ["east", "west"]
    with tempfile.TemporaryDirectory() as tmp:
        rules = Path(tmp) / "rules.yaml"
        write_rules(rules, accounts, dial, hook.url)
        env = environment(url, rules, "3s")
        replicas = [Replica(f"r{i}", env, Path(tmp)) for i in range(3)]
        for replica in replicas:
            await replica.start()
        rng = random.Random(12)
        toggles = 0

        async def toggle(stop: asyncio.Event) -> None:
            nonlocal toggles
            while not stop.is_set():
                dial.account.balance_cents = LOW if dial.account.balance_cents == HIGH else HIGH
                toggles += 1
                await asyncio.wait([asyncio.ensure_future(stop.wait())], timeout=10)

        dial.account.balance_cents = HIGH
        stop = asyncio.Event()
        flipping = asyncio.create_task(toggle(stop))
        for number in range(kills):
            await asyncio.sleep(2)
            victim = rng.choice(replicas)
            await victim.kill()
            replicas.remove(victim)
            spare = Replica(f"r{number + 3}", env, Path(tmp))
            await spare.start()
            replicas.append(spare)
        stop.set()
        await flipping
        # Let the last transition and any retry settle: nothing new for a while.
        settled, count = time.monotonic(), len(hook.received)
        while time.monotonic() - settled < 12:
            await asyncio.sleep(0.5)
            if len(hook.received) != count:
                settled, count = time.monotonic(), len(hook.received)
        for replica in replicas:
            await replica.kill()
    lost = repeated = 0
    for account in accounts:
        titles = [t for t in (m["title"] for m in hook.received) if f"] {account} /" in t]
        kinds = ["resolved" if t.startswith("[RESOLVED]") else "firing" for t in titles]
        distinct = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
        repeated += len(kinds) - len(distinct)
        lost += toggles - len(distinct)
    print(f"chaos: {kills} kill -9s of random replicas (3 running), {toggles} balance "
          f"changes x {len(accounts)} accounts = {toggles * len(accounts)} notifications due: "
          f"{lost} lost, {repeated} repeated")  # fmt: skip


async def main(args: list[str]) -> None:
    admin = server_url()
    plan = dict(zip(args[::2], map(int, args[1::2]), strict=True)) or {"failover": 12, "chaos": 50}
    dial = DialSimulator(DialAccount(api_key=KEY, balance_cents=HIGH))
    hook = WebhookReceiver()
    await dial.start()
    await hook.start()
    try:
        for name, count in plan.items():
            hook.received.clear()
            with fresh_database(admin) as url:
                await (failover if name == "failover" else chaos)(count, url, dial, hook)
    finally:
        await dial.stop()
        await hook.stop()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
