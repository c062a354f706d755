"""Several `dialwatch run` replicas sharing one PostgreSQL database, as real processes
against the simulated Dial API, a real webhook receiver and a real SMTP server:
one replica per account, one sender per alert, nothing lost when a replica dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import aiohttp
import psycopg
import pytest

from dialwatch.simulators.dial import DialSimulator
from tests.conftest import API_KEY
from tests.postgres import PASSWORD_MARK
from tests.processes import dialwatch, wait_until
from tests.servers import SmtpServer, WebhookReceiver, free_port

LOW = "[WARNING] {account} / wallet-low: wallet balance $40.00 is below $50.00"
RESOLVED = "[RESOLVED] {account} / wallet-low: wallet balance $235.00 is back above $50.00"
RULES = """
channels:
  oncall: "{webhook}"
  finance: "{smtp}"
accounts:
{accounts}
rules:
  - name: wallet-low
    kind: balance_below
    threshold: "$50.00"
    notify: [oncall]
  - name: wallet-mail
    kind: balance_below
    threshold: "$45.00"
    notify: [finance]
"""


@dataclass
class Replica:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    port: int
    log_file: TextIO

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        lines = self.log_path.read_text().splitlines()
        events = [json.loads(line) for line in lines if line.startswith("{")]
        return [e for e in events if name is None or e["event"] == name]

    def held(self) -> list[str] | None:
        """The accounts this replica last said it holds (None: not said yet)."""
        held = self.events("lease.held")
        return held[-1]["accounts"] if held else None

    def checks(self, account: str) -> int:
        return sum(1 for e in self.events("check.ok") if e.get("account") == account)


@dataclass
class Cluster:
    env: dict[str, str]
    tmp_path: Path
    replicas: list[Replica] = field(default_factory=list)

    async def start(self, name: str) -> Replica:
        log_path = self.tmp_path / f"{name}.log"
        log_file = log_path.open("w")
        port = free_port()
        env = {**self.env, "DIALWATCH_REPLICA": name, "DIALWATCH_LISTEN": f"127.0.0.1:{port}"}
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "dialwatch", "run", env=env, stdout=log_file, stderr=log_file
        )
        replica = Replica(name, process, log_path, port, log_file)
        self.replicas.append(replica)
        return replica

    async def stop_all(self) -> None:
        for replica in self.replicas:
            if replica.process.returncode is None:
                with _suppress_lookup():
                    replica.process.send_signal(signal.SIGCONT)
                    replica.process.kill()
                await replica.process.wait()
            replica.log_file.close()

    def outputs(self) -> str:
        return "".join(r.log_path.read_text() for r in self.replicas)


def _suppress_lookup() -> Any:
    import contextlib

    return contextlib.suppress(ProcessLookupError)


def rules_text(
    accounts: list[str], webhook: WebhookReceiver, smtp: SmtpServer, dial: DialSimulator
) -> str:
    listed = "\n".join(
        f"  - {{name: {a}, provider: dial, api_key: '{API_KEY}', base_url: '{dial.base_url}'}}"
        for a in accounts
    )
    return RULES.format(webhook=webhook.url, smtp=smtp.url, accounts=listed)


@pytest.fixture
async def make_cluster(
    tmp_path: Path,
    postgres_url: str,
    dial: DialSimulator,
    webhook: WebhookReceiver,
    smtp: SmtpServer,
) -> AsyncIterator[Callable[[list[str]], Cluster]]:
    clusters: list[Cluster] = []

    def make(accounts: list[str]) -> Cluster:
        rules = tmp_path / "rules.yaml"
        rules.write_text(rules_text(accounts, webhook, smtp, dial))
        env = {
            "PATH": os.environ["PATH"],
            "DIALWATCH_RULES": str(rules),
            "DIALWATCH_STATE": postgres_url,
            "DIALWATCH_INTERVAL": "1s",
            "DIALWATCH_LEASE_TTL": "3s",
            "DIALWATCH_LOG_FORMAT": "json",
            "DIALWATCH_LOG_LEVEL": "debug",
        }
        cluster = Cluster(env, tmp_path)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        await cluster.stop_all()


def no_secret_in(text: str) -> None:
    assert PASSWORD_MARK not in text
    assert API_KEY not in text


async def test_replicas_split_the_accounts_and_each_alert_goes_out_once(
    make_cluster: Callable[[list[str]], Cluster], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """Two replicas, two accounts: each replica ends up holding one, and each account's
    alert is sent once, though both replicas deliver from the one outbox."""
    cluster = make_cluster(["east", "west"])
    dial.account.balance_cents = 4000
    one = await cluster.start("r1")
    await wait_until(lambda: one.held() == ["east", "west"])
    two = await cluster.start("r2")
    await wait_until(lambda: len(one.held() or []) == 1 and len(two.held() or []) == 1)
    await wait_until(lambda: len(webhook.titles) == 2)
    for replica in (one, two):
        (account,) = replica.held() or []
        done = replica.checks(account)
        await wait_until(lambda r=replica, a=account, d=done: r.checks(a) >= d + 3)

    assert sorted(webhook.titles) == [LOW.format(account="east"), LOW.format(account="west")]
    assert sorted((one.held() or []) + (two.held() or [])) == ["east", "west"]
    no_secret_in(cluster.outputs())


async def test_kill_9_of_the_holder_hands_its_account_to_the_other_replica(
    make_cluster: Callable[[list[str]], Cluster], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """The holder dies without a word; the other replica takes the account over once the
    lease lapses, knows the alert was sent, and sends its resolution, once."""
    cluster = make_cluster(["dial"])
    dial.account.balance_cents = 4000
    one = await cluster.start("r1")
    await wait_until(lambda: webhook.titles == [LOW.format(account="dial")])
    two = await cluster.start("r2")
    await wait_until(lambda: two.held() == [])
    one.process.kill()
    await one.process.wait()

    dial.account.balance_cents = 23500
    await wait_until(lambda: two.held() == ["dial"])
    await wait_until(lambda: len(webhook.titles) == 2)
    done = two.checks("dial")
    await wait_until(lambda: two.checks("dial") >= done + 2)
    assert webhook.titles == [LOW.format(account="dial"), RESOLVED.format(account="dial")]


async def test_a_paused_holder_that_wakes_after_a_takeover_sends_nothing_stale(
    make_cluster: Callable[[list[str]], Cluster], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """SIGSTOP the holder past its lease; the other replica takes over and alerts; after
    SIGCONT the old holder finds its lease gone: no second alert, no stale write."""
    cluster = make_cluster(["dial"])
    one = await cluster.start("r1")
    await wait_until(lambda: one.held() == ["dial"] and one.checks("dial") >= 1)
    two = await cluster.start("r2")
    await wait_until(lambda: two.held() == [])
    one.process.send_signal(signal.SIGSTOP)
    await wait_until(lambda: two.held() == ["dial"])
    dial.account.balance_cents = 4000
    await wait_until(lambda: webhook.titles == [LOW.format(account="dial")])

    one.process.send_signal(signal.SIGCONT)
    await wait_until(lambda: one.held() == [])
    done = two.checks("dial")
    await wait_until(lambda: two.checks("dial") >= done + 3)
    assert webhook.titles == [LOW.format(account="dial")]
    assert one.process.returncode is None  # it carries on, as a standby


async def test_sigterm_hands_over_without_a_duplicate(
    make_cluster: Callable[[list[str]], Cluster], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """A replica stopped with SIGTERM leaves the cluster and gives its lease back (the
    other takes over at its next round, not after the TTL; benchmarks/replicas.py times
    it), and the firing alert carries on without being announced again."""
    cluster = make_cluster(["dial"])
    dial.account.balance_cents = 4000
    one = await cluster.start("r1")
    await wait_until(lambda: webhook.titles == [LOW.format(account="dial")])
    two = await cluster.start("r2")
    await wait_until(lambda: two.held() == [])
    one.process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(one.process.wait(), 10) == 0
    with psycopg.connect(cluster.env["DIALWATCH_STATE"]) as conn:
        replicas = conn.execute("SELECT name FROM replicas ORDER BY name").fetchall()
        lease = conn.execute("SELECT holder, expires_at FROM leases").fetchone()
    assert replicas == [("r2",)]  # r1 left the cluster on its way out
    assert lease is not None
    assert lease[0] == "r2" or lease[1] == 0  # given back, not left to lapse
    await wait_until(lambda: two.held() == ["dial"])
    await wait_until(lambda: two.checks("dial") >= 3)
    dial.account.balance_cents = 23500
    await wait_until(lambda: len(webhook.titles) == 2)
    assert webhook.titles == [LOW.format(account="dial"), RESOLVED.format(account="dial")]


async def test_mail_pending_when_its_replica_dies_is_sent_once_by_a_survivor(
    make_cluster: Callable[[list[str]], Cluster],
    dial: DialSimulator,
    webhook: WebhookReceiver,
    smtp: SmtpServer,
) -> None:
    """SMTP is down while the holder alerts and then dies: the email waits in the shared
    outbox, and the replica that takes over delivers it once SMTP is back."""
    smtp.stop()
    cluster = make_cluster(["dial"])
    dial.account.balance_cents = 4000
    one = await cluster.start("r1")
    await wait_until(lambda: len(webhook.titles) == 1)
    await wait_until(
        lambda: any(e.get("channel") == "finance" for e in one.events("notify.failed"))
    )
    one.process.kill()
    await one.process.wait()
    smtp.start()

    two = await cluster.start("r2")
    await wait_until(lambda: len(smtp.messages) == 1)
    await wait_until(lambda: two.held() == ["dial"] and two.checks("dial") >= 3)
    assert len(smtp.messages) == 1
    assert webhook.titles == [LOW.format(account="dial")]


async def test_terminated_database_connections_lose_and_repeat_nothing(
    make_cluster: Callable[[list[str]], Cluster],
    dial: DialSimulator,
    webhook: WebhookReceiver,
    postgres_url: str,
) -> None:
    """Every dialwatch connection is killed (pg_terminate_backend) again and again while
    two replicas run: they reconnect, the alert and its resolution go out once each."""
    cluster = make_cluster(["dial"])
    dial.account.balance_cents = 4000
    one = await cluster.start("r1")
    two = await cluster.start("r2")
    await wait_until(lambda: webhook.titles == [LOW.format(account="dial")])

    def checks() -> int:  # by whichever replica holds the account now
        return one.checks("dial") + two.checks("dial")

    for _ in range(3):
        done = checks()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        await wait_until(lambda d=done: checks() >= d + 2)
    dial.account.balance_cents = 23500
    await wait_until(lambda: len(webhook.titles) == 2)
    assert webhook.titles == [LOW.format(account="dial"), RESOLVED.format(account="dial")]
    assert one.process.returncode is None
    assert two.process.returncode is None
    no_secret_in(cluster.outputs())


async def test_replicas_starting_together_on_an_empty_database_both_come_up(
    make_cluster: Callable[[list[str]], Cluster], webhook: WebhookReceiver
) -> None:
    """Two replicas create the schema at the same moment: both start and serve, and
    /metrics and the status page say who holds what, without the database password."""
    cluster = make_cluster(["east", "west"])
    one, two = await asyncio.gather(cluster.start("r1"), cluster.start("r2"))
    await wait_until(
        lambda: bool(one.events("service.started")) and bool(two.events("service.started"))
    )
    await wait_until(lambda: len(one.held() or []) == 1 and len(two.held() or []) == 1)
    async with aiohttp.ClientSession() as session:
        for replica in (one, two):
            async with session.get(f"http://127.0.0.1:{replica.port}/metrics") as response:
                metrics = await response.text()
            (mine,) = replica.held() or []
            other = "west" if mine == "east" else "east"
            assert f'dialwatch_replica_info{{replica="{replica.name}"}} 1.0' in metrics
            assert f'dialwatch_lease_held{{account="{mine}"}} 1.0' in metrics
            assert f'dialwatch_lease_held{{account="{other}"}} 0.0' in metrics
            async with session.get(f"http://127.0.0.1:{replica.port}/") as response:
                page = await response.text()
            assert "<td>r1</td>" in page
            assert "<td>r2</td>" in page
            no_secret_in(metrics + page)
    started = one.events("service.started")[0]
    assert started["state"].startswith("postgresql://")
    assert ":***@" in started["state"]
    no_secret_in(cluster.outputs())


async def test_check_leaves_accounts_a_running_replica_holds_alone(
    make_cluster: Callable[[list[str]], Cluster], dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """`dialwatch check` next to a running cluster checks only what no replica holds, so
    it never sends what the holder sends; `check --dry-run` still shows everything."""
    cluster = make_cluster(["dial"])
    one = await cluster.start("r1")
    await wait_until(lambda: one.held() == ["dial"])
    dial.account.balance_cents = 4000
    real = await dialwatch("check", env=cluster.env)
    assert real.code == 0
    assert "dial: skipped: a running dialwatch checks this account" in real.err
    dry = await dialwatch("check", "--dry-run", env=cluster.env)
    assert dry.code == 1
    assert "dial: FIRING   warning  wallet-low: wallet balance $40.00 is below $50.00" in dry.out
    await wait_until(lambda: webhook.titles == [LOW.format(account="dial")])
    done = one.checks("dial")
    await wait_until(lambda: one.checks("dial") >= done + 2)
    assert webhook.titles == [LOW.format(account="dial")]


async def test_silence_commands_work_against_postgresql(
    make_cluster: Callable[[list[str]], Cluster],
) -> None:
    """silence, silences and unsilence read and write the shared database."""
    cluster = make_cluster(["dial"])
    made = await dialwatch(
        "silence", "wallet-*", "--for", "2h", "--reason", "top-up", env=cluster.env
    )
    assert (made.code, made.out.split(":")[0]) == (0, "silence 1")
    listed = await dialwatch("silences", env=cluster.env)
    assert "   1  wallet-*  on every account  until" in listed.out
    assert listed.out.rstrip().endswith("top-up")
    ended = await dialwatch("unsilence", "1", env=cluster.env)
    assert (ended.code, ended.out) == (0, "silence 1 ended\n")
    assert (await dialwatch("silences", env=cluster.env)).out == "no silences in force\n"
    no_secret_in(made.out + made.err + listed.out + listed.err)


async def test_a_database_outage_is_reported_once_and_alerted_directly(
    make_cluster: Callable[[list[str]], Cluster],
    webhook: WebhookReceiver,
    postgres_url: str,
    postgres_server: str,
) -> None:
    """While the database refuses connections, /readyz answers 503, the log says
    state.unavailable once, and after unhealthy_after the replica alerts straight to the
    channels (the outbox is in the database); when it is back, the alert resolves."""
    cluster = make_cluster(["dial"])
    rules = Path(cluster.env["DIALWATCH_RULES"])
    rules.write_text(rules.read_text() + "defaults:\n  unhealthy_after: 1s\n")
    one = await cluster.start("r1")
    await wait_until(lambda: one.held() == ["dial"] and one.checks("dial") >= 1)
    database = postgres_url.rsplit("/", 1)[1]
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false')
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
            (database,),
        )
    async with aiohttp.ClientSession() as session:

        async def ready() -> int:
            async with session.get(f"http://127.0.0.1:{one.port}/readyz") as response:
                return response.status

        await wait_until(lambda: len(webhook.titles) == 1, timeout=30)
        assert await ready() == 503
        with psycopg.connect(postgres_server, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true')
        await wait_until(lambda: len(webhook.titles) == 2, timeout=30)
        await wait_until(lambda: bool(one.events("state.available")))
        done = one.checks("dial")
        await wait_until(lambda: one.checks("dial") >= done + 2)
        assert await ready() == 200
    assert webhook.titles[0].startswith(
        "[CRITICAL] r1 / dialwatch-unhealthy: the state store has been unreachable for"
    )
    assert webhook.titles[1] == (
        "[RESOLVED] r1 / dialwatch-unhealthy: the state store is reachable again"
    )
    assert len(one.events("state.unavailable")) == 1
    no_secret_in(cluster.outputs() + json.dumps(webhook.received))
