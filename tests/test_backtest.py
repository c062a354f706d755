"""`dialwatch backtest` against the simulated Dial API: the balance rebuilt to the cent,
the replay doing what the live service did on the same timeline, the command's JSON,
text, HTML and suggestions, and its errors."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from pydantic import SecretStr

from dialwatch.alerting.lifecycle import Decision, Status
from dialwatch.backtest.engine import backtest_account
from dialwatch.backtest.history import BalanceWalk, read_back, rebuild_balance
from dialwatch.backtest.replay import steps
from dialwatch.backtest.suggest import percentile, round_up
from dialwatch.clock import to_micros
from dialwatch.model import ActivityStats
from dialwatch.providers import REGISTRY, open_provider
from dialwatch.rules.schema import Account
from dialwatch.simulators.dial import DialAccount, DialSimulator
from dialwatch.simulators.mifumo import MifumoSimulator
from tests.conftest import API_KEY, MIFUMO_KEY, FleetHarness, MakeFleet
from tests.ledger_items import Entry, dial_history
from tests.processes import dialwatch, service_env
from tests.servers import WebhookReceiver

END = datetime(2026, 11, 28, tzinfo=UTC)
RULES = """\
accounts:
  - {name: dial, provider: dial, api_key: "${DIAL_KEY}", base_url: "${DIAL_URL}"}
channels:
  oncall: "${WEBHOOK}"
defaults:
  notify: [oncall]
rules:
  - {name: wallet-low, kind: balance_below, threshold: "$50.00", repeat_every: 2h}
  - {name: hourly-spend, kind: spend_above, window: 1h, amount: "$12.00", for: 30m}
  - {name: runway, kind: runway_below, runway: 12h, lookback: 6h}
  - {name: big-call, kind: usage_item, min_amount: "$4.00"}
  - {name: top-ups, kind: ledger_event, types: [credit]}
  - {name: spend-spike, kind: spend_anomaly, window: 1h, min_impact: "$4.00", min_percent: 40,
     sensitivity: high}
  - {name: cancelling, kind: subscription_cancelling}
inhibit:
  - {source: {rule: runway}, target: {rule: hourly-spend}}
