"""Many accounts of different providers in one service: each on its own schedule, with
the rules its provider supports, the same lifecycle, outbox and channels."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from dialwatch import runner
from dialwatch.cli import main
from dialwatch.rules.loading import load_rules
from dialwatch.runner import run_service
from dialwatch.simulators.cloudflare import CloudflareSimulator
from dialwatch.simulators.dial import DialAccount, DialSimulator
from dialwatch.simulators.hookbridge import HookBridgeSimulator
from dialwatch.simulators.mifumo import MifumoSimulator
from dialwatch.store.sql import TABLES
from dialwatch.web.status_page import render_status_page
from tests.conftest import API_KEY, START, MakeFleet
from tests.processes import wait_until
from tests.servers import WebhookReceiver

SECOND_DIAL_KEY = "sk_live_SECOND0123456789abcdefSECRET"

RULES = """
accounts:
  - {name: dial-prod, provider: dial, api_key: "${DIAL_KEY}", base_url: "${DIAL_URL}"}
  - {name: dial-eu, provider: dial, api_key: "${SECOND_DIAL_KEY}", base_url: "${SECOND_DIAL_URL}"}
  - {name: sms, provider: mifumo, api_key: "${MIFUMO_KEY}", base_url: "${MIFUMO_URL}"}
  - {name: hooks, provider: hookbridge, api_key: "${HOOKBRIDGE_KEY}", base_url: "${HOOKBRIDGE_URL}"}
  - {name: cf, provider: cloudflare, api_key: "${CLOUDFLARE_TOKEN}", base_url: "${CLOUDFLARE_URL}"}
channels:
  oncall: ${WEBHOOK}
  platform: ${PLATFORM_WEBHOOK}
defaults:
  notify: [oncall]
routes:
  - match: {provider: hookbridge}
    notify: [platform]
rules:
  - {name: wallet-low, kind: balance_below, threshold: "$50.00"}
  - {name: credits-low, kind: balance_below, threshold: 500 credits}
  - {name: quota-80, kind: quota_above, percent: 80}
  - {name: daily-spend, kind: spend_above, window: 24h, amount: "$100.00", accounts: [cf, sms]}
  - {name: charges, kind: ledger_event, types: [charge], accounts: [cf]}
"""


@pytest.fixture
async def second_dial() -> AsyncIterator[DialSimulator]:
    simulator = DialSimulator(DialAccount(api_key=SECOND_DIAL_KEY, balance_cents=2500))
    await simulator.start()
    yield simulator
    await simulator.stop()


@pytest.fixture
async def platform() -> AsyncIterator[WebhookReceiver]:
    receiver = WebhookReceiver()
    await receiver.start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def rules_text(second_dial: DialSimulator, platform: WebhookReceiver) -> str:
    return (
        RULES.replace("${SECOND_DIAL_KEY}", SECOND_DIAL_KEY)
        .replace("${SECOND_DIAL_URL}", second_dial.base_url)
        .replace("${PLATFORM_WEBHOOK}", platform.url)
    )


def stamp(hours: float) -> str:
    return (START + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@pytest.fixture
def trouble(
    dial: DialSimulator,
    mifumo: MifumoSimulator,
    hookbridge: HookBridgeSimulator,
    cloudflare: CloudflareSimulator,
) -> None:
    """Something to say on every account: dial-eu ($25) is low, dial-prod ($235) not."""
    mifumo.account.balance = 120
    hookbridge.account.month("2026-11-01", "2026-11-30", 4600, 5000)
    cloudflare.account.charge("c1", 140.00, stamp(-3), description="Argo", zone="example.com")


@pytest.mark.usefixtures("trouble")
async def test_mixed_accounts_alert_through_one_service(
    make_fleet: MakeFleet, rules_text: str, webhook: WebhookReceiver, platform: WebhookReceiver
) -> None:
    """Each account gets the rules its provider supports, alerts carry its name, and
    routes can send by provider."""
    h = await make_fleet(rules_text)

    reports = await h.check()

    assert {name: r.errors for name, r in reports.items()} == {key: [] for key in reports}
    assert sorted(webhook.alert_titles) == [
        "[WARNING] cf / daily-spend: spend $140.00 in the last 24h is above $100.00",
        "[WARNING] dial-eu / wallet-low: wallet balance $25.00 is below $50.00",
        "[WARNING] sms / credits-low: SMS credit balance 120 credits is below 500 credits",
    ]
    assert platform.alert_titles == [
        "[WARNING] hooks / quota-80: 4,600 messages used this month, 92.0% of the 5,000 plan limit"
    ]
    ran = {name: sorted({o.spec.name for o in r.outcomes}) for name, r in reports.items()}
    watcher_alerts = ["dialwatch-api-auth", "dialwatch-unhealthy"]
    assert ran == {
        "dial-prod": sorted(["wallet-low", *watcher_alerts]),
        "dial-eu": sorted(["wallet-low", *watcher_alerts]),
        "sms": sorted(["credits-low", "daily-spend", *watcher_alerts]),
        "hooks": sorted(["quota-80", *watcher_alerts]),
        "cf": sorted(["daily-spend", *watcher_alerts]),  # `charges` is an event: none new
    }

    page = await render_status_page(h.fleet.all(), h.clock.now())
    for name in ("dial-prod", "dial-eu", "sms", "hooks", "cf"):
        assert f'<section class="card" id="account-{name}">' in page
    assert '<span class="big" id="balance-sms">120 credits</span>' in page
    assert 'id="balance-hooks"' not in page  # HookBridge has no balance, only a quota
    assert 'id="spend-chart-cf"' in page
    assert all(
        key not in page for key in h.env.values() if key.startswith(("sk_", "mf_", "hb_", "cf_"))
    )


@pytest.mark.usefixtures("trouble")
async def test_dry_run_over_many_accounts_keeps_nothing(
    make_fleet: MakeFleet, rules_text: str, webhook: WebhookReceiver
) -> None:
    """A dry run checks every account and rolls all of them back together."""
    h = await make_fleet(rules_text)

    reports = await h.fleet.check(dry_run=True)

    assert sum(len(r.notifications) for r in reports) == 4
    assert webhook.received == []
    assert all([await h.fleet.store.alert_states(name) == {} for name in h.fleet.watchers])
    assert await h.fleet.store.pending_count() == 0


@pytest.mark.usefixtures("trouble")
async def test_a_dry_run_waiting_on_a_slow_provider_holds_no_lock_on_the_state(
    make_fleet: MakeFleet,
    rules_text: str,
    cloudflare: CloudflareSimulator,
    mifumo: MifumoSimulator,
    tmp_path: Path,
    log_lines: Any,
) -> None:
    """A dry run reads the other accounts' new ledger items while Cloudflare hangs: a
    running service can still write the state file at once, and afterwards the dry
    run has written nothing."""

    def synced(account: str) -> int:
        return sum(e["event"] == "ledger.synced" and e["account"] == account for e in log_lines())

    h = await make_fleet(rules_text)
    await h.check()
    before = await h.fleet.store.dump(TABLES)  # type: ignore[attr-defined]
    h.clock.advance(minutes=5)
    mifumo.account.record("late", "usage", 7.0, stamp(0.05))
    cloudflare.hold = asyncio.Event()
    dry = asyncio.create_task(h.fleet.check(dry_run=True))
    await cloudflare.holding.wait()
    await wait_until(lambda: synced("sms") == 2)

    service = sqlite3.connect(tmp_path / "state.db", timeout=0)
    service.execute("BEGIN IMMEDIATE")  # 'database is locked' if the dry run held it
    service.execute("ROLLBACK")
    service.close()

    cloudflare.hold.set()
    reports = dict(zip(h.fleet.watchers, await dry, strict=True))
    assert all(r.errors == [] for r in reports.values())
    sms = reports["sms"].ledger
    assert sms is not None
    assert sms.new_items == 1
    assert await h.fleet.store.dump(TABLES) == before  # type: ignore[attr-defined]


@pytest.mark.usefixtures("trouble")
async def test_a_hanging_provider_never_delays_the_others_and_reload_follows_accounts(
    make_fleet: MakeFleet,
    rules_text: str,
    cloudflare: CloudflareSimulator,
    dial: DialSimulator,
    tmp_path: Path,
) -> None:
    """With Cloudflare hanging, the other accounts' loops check on; a reload that drops
    one account stops its loop, and a new one starts checking at once."""
    cloudflare.hold = asyncio.Event()
    h = await make_fleet(rules_text)
    fleet = h.fleet
    stop = asyncio.Event()
    service = asyncio.create_task(run_service(fleet, stop))
    try:
        await wait_until(
            lambda: all(
                w.health.last_success is not None
                for name, w in fleet.watchers.items()
                if name != "cf"
            )
        )
        assert fleet.watchers["cf"].health.last_check is None

        dropped = fleet.watchers["sms"]
        dial_requests = len(dial.requests)
        path = tmp_path / "rules.yaml"
        text = path.read_text().replace("accounts: [cf, sms]", "accounts: [cf, texts]")
        path.write_text(text.replace("{name: sms,", "{name: texts,"))
        fleet.apply(load_rules(path, h.env))  # as SIGHUP does
        assert "sms" not in fleet.watchers
        checks = dropped.health.last_check
        await wait_until(lambda: fleet.watchers["texts"].health.last_success is not None)
        cloudflare.hold.set()
        await wait_until(lambda: fleet.watchers["cf"].health.last_success is not None)
        assert dropped.health.last_check == checks  # its loop stopped
        assert len(dial.requests) == dial_requests  # unchanged accounts keep their loop
    finally:
        cloudflare.hold.set()
        stop.set()
        await service


def test_validate_lists_each_account_with_the_rules_it_runs(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    log_lines: object,  # puts logging back after main() pointed it at captured stderr
) -> None:
    """`dialwatch validate` says which rules run on which account."""
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    for name in ("DIAL_KEY", "SECOND_DIAL_KEY", "MIFUMO_KEY", "HOOKBRIDGE_KEY",
                 "CLOUDFLARE_TOKEN", "WEBHOOK", "PLATFORM_WEBHOOK"):  # fmt: skip
        monkeypatch.setenv(name, "json://127.0.0.1:9/x" if "WEBHOOK" in name else API_KEY)
    for name in ("DIAL_URL", "SECOND_DIAL_URL", "MIFUMO_URL", "HOOKBRIDGE_URL", "CLOUDFLARE_URL"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")

    assert main(["validate", str(path)]) == 0

    out = capsys.readouterr().out
    assert out.splitlines()[1:] == [
        "  dial-prod (dial): wallet-low",
        "  dial-eu (dial): wallet-low",
        "  sms (mifumo): credits-low, daily-spend",
        "  hooks (hookbridge): quota-80",
        "  cf (cloudflare): daily-spend, charges",
    ]
    assert API_KEY not in out


async def test_the_first_checks_of_many_accounts_are_spread_out(
    make_fleet: MakeFleet, rules_text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start the accounts' first checks follow one another START_STEP_S apart (or
    the interval shared among them, if less), never all at once: the i-th to start
    starts no sooner than i steps after the service did."""
    started: dict[str, float] = {}
    check = runner.run_cycle

    async def recorded(watcher: Any) -> Any:
        started.setdefault(watcher.account, asyncio.get_running_loop().time())
        return await check(watcher)

    monkeypatch.setattr(runner, "run_cycle", recorded)
    h = await make_fleet(rules_text)
    stop = asyncio.Event()
    began = asyncio.get_running_loop().time()
    service = asyncio.create_task(run_service(h.fleet, stop))
    try:
        await wait_until(lambda: len(started) == len(h.fleet.watchers))
    finally:
        stop.set()
        await service
    assert len(started) >= 4
    for i, at in enumerate(sorted(started.values())):
        assert at - began >= i * runner.START_STEP_S, (i, at - began)