"""

# The rules of RULES a backtest replays (all but the subscription's).
REPLAYED = {"wallet-low", "hourly-spend", "runway", "big-call", "top-ups", "spend-spike"}


def serve(dial: DialSimulator, entries: list[Entry]) -> None:
    dial.ledger.extend([e.item for e in entries])
    dial.account.balance_cents = entries[-1].balance if entries else dial.account.balance_cents


def account(dial: DialSimulator, name: str = "dial") -> Account:
    return Account(name=name, provider="dial", api_key=SecretStr(API_KEY), base_url=dial.base_url)


async def test_the_balance_after_every_item_is_rebuilt_to_the_cent(dial: DialSimulator) -> None:
    """30 days of wallet and plan usage, top-ups, payments and tie groups, read through
    the service's own pager: the balance at every item's instant equals the truth."""
    start = END - timedelta(days=30)
    entries = dial_history(start, END, 41_200, mean_gap=300)
    serve(dial, entries)
    truth: dict[datetime, int] = {}
    for entry in entries:
        truth[entry.at] = entry.balance  # the last of a tie group wins: after all of it
    effect = REGISTRY["dial"].wallet_effect
    assert effect is not None
    walk = BalanceWalk(
        effect, entries[-1].balance, [to_micros(t) for t in truth], to_micros(start),
        to_micros(END),
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        source = open_provider(account(dial), session, sleep=asyncio.sleep)
        read = await read_back(source.read_activity(start, ActivityStats()), [], walk, start, END)
    assert read.items == len(entries) > 8_000
    assert sum(1 for e in entries if e.item["type"] == "credit") >= 5
    wrong = {t: (walk.at_time(t), cents) for t, cents in truth.items() if walk.at_time(t) != cents}
    assert wrong == {}
    assert walk.low is not None
    assert walk.low[0] == min(e.balance for e in entries)


def live_episodes(
    h: FleetHarness, dial: DialSimulator, entries: list[Entry], checks: list[datetime]
) -> Any:
    """Run the real service over the timeline: at each check, the API shows the items
    so far and the balance of that moment."""

    async def run() -> tuple[dict[str, list[datetime]], Counter[str]]:
        starts: dict[str, list[datetime]] = {}
        sent: Counter[str] = Counter()
        firing: dict[str, bool] = {}
        shown = 0
        for t in checks:
            visible = [e for e in entries[shown:] if e.at <= t]
            shown += len(visible)
            dial.ledger.extend([e.item for e in visible])
            dial.account.balance_cents = entries[shown - 1].balance
            h.clock.current = t
            report = (await h.check())["dial"]
            for o in report.outcomes:
                name = o.spec.name
                if o.decision is Decision.EVENT or (
                    o.state.status is Status.FIRING and not firing.get(name)
                ):
                    starts.setdefault(name, []).append(t)
                if o.decision is not Decision.EVENT:
                    firing[name] = o.state.status is Status.FIRING
                if o.message is not None and o.decision is not Decision.NONE:
                    sent[name] += len(o.spec.targets)
        return starts, sent

    return run()


async def test_the_replay_does_what_the_live_service_did(
    make_fleet: MakeFleet, dial: DialSimulator, webhook: WebhookReceiver
) -> None:
    """Two days, a check every 15 minutes: the service runs on the growing ledger with a
    stepped clock; the backtest replays the finished ledger. Every rule fires at the
    same checks and sends as many notifications."""
    since, until = END - timedelta(days=2), END
    entries = dial_history(since - timedelta(days=1), until, 6_000, seed=3, mean_gap=90)
    history = [e for e in entries if e.at <= since]
    later = [e for e in entries if e.at > since]
    checks = steps(since, until, timedelta(minutes=15))
    h = await make_fleet(RULES)
    dial.ledger.extend([e.item for e in history])
    starts, sent = await live_episodes(h, dial, later, checks)

    rules = h.fleet.rules
    async with aiohttp.ClientSession() as session:
        source = open_provider(account(dial), session, sleep=asyncio.sleep)
        result = await backtest_account(rules, source, since, until, checks, until)
    replayed = {name: [e.start for e in r.episodes] for name, r in result.replay.results.items()}
    assert {n: s for n, s in replayed.items() if s} == starts
    assert {n: r.notifications for n, r in result.replay.results.items() if r.notifications} == sent
    assert set(starts) >= REPLAYED
    assert result.skipped == [
        (
            "cancelling",
            "subscription_cancelling looks at the account's present state (subscription, "
            "numbers, cards, plan quota), which has no history to replay",
        )
    ]


def test_suggestions_round_to_numbers_people_write() -> None:
    assert [round_up(c) for c in (4_317, 999, 12_345, 250_001, 1_234_567)] == [
        4_500, 1_000, 15_000, 300_000, 1_300_000,
    ]  # fmt: skip
    assert percentile(list(range(1, 101)), 0.95) == 95
    assert percentile(list(range(1, 101)), 0.99) == 99
    assert percentile([], 0.99) == 0


async def backtest_cli(
    tmp_path: Path, dial: DialSimulator, *args: str, rules: str | None = None
) -> tuple[int, str, str]:
    path = tmp_path / "rules.yaml"
    text = (rules or RULES).replace("${WEBHOOK}", "json://127.0.0.1:9/unused")
    path.write_text(text.replace("${DIAL_KEY}", API_KEY).replace("${DIAL_URL}", dial.base_url))
    env = {**service_env(dial.base_url, path, tmp_path / "state.db"), "DIALWATCH_INTERVAL": "15m"}
    ran = await dialwatch("backtest", *args, env=env)
    return ran.code, ran.out, ran.err


async def test_the_json_has_the_documented_shape(tmp_path: Path, dial: DialSimulator) -> None:
    since = END - timedelta(days=3)
    entries = dial_history(since - timedelta(days=1), END, 9_000, seed=5, mean_gap=120)
    serve(dial, entries)
    code, out, err = await backtest_cli(
        tmp_path, dial, "--since", "3d", "--until", "2026-11-28T00:00:00Z", "--format", "json"
    )
    assert code == 0, err
    result = json.loads(out)
    assert (result["since"], result["until"]) == ("2026-11-25T00:00:00Z", "2026-11-28T00:00:00Z")
    (acct,) = result["accounts"]
    in_range = [e for e in entries if since <= e.at <= END]
    assert acct["account"] == "dial"
    assert acct["provider"] == "dial"
    assert acct["items"] == len(in_range)
    balance = acct["balance"]
    assert balance["end_cents"] == entries[-1].balance
    assert balance["start_cents"] == [e for e in entries if e.at <= since][-1].balance
    assert balance["min_cents"] == min(e.balance for e in in_range)
    rules = {r["rule"]: r for r in acct["rules"]}
    assert set(rules) == REPLAYED
    for rule in rules.values():
        assert set(rule) >= {"rule", "kind", "fired", "notifications", "firing_seconds", "episodes"}
        assert rule["fired"] == len(rule["episodes"])
        for episode in rule["episodes"]:
            assert set(episode) >= {"start", "end"}
    assert acct["skipped"][0]["rule"] == "cancelling"
    assert "Backtest" not in out  # nothing but the result on a pipe
    assert not (tmp_path / "state.db").exists()  # no state is written

    code, text, err = await backtest_cli(
        tmp_path, dial, "--since", "3d", "--until", "2026-11-28T00:00:00Z", "--format", "text"
    )
    assert code == 0, err
    fired = rules["wallet-low"]["fired"]
    assert f"wallet-low (balance_below): fired {fired} time(s)" in text
    assert "notifications per day:" in text
    assert "    2026-11-25  oncall " in text


async def test_a_provider_whose_history_cannot_give_the_balance_backtests_its_spend(
    tmp_path: Path, dial: DialSimulator, mifumo: MifumoSimulator
) -> None:
    rules = (
        "accounts:\n"
        f'  - {{name: sms, provider: mifumo, api_key: "{MIFUMO_KEY}", '
        f'base_url: "{mifumo.base_url}"}}\n'
        'channels: {oncall: "json://127.0.0.1:9/unused"}\n'
        "defaults: {notify: [oncall]}\n"
        "rules:\n"
        "  - {name: credits-low, kind: balance_below, threshold: 500 credits}\n"
        '  - {name: sms-spend, kind: spend_above, window: 24h, amount: "$100.00"}\n'
    )
    code, out, err = await backtest_cli(
        tmp_path, dial, "--since", "2d", "--format", "json", rules=rules
    )
    assert code == 0, err
    (acct,) = json.loads(out)["accounts"]
    assert acct["balance"] is None
    assert [r["rule"] for r in acct["rules"]] == ["sms-spend"]
    (skipped,) = acct["skipped"]
    assert skipped["rule"] == "credits-low"
    assert skipped["reason"].startswith("mifumo's history does not give the balance")


async def test_an_empty_ledger_and_a_since_before_all_history(
    tmp_path: Path, dial: DialSimulator
) -> None:
    dial.account.balance_cents = 3_000
    code, out, err = await backtest_cli(tmp_path, dial, "--since", "2d", "--format", "json")
    assert code == 0, err
    (acct,) = json.loads(out)["accounts"]
    assert acct["items"] == 0
    assert acct["balance"]["start_cents"] == acct["balance"]["end_cents"] == 3_000
    assert {r["rule"]: r["fired"] for r in acct["rules"]}["wallet-low"] == 1  # from the start

    # History that begins a day after --since: the days before it have no items.
    entries = dial_history(END - timedelta(days=1), END, 30_000, seed=2, mean_gap=600)
    serve(dial, entries)
    code, out, err = await backtest_cli(
        tmp_path, dial, "--since", "5d", "--until", "2026-11-28T00:00:00Z", "--format", "json"
    )
    assert code == 0, err
    (acct,) = json.loads(out)["accounts"]
    assert acct["items"] == len(entries)
    assert acct["balance"]["start_cents"] == 30_000
    assert acct["balance"]["end_cents"] == entries[-1].balance


async def test_an_account_that_fails_is_reported_and_the_others_still_run(
    tmp_path: Path, dial: DialSimulator
) -> None:
    broken = DialSimulator(DialAccount(api_key="sk_other_key_0000000000000000"))
    await broken.start()
    try:
        rules = RULES.replace("{name: dial,", "{name: main,").replace(
            "channels:",
            f'  - {{name: other, provider: dial, api_key: "sk_wrong_key_SECRET_00000000", '
            f'base_url: "{broken.base_url}"}}\n'
            "channels:",
        )
        code, out, err = await backtest_cli(
            tmp_path, dial, "--since", "1d", "--format", "json", rules=rules
        )
        only = await backtest_cli(
            tmp_path, dial, "--since", "1d", "--format", "json", "--account", "main", rules=rules
        )
    finally:
        await broken.stop()
    assert only[0] == 0, only[2]
    assert [a["account"] for a in json.loads(only[1])["accounts"]] == ["main"]
    assert code == 2
    accounts = {a["account"]: a for a in json.loads(out)["accounts"]}
    assert "rules" in accounts["main"]
    assert accounts["other"]["error"].startswith("auth:")
    assert "sk_wrong_key_SECRET" not in out + err


async def test_a_bad_rules_file_fails_as_validate_does(tmp_path: Path, dial: DialSimulator) -> None:
    bad = RULES.replace('threshold: "$50.00"', 'threshhold: "$50.00"')
    code, out, err = await backtest_cli(tmp_path, dial, rules=bad)
    assert code == 2
    assert "rules.yaml:8:" in err
    assert "rules[0].threshhold: unknown key; did you mean 'threshold'?" in err
    assert out == ""


async def test_suggestions_are_learned_from_a_known_history(
    tmp_path: Path, dial: DialSimulator
) -> None:
    """Every hour: one $2.00 call and one 50c call (and a $9.00 call once a day), billed
    to the wallet: the burn is $69/day, an hour spends $2.50 ($11.50 with the big one)."""
    entries, balance = [], 1_000_000
    start = END - timedelta(days=10)
    for hour in range(24 * 10):
        at = start + timedelta(hours=hour, minutes=30)
        for minutes, cents in ((0, 200), (10, 50)) + (((20, 900),) if hour % 24 == 5 else ()):
            stamp = (at + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
            balance -= cents
            entries.append({"type": "usage", "occurredAt": stamp, "amountCents": cents,
                            "totalCents": cents, "fareName": "voice", "number": "+1",
                            "billedQuantity": 1, "attribution": "wallet"})  # fmt: skip
    dial.ledger.extend(entries)
    dial.account.balance_cents = balance
    code, out, err = await backtest_cli(
        tmp_path, dial, "--since", "7d", "--until", "2026-11-28T00:00:00Z", "--suggest",
        "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    suggested = json.loads(out)["suggestions"]
    # 3 days at the 95th percentile day ($69.00 of burn) is $207: $250 written as people do
    assert "threshold: $250.00" in suggested
    assert "amount: $15.00" in suggested  # 1h: p99 of rolling hours is $11.50 -> $15
    assert "min_amount: $9.00" in suggested  # p99.9 of items: the $9.00 call
    assert "# would have fired" in suggested


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
async def test_the_html_report_renders_in_chromium(tmp_path: Path, dial: DialSimulator) -> None:
    from playwright.async_api import async_playwright

    from tests.test_status_page_browser import LAUNCH_ARGS

    entries = dial_history(END - timedelta(days=8), END, 9_000, seed=11, mean_gap=150)
    serve(dial, entries)
    report = tmp_path / "report.html"
    code, _, err = await backtest_cli(
        tmp_path, dial, "--since", "7d", "--until", "2026-11-28T00:00:00Z", "--html",
        str(report), "--format", "json",
    )  # fmt: skip
    assert code == 0, err
    html = report.read_text()
    assert "http://" not in html.replace("http://www.w3.org", "")  # self-contained
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        page = await browser.new_page(viewport={"width": 1000, "height": 1400})
        await page.goto(report.as_uri())
        charts = page.locator("svg")
        assert await charts.count() == 3
        for i in range(3):
            box = await charts.nth(i).bounding_box()
            assert box is not None
            assert box["width"] > 600
        assert await page.locator("text=wallet-low").count() >= 2
        await page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        await browser.close()
    assert (tmp_path / "report.png").stat().st_size > 20_000


async def test_a_fresh_install_gets_its_balance_chart_rebuilt_from_the_ledger(
    make_fleet: MakeFleet, dial: DialSimulator
) -> None:
    """At the first start the chart would hold one reading: the last 7 days are walked
    back from it through the ledger, one reading per 15 minutes, each the true balance."""
    h = await make_fleet(RULES)
    now = h.clock.now()
    entries = dial_history(now - timedelta(days=8), now, 9_000, seed=9, mean_gap=400)
    serve(dial, entries)
    await h.check()
    watcher = h.fleet.watchers["dial"]
    added = await rebuild_balance("dial", "dial", watcher.source, watcher.store, now)
    history = await watcher.store.balance_history("dial", now - timedelta(days=7))
    assert added == len(history) - 1 >= 7 * 96 - 2
    for at, money in history[:-1]:
        truth = [e.balance for e in entries if e.at <= at]
        assert money.cents == truth[-1], at
    # Once the store has its week, a restart reads nothing more.
    assert await rebuild_balance("dial", "dial", watcher.source, watcher.store, now) == 0
